"""bench_chunking.py: chunking speed per language against Python's, and how many chunks of a
real tree start at a definition boundary.

Speed: each language's sample file from the tests (tests/test_languages.py, tests/test_chunking.py)
repeated to about `--lines` lines, chunked `--rounds` times with the model's own token counter
(the production path); the figure is source lines per second, best round, and its ratio to
Python's on the same-sized input. Target: every language at least half Python's speed.

Boundaries (`--tree DIR --language NAME`): every file of that language under DIR is chunked;
a chunk starts at a definition boundary when its first line is the first line of a definition
the grammar found (its leading comments and annotations included) or the first line right
after one ends. Target: at least 90 % of chunks.

    .venv/bin/python scripts/bench_chunking.py                      # speed only
    .venv/bin/python scripts/bench_chunking.py --tree ~/src/okhttp --language kotlin
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_chunking  # the samples written for the tests
import test_languages
from benchenv import cpu_model

import coarch
from coarch.chunking import Chunker, _Def
from coarch.languages import language_for


def samples() -> dict[str, tuple[str, str]]:
    """language -> (path, source) for every language with a test sample."""
    out = {"python": ("client.py", test_chunking.PYTHON)}
    out.update({lang: (path, text) for lang, (path, text, _) in test_chunking.SAMPLES.items()})
    out.update({lang: (path, text) for lang, (path, text, _) in test_languages.SAMPLES.items()})
    return out


def lines_per_second(chunker: Chunker, path: str, text: str, lines: int, rounds: int
                     ) -> tuple[float, int]:
    """Best-round speed in source lines per second, and the chunk count, for `text` repeated
    to about `lines` lines."""
    big = "\n".join([text.rstrip("\n")] * max(1, lines // text.count("\n")))
    language = language_for(path)
    best, chunks = float("inf"), 0
    for _ in range(rounds):
        start = time.perf_counter()
        chunks = len(chunker.chunk(path, big, language))
        best = min(best, time.perf_counter() - start)
    return big.count("\n") / best, chunks


def boundary_share(chunker: Chunker, tree: Path, language: str) -> dict[str, Any]:
    """Chunks of `language` files under `tree` that start at a definition boundary."""
    files = sorted(p for p in tree.rglob("*") if p.is_file()
                   and language_for(p.relative_to(tree).as_posix()) == language)
    total = at_definition = after_definition = 0
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(tree).as_posix()
        starts, ends = definition_rows(chunker, language, text)
        for chunk in chunker.chunk(rel, text, language):
            total += 1
            row = chunk.start_line - 1
            if row in starts:
                at_definition += 1
            elif row == 0 or _after_definition(text, row, ends):
                after_definition += 1
    share = (at_definition + after_definition) / total if total else 0.0
    return {"language": language, "files": len(files), "chunks": total,
            "at_definition_start": at_definition, "after_definition_end": after_definition,
            "share": round(share, 4), "target": 0.9, "met": share >= 0.9}


def definition_rows(chunker: Chunker, language: str, text: str) -> tuple[set[int], set[int]]:
    """First and last rows (0-based) of every definition the grammar finds, at any depth."""
    grammar = chunker._grammar(language)
    if grammar is None:
        return set(), set()
    starts: set[int] = set()
    ends: set[int] = set()
    stack: list[_Def] = list(grammar.definitions(text.encode("utf-8", errors="surrogatepass")))
    while stack:
        d = stack.pop()
        starts.add(d.start)
        ends.add(d.end)
        stack.extend(d.children)
    return starts, ends


def _after_definition(text: str, row: int, ends: set[int]) -> bool:
    """Whether only blank lines separate `row` from the end of a definition above it."""
    lines = text.split("\n")
    k = row - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    return k in ends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=4000, help="lines per language (4000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, best kept (3)")
    parser.add_argument("--tree", type=Path, help="a source tree for the boundary figure")
    parser.add_argument("--language", default="kotlin", help="its language (kotlin)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench_chunking.json")
    args = parser.parse_args(argv)

    embedder = coarch.Embedder()
    chunker = Chunker(embedder.count_tokens, embedder.max_seq_length)
    speed: dict[str, dict[str, float]] = {}
    for language, (path, text) in sorted(samples().items()):
        rate, chunks = lines_per_second(chunker, path, text, args.lines, args.rounds)
        speed[language] = {"lines_per_s": round(rate), "chunks": chunks}
    python_rate = speed["python"]["lines_per_s"]
    print(f"{'language':12} {'lines/s':>9} {'x python':>9} {'chunks':>7}")
    for language, row in sorted(speed.items(), key=lambda kv: -kv[1]["lines_per_s"]):
        row["ratio_to_python"] = round(row["lines_per_s"] / python_rate, 2)
        print(f"{language:12} {row['lines_per_s']:9.0f} {row['ratio_to_python']:9.2f}"
              f" {row['chunks']:7.0f}")
    slowest = min(speed.items(), key=lambda kv: kv[1]["ratio_to_python"])
    print(f"slowest: {slowest[0]} at {slowest[1]['ratio_to_python']:.2f}x Python"
          " (target: at least 0.5x)")
    result: dict[str, Any] = {
        "environment": {"cpu_model": cpu_model(), "python": sys.version.split()[0],
                        "coarch": coarch.__version__, "lines": args.lines, "rounds": args.rounds},
        "speed": speed, "slowest": slowest[0], "target_ratio": 0.5,
        "speed_met": slowest[1]["ratio_to_python"] >= 0.5,
    }
    if args.tree is not None:
        boundary = boundary_share(chunker, args.tree, args.language)
        result["boundaries"] = {"tree": str(args.tree), **boundary}
        print(f"{args.language} tree {args.tree}: {boundary['files']} files, {boundary['chunks']}"
              f" chunks, {boundary['share']:.1%} start at a definition boundary"
              f" ({boundary['at_definition_start']} at a start, {boundary['after_definition_end']}"
              " right after an end or at the top of a file; target 90 %)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

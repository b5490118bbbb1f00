"""bench_chunking.py: chunking speed per language against Python's, and how many chunks of a
real tree start at a definition boundary.

Speed: each language's sample file from the tests (tests/test_languages.py, tests/test_chunking.py)
repeated to about `--lines` lines as one file that still parses (the lines a language allows
once per file, like Haskell's `module` line or Lua's final `return M`, kept once: a repetition
that does not parse measures the grammar's error recovery), chunked `--rounds` times with the
model's own token counter, all lines of a file counted in one call, and,
as the reference in the same rounds, with one tokenizer call per line. Rounds go round-robin
over the languages and time the process's CPU, so that a load spike on a shared machine hits no
language alone. The figures: source lines per second, best round, and its ratio to Python's on
the same-sized input; the ratio to the per-line reference (which must give the same chunks);
the same comparison for the indexer's chunker, which counts the model's form of the text;
and the grammar's parse alone, as a share of Python's whole chunking time (over 2x, the grammar
alone misses the target: not the chunker's to fix). Target: every language at least half
Python's speed.

Boundaries (`--tree DIR --language NAME`): every file of that language under DIR is chunked.
A chunk starts at a definition boundary when its first line (0-based row r; chunks never start
or end on a blank line) is, by the grammar's parse of the whole file:
  file_start        the file's first non-blank line;
  definition_start  the first line of a definition, at any depth, its attached comments and
                    annotations included (the rows the chunker gives a definition);
  definition_head   the first line of the definition itself, below those comments (a
                    definition too big for one chunk may be cut there);
  after_definition  the first non-blank line after a definition ends (code between two
                    definitions, e.g. properties after a method);
  statement_start   inside a region that holds no definition at r and is too big for one chunk
                    (a definition without sub-definitions, or the code between definitions
                    such as a long run of imports), the first line of one of the region's
                    statements: a named node that begins its line, child of the shallowest
                    node of the region with two or more such children (a function's block, a
                    class's body, the file's root); or of a statement of such a statement when
                    that one alone is over one chunk (at most two levels down).
"strict" counts the first four, "share" all five. What misses both is a cut inside a statement
(or in a file the grammar cannot parse). Target: a share of at least 90 %; `--examples N`
prints N missed chunks with the lines around their start.

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
from coarch.chunk_syntax import Definition, statements
from coarch.chunking import Chunker
from coarch.languages import language_for

_KINDS = (
    "file_start",
    "definition_start",
    "definition_head",
    "after_definition",
    "statement_start",
)


def samples() -> dict[str, tuple[str, str]]:
    """language -> (path, source) for every language with a test sample."""
    out = {"python": ("client.py", test_chunking.PYTHON)}
    out.update({lang: (path, text) for lang, (path, text, _) in test_chunking.SAMPLES.items()})
    out.update({lang: (path, text) for lang, (path, text, _) in test_languages.SAMPLES.items()})
    return out


# Lines a language allows once per file: kept in the first copy (a prefix) or the last (a
# suffix) when a sample is repeated.
_ONCE_FIRST = {"haskell": ("module ",), "php": ("<?php", "namespace ")}
_ONCE_LAST = {"lua": ("return M",)}


def repeated(text: str, language: str, lines: int) -> str:
    """`text` repeated to about `lines` lines, its once-per-file lines kept once."""
    rows = text.rstrip("\n").split("\n")
    head: list[str] = []
    while rows and rows[0].startswith(_ONCE_FIRST.get(language, ("\0",))):
        head.append(rows.pop(0))
    tail: list[str] = []
    while rows and rows[-1].startswith(_ONCE_LAST.get(language, ("\0",))):
        tail.insert(0, rows.pop())
    body = "\n".join(rows)
    return "\n".join([*head, *[body] * max(1, lines // max(1, len(rows))), *tail])


def speed_rounds(
    chunker: Chunker, reference: Chunker, inputs: dict[str, tuple[str, str]], rounds: int
) -> dict[str, dict[str, float]]:
    """Best CPU seconds per language of chunking, with `reference` too (it must give the same
    chunks), and of parsing alone, round-robin; with the chunk count and whether the input
    parses without errors."""
    out = {
        language: {"chunk_s": float("inf"), "reference_s": float("inf"), "parse_s": float("inf")}
        for language in inputs
    }
    for _ in range(rounds):
        for language, (path, text) in inputs.items():
            row = out[language]
            start = time.process_time()
            chunks = chunker.chunk(path, text, language)
            row["chunk_s"] = min(row["chunk_s"], time.process_time() - start)
            row["chunks"] = len(chunks)
            start = time.process_time()
            same = reference.chunk(path, text, language) == chunks
            row["reference_s"] = min(row["reference_s"], time.process_time() - start)
            if not same:
                raise SystemExit(f"{language}: the per-line reference gives other chunks")
            grammar = chunker._grammar(language)
            if grammar is not None:
                source = text.encode("utf-8")
                start = time.process_time()
                tree = grammar.parser.parse(source)
                row["parse_s"] = min(row["parse_s"], time.process_time() - start)
                row["parses_cleanly"] = not tree.root_node.has_error
    return out


def boundary_share(
    chunker: Chunker, tree: Path, language: str, examples: int = 0
) -> dict[str, Any]:
    """Chunks of `language` files under `tree` by the kind of boundary they start at (see the
    module's docstring), with the chunk count and mean size."""
    files = sorted(
        p
        for p in tree.rglob("*")
        if p.is_file() and language_for(p.relative_to(tree).as_posix()) == language
    )
    kinds = dict.fromkeys(_KINDS, 0)
    total = tokens = lines = source_lines = 0
    seconds = 0.0
    missed: list[str] = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(tree).as_posix()
        rows = text.split("\n")
        boundaries = Boundaries(chunker, language, text)
        start = time.process_time()
        chunks = chunker.chunk(rel, text, language)
        seconds += time.process_time() - start
        source_lines += len(rows)
        for chunk in chunks:
            total += 1
            tokens += chunk.tokens
            lines += chunk.end_line - chunk.start_line + 1
            kind = boundaries.kind(chunk.start_line - 1)
            if kind is not None:
                kinds[kind] += 1
            elif len(missed) < examples:
                row = chunk.start_line - 1
                context = [f"   | {line}" for line in rows[max(0, row - 3) : row]]
                context += [f" > | {line}" for line in rows[row : row + 3]]
                missed.append(
                    f"{rel}:{chunk.start_line}-{chunk.end_line} {chunk.symbol}\n"
                    + "\n".join(line[:100] for line in context)
                )
    hits = sum(kinds.values())
    strict = hits - kinds["statement_start"]
    return {
        "language": language,
        "files": len(files),
        "chunks": total,
        "mean_tokens": round(tokens / total, 1) if total else 0.0,
        "mean_lines": round(lines / total, 1) if total else 0.0,
        **kinds,
        "missed": total - hits,
        "strict_share": round(strict / total, 4) if total else 0.0,
        "share": round(hits / total, 4) if total else 0.0,
        "target": 0.9,
        "met": total > 0 and hits / total >= 0.9,
        "lines_per_s": round(source_lines / seconds) if seconds else 0,
        "examples": missed,
    }


class Boundaries:
    """The rows of one file where a chunk may start at a definition boundary, by kind."""

    def __init__(self, chunker: Chunker, language: str, text: str) -> None:
        self.lines = text.split("\n")
        self.first = next((i for i, line in enumerate(self.lines) if line.strip()), 0)
        self.starts: set[int] = set()
        self.heads: set[int] = set()
        self.ends: set[int] = set()
        self.defs: list[Definition] = []
        self.root: Any = None
        self.chunker = chunker
        grammar = chunker._grammar(language)
        if grammar is None:
            return
        self.root, self.defs = grammar.definitions(text.encode("utf-8", errors="surrogatepass"))
        stack = list(self.defs)
        while stack:
            d = stack.pop()
            self.starts.add(d.start)
            self.heads.add(d.head)
            self.ends.add(d.end)
            stack.extend(d.children)

    def kind(self, row: int) -> str | None:
        """The kind of boundary `row` is (in the order of _KINDS), or None."""
        if row <= self.first:
            return "file_start"
        if row in self.starts:
            return "definition_start"
        if row in self.heads:
            return "definition_head"
        k = row - 1
        while k >= 0 and not self.lines[k].strip():
            k -= 1
        if k in self.ends:
            return "after_definition"
        if self.root is not None and self._is_statement(row):
            return "statement_start"
        return None

    def _is_statement(self, row: int) -> bool:
        """Whether a statement of the innermost region holding `row` begins there, or one of a
        statement over one chunk's size inside it (two levels at most)."""
        region, defs = self.root, self.defs
        while True:  # the innermost definition holding the row
            inner = next((d for d in defs if d.start <= row <= d.end), None)
            if inner is None:
                break
            region, defs = inner.node, inner.children
        level = [region]
        for _ in range(3):
            below = []
            for node in level:
                for child in statements(node, self.lines):
                    if child.start_point.row == row:
                        return True
                    if child.start_point.row < row <= child.end_point.row and self._over_one_chunk(
                        child
                    ):
                        below.append(child)
            level = below
        return False

    def _over_one_chunk(self, node: Any) -> bool:
        text = "\n".join(self.lines[node.start_point.row : node.end_point.row + 1])
        return self.chunker.count_tokens(text) > self.chunker.max_tokens


def speed_inputs(lines: int) -> dict[str, tuple[str, str]]:
    """language -> (path, its sample repeated to about `lines` lines)."""
    return {
        language: (path, repeated(text, language, lines))
        for language, (path, text) in sorted(samples().items())
    }


def indexer_counting(embedder: coarch.Embedder, lines: int, rounds: int) -> dict[str, Any]:
    """The indexer's chunker (tokens of the model's form of the text, identifiers split; a
    file's lines counted in one call: coarch.pipeline.new_chunker) against the same counting
    one line at a time: best CPU seconds of a round over every language's input."""
    from coarch.identifiers import model_text
    from coarch.pipeline import new_chunker

    def count_model_tokens(text: str) -> int:
        return embedder.count_tokens(model_text(text))

    chunkers = {
        "batched": new_chunker(embedder),
        "per_line": Chunker(count_model_tokens, embedder.max_seq_length),
    }
    inputs = speed_inputs(lines)
    best = dict.fromkeys(chunkers, float("inf"))
    for _ in range(rounds):
        for name, chunker in chunkers.items():
            start = time.process_time()
            for language, (path, text) in inputs.items():
                chunker.chunk(path, text, language)
            best[name] = min(best[name], time.process_time() - start)
    print(
        f"indexer's chunker, all languages: {best['batched']:.3f} s CPU, per-line counting"
        f" {best['per_line']:.3f} s ({best['per_line'] / best['batched']:.2f}x)"
    )
    return {
        "batched_s": round(best["batched"], 4),
        "per_line_s": round(best["per_line"], 4),
        "ratio": round(best["per_line"] / best["batched"], 2),
    }


def speed_figures(chunker: Chunker, reference: Chunker, lines: int, rounds: int) -> dict[str, Any]:
    """Per language: lines per second, the ratio to Python's and to the per-line reference,
    the parse's share of Python's time; printed as a table."""
    inputs = speed_inputs(lines)
    timings = speed_rounds(chunker, reference, inputs, rounds)
    python_s = timings["python"]["chunk_s"]
    speed: dict[str, dict[str, Any]] = {}
    for language, row in timings.items():
        count = inputs[language][1].count("\n") + 1
        speed[language] = {
            "lines": count,
            "lines_per_s": round(count / row["chunk_s"]),
            "ratio_to_python": round(python_s / row["chunk_s"], 2),
            "chunks": row["chunks"],
            "per_line_lines_per_s": round(count / row["reference_s"]),
            "ratio_to_per_line": round(row["reference_s"] / row["chunk_s"], 2),
        }
        if row["parse_s"] != float("inf"):
            speed[language]["parse_ms"] = round(row["parse_s"] * 1e3, 1)
            speed[language]["parse_over_python_chunking"] = round(row["parse_s"] / python_s, 2)
            speed[language]["parses_cleanly"] = row["parses_cleanly"]
    print(
        f"{'language':12} {'lines/s':>9} {'x python':>9} {'x 1/line':>9} {'chunks':>7}"
        f" {'parse ms':>9} {'parse/py':>9}"
    )
    for language, row in sorted(speed.items(), key=lambda kv: -kv[1]["lines_per_s"]):
        parse = (
            f" {row['parse_ms']:9.1f} {row['parse_over_python_chunking']:9.2f}"
            + ("" if row["parses_cleanly"] else "  (parse errors)")
            if "parse_ms" in row
            else ""
        )
        print(
            f"{language:12} {row['lines_per_s']:9.0f} {row['ratio_to_python']:9.2f}"
            f" {row['ratio_to_per_line']:9.2f} {row['chunks']:7.0f}{parse}"
        )
    slowest = min(speed.items(), key=lambda kv: kv[1]["ratio_to_python"])
    grammar_bound = sorted(
        language for language, row in speed.items() if row.get("parse_over_python_chunking", 0) > 2
    )
    print(
        f"slowest: {slowest[0]} at {slowest[1]['ratio_to_python']:.2f}x Python"
        " (target: at least 0.5x); parse alone over 2x Python's chunking:"
        f" {', '.join(grammar_bound) or 'none'}"
    )
    total = sum(row["chunk_s"] for row in timings.values())
    total_reference = sum(row["reference_s"] for row in timings.values())
    print(
        f"all languages: {total:.3f} s CPU, per-line counting {total_reference:.3f} s"
        f" ({total_reference / total:.2f}x)"
    )
    return {
        "speed": speed,
        "slowest": slowest[0],
        "target_ratio": 0.5,
        "total_s": round(total, 4),
        "per_line_total_s": round(total_reference, 4),
        "speed_met": slowest[1]["ratio_to_python"] >= 0.5,
        "grammar_bound": grammar_bound,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-speed", action="store_true", help="skip the speed figures")
    parser.add_argument("--lines", type=int, default=4000, help="lines per language (4000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, best kept (5)")
    parser.add_argument("--tree", type=Path, help="a source tree for the boundary figure")
    parser.add_argument("--language", default="kotlin", help="its language (kotlin)")
    parser.add_argument(
        "--examples", type=int, default=0, help="print this many chunks that miss a boundary (0)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "bench_chunking.json")
    args = parser.parse_args(argv)

    embedder = coarch.Embedder()
    chunker = Chunker(
        embedder.count_tokens, embedder.max_seq_length, count_lines=embedder.count_line_tokens
    )
    per_line = Chunker(embedder.count_tokens, embedder.max_seq_length)
    result: dict[str, Any] = {
        "environment": {
            "cpu_model": cpu_model(),
            "python": sys.version.split()[0],
            "coarch": coarch.__version__,
            "lines": args.lines,
            "rounds": args.rounds,
        },
    }
    if not args.no_speed:
        result.update(speed_figures(chunker, per_line, args.lines, args.rounds))
        result["indexer_counting"] = indexer_counting(embedder, args.lines, args.rounds)
    if args.tree is not None:
        boundary = boundary_share(chunker, args.tree, args.language, args.examples)
        for example in boundary["examples"]:
            print(example)
        result["boundaries"] = {"tree": str(args.tree), **boundary}
        kinds = ", ".join(f"{boundary[kind]} {kind}" for kind in _KINDS)
        print(
            f"{args.language} tree {args.tree}: {boundary['files']} files, {boundary['chunks']}"
            f" chunks (mean {boundary['mean_tokens']} tokens, {boundary['mean_lines']} lines),"
            f" {boundary['share']:.1%} start at a definition boundary ({kinds};"
            f" {boundary['missed']} missed; strict {boundary['strict_share']:.1%} without"
            f" statement_start; target 90 %); chunked at {boundary['lines_per_s']} lines/s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""eval_search.py: how good coarch's search answers are, measured on real code.

The evaluation is built from a real Python tree (by default a few packages of the standard
library on this machine, so it needs no download):

1. Every function and class whose docstring's first sentence is a usable description (4 to 40
   words, not a signature, no doctest, not naming the definition itself, not shared with
   another definition) is a query: the sentence, and the definition's location as the answer.
2. The tree is copied and those docstrings are blanked in the copy (their lines become blank
   lines, or `pass` where the docstring was the whole body), so the answer cannot simply be
   read off the text and every line number stays the same.
3. The copy is indexed with coarch and searched with each sentence in keyword, semantic and
   hybrid modes (k=10). A hit is a result chunk in the right file that overlaps the
   definition's lines.
4. Identifier queries: the definition's name (`Class.method` for methods) as the query, for
   names unique in the tree; a success is the first result being the chunk holding the
   definition's `def`/`class` line.

Reports MRR@10, recall@1 and recall@10 per mode, the identifier success rate, query latency and
the environment, as JSON on stdout and in --out. --precisions (fp32, bf16, auto; default fp32)
indexes and searches the same tree once per precision, each in its own index (--work/index-fp32,
...) updated incrementally, so a second run costs little. The report's top level describes the
first precision, as it always did; "by_precision" holds every precision's figures with the
precision recorded in the index and the one queries were embedded in, and "bf16_vs_fp32" (when
both ran) the MRR@10 deltas per mode and whether hybrid loses at most 0.005.

    .venv/bin/python scripts/eval_search.py --limit 300
    .venv/bin/python scripts/eval_search.py --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coarch.embedder import PRECISIONS
from coarch.index import Index
from coarch.search import Hit, Searcher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import search_environment

DEFAULT_PACKAGES = ("email", "json", "http", "urllib", "logging", "concurrent", "html", "wsgiref")
MODES = ("keyword", "semantic", "hybrid")
K = 10
# The bound: bf16 may lose at most this much hybrid MRR@10 against fp32.
MAX_BF16_LOSS = 0.005


@dataclass(frozen=True)
class Definition:
    path: str  # relative to the tree, POSIX
    name: str  # qualified: Class.method
    kind: str  # function or class
    def_line: int  # the `def` / `class` line (1-based)
    start_line: int  # first decorator, else def_line
    end_line: int
    doc_start: int
    doc_end: int
    sentence: str | None  # usable first sentence of the docstring, else None
    body_is_doc: bool  # the docstring is the whole body


# ---- building the evaluation ----------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_SIGNATURE = re.compile(r"^\s*[\w.]+\s*\(.*\)\s*(->|$)")


def first_sentence(doc: str) -> str:
    paragraph = doc.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    return _SENTENCE_END.split(text, 1)[0].strip()


def usable(sentence: str, name: str) -> bool:
    words = sentence.split()
    if not 4 <= len(words) <= 40:
        return False
    if ">>>" in sentence or _SIGNATURE.match(sentence) or sentence.endswith(":"):
        return False
    bare = name.rsplit(".", 1)[-1].strip("_").lower()
    return not (bare and bare in sentence.lower())


def definitions_of(path: Path, rel: str) -> list[Definition]:
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    out: list[Definition] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{scope}.{child.name}" if scope else child.name
                out.append(describe(child, name, lines, rel))
                # Methods keep their class as scope; nested functions are not queried.
                if isinstance(child, ast.ClassDef):
                    visit(child, name)

    visit(tree, "")
    return [d for d in out if d is not None]


def describe(node: Any, name: str, lines: list[str], rel: str) -> Definition:
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    sentence: str | None = None
    doc_start = doc_end = 0
    body_is_doc = False
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.lineno > node.lineno  # not on the def line
        and first.end_lineno is not None
        and lines[first.end_lineno - 1].rstrip().endswith(("'", '"'))  # nothing after it
        and lines[first.lineno - 1].lstrip().startswith(("'", '"', "r'", 'r"', "u'", 'u"'))
    ):
        text = first_sentence(first.value.value)
        if usable(text, name):
            sentence = text
            doc_start, doc_end = first.lineno, first.end_lineno
            body_is_doc = len(node.body) == 1
    kind = "class" if isinstance(node, ast.ClassDef) else "function"
    return Definition(
        rel,
        name,
        kind,
        node.lineno,
        start,
        node.end_lineno,
        doc_start,
        doc_end,
        sentence,
        body_is_doc,
    )


def blank_docstrings(source: str, defs: list[Definition]) -> str:
    """The source with those docstrings replaced by blank lines (`pass` where the docstring
    was the whole body), every other line unchanged."""
    lines = source.split("\n")
    for d in defs:
        indent = re.match(r"\s*", lines[d.doc_start - 1]).group(0)  # type: ignore[union-attr]
        for i in range(d.doc_start - 1, d.doc_end):
            lines[i] = ""
        if d.body_is_doc:
            lines[d.doc_start - 1] = indent + "pass"
    return "\n".join(lines)


def build_tree(stdlib: Path, packages: list[str], dest: Path) -> list[Definition]:
    """Copies the packages into dest with the usable docstrings blanked; returns every
    definition (sentence None for those that are not description queries)."""
    if dest.exists():
        shutil.rmtree(dest)
    everything: list[Definition] = []
    for package in packages:
        base = stdlib / package
        files = sorted(base.rglob("*.py")) if base.is_dir() else [stdlib / f"{package}.py"]
        for path in files:
            if "test" in path.relative_to(stdlib).parts[:-1] or not path.is_file():
                continue
            rel = path.relative_to(stdlib).as_posix()
            defs = definitions_of(path, rel)
            source = path.read_text(encoding="utf-8")
            blanked = blank_docstrings(source, [d for d in defs if d.sentence])
            try:
                ast.parse(blanked)
            except SyntaxError:  # keep the file as it is, and query none of it
                blanked = source
                defs = [Definition(**{**asdict(d), "sentence": None}) for d in defs]
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(blanked, encoding="utf-8")
            everything.extend(defs)
    # A sentence shared by several definitions has no single answer.
    counts = Counter(d.sentence for d in everything if d.sentence)
    return [
        d
        if not d.sentence or counts[d.sentence] == 1
        else Definition(**{**asdict(d), "sentence": None})
        for d in everything
    ]


def sample(items: list[Any], limit: int | None) -> list[Any]:
    """An evenly spaced, deterministic sample of at most `limit` items."""
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


# ---- scoring --------------------------------------------------------------------------------------


def overlaps(hit: Hit, d: Definition) -> bool:
    return hit.path == d.path and hit.start_line <= d.end_line and hit.end_line >= d.start_line


def holds_def_line(hit: Hit, d: Definition) -> bool:
    return hit.path == d.path and hit.start_line <= d.def_line <= hit.end_line


def rank_of(hits: list[Hit], d: Definition) -> int | None:
    return next((i for i, h in enumerate(hits, 1) if overlaps(h, d)), None)


def summarise(ranks: list[int | None], seconds: list[float]) -> dict[str, float]:
    n = len(ranks) or 1
    seconds = sorted(seconds) or [0.0]
    return {
        "mrr@10": round(sum(1 / r for r in ranks if r is not None and r <= K) / n, 4),
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "recall@10": round(sum(1 for r in ranks if r is not None and r <= K) / n, 4),
        "median_ms": round(1000 * seconds[len(seconds) // 2], 2),
        "p95_ms": round(1000 * seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 2),
    }


def run_descriptions(searcher: Searcher, queries: list[Definition]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    misses: dict[str, list[dict[str, Any]]] = {}
    for mode in MODES:
        ranks: list[int | None] = []
        seconds: list[float] = []
        for d in queries:
            assert d.sentence is not None
            t0 = time.perf_counter()
            hits = searcher.search(d.sentence, k=K, mode=mode)
            seconds.append(time.perf_counter() - t0)
            ranks.append(rank_of(hits, d))
            if ranks[-1] is None and len(misses.setdefault(mode, [])) < 5:
                misses[mode].append(
                    {
                        "query": d.sentence,
                        "want": f"{d.path}:{d.def_line}",
                        "got": [f"{h.path}:{h.start_line}" for h in hits[:3]],
                    }
                )
        results[mode] = summarise(ranks, seconds)
    results["examples_missed"] = misses
    return results


def run_identifiers(searcher: Searcher, queries: list[Definition]) -> dict[str, Any]:
    first = top10 = 0
    seconds: list[float] = []
    failures: list[dict[str, Any]] = []
    for d in queries:
        t0 = time.perf_counter()
        hits = searcher.search(d.name, k=K)
        seconds.append(time.perf_counter() - t0)
        if hits and holds_def_line(hits[0], d):
            first += 1
        elif len(failures) < 10:
            failures.append(
                {
                    "query": d.name,
                    "want": f"{d.path}:{d.def_line}",
                    "got": [f"{h.path}:{h.start_line}-{h.end_line} {h.symbol}" for h in hits[:2]],
                }
            )
        if any(holds_def_line(h, d) for h in hits):
            top10 += 1
    n = len(queries) or 1
    seconds = sorted(seconds) or [0.0]
    return {
        "queries": len(queries),
        "first": round(first / n, 4),
        "in_top10": round(top10 / n, 4),
        "median_ms": round(1000 * seconds[len(seconds) // 2], 2),
        "examples_failed": failures,
    }


def parse_precisions(text: str) -> list[str]:
    """The --precisions list, validated, duplicates dropped, order kept (the first is the one
    the report's top level describes)."""
    chosen: list[str] = []
    for name in (p.strip() for p in text.split(",")):
        if not name:
            continue
        if name not in PRECISIONS:
            raise SystemExit(
                f"eval_search: unknown precision {name!r} (use {', '.join(PRECISIONS)})"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise SystemExit("eval_search: --precisions names no precision")
    return chosen


@dataclass(frozen=True)
class Built:
    """One precision's index after `coarch index`: what the evaluation reports about it."""

    index_dir: Path
    chunks: int
    seconds: float
    precision: str | None  # as recorded in the index, not as asked ("auto" resolves)
    precision_reason: str | None
    rebuild_reason: str | None


def build_index(tree: Path, index_dir: Path, precision: str, threads: int | None) -> Built:
    """Indexes the blanked tree into index_dir in that precision (incremental: an index of the
    same precision is reused; one of another precision is rebuilt by coarch itself)."""
    t0 = time.perf_counter()
    with Index(tree, index_dir=index_dir, threads=threads, precision=precision) as index:
        summary = index.build()
        status = index.status(pending=False)
    if summary.chunks_total == 0:
        raise SystemExit(f"eval_search: nothing was indexed in {tree} (ignored by git?)")
    return Built(
        index_dir,
        summary.chunks_total,
        time.perf_counter() - t0,
        status.get("precision"),
        status.get("precision_reason"),
        summary.rebuild_reason,
    )


def query_precision(searcher: Searcher) -> str:
    """The precision the searcher embeds queries in. Recorded because it need not be the
    index's: the report must say which pair of precisions was actually compared."""
    return searcher._embedder().precision


def evaluate(
    built: Built, queries: list[Definition], ident_queries: list[Definition]
) -> dict[str, Any]:
    """The description and identifier runs against one index."""
    with Searcher(built.index_dir) as searcher:
        searcher.search("warm up", k=K)  # load the model and map the index first
        descriptions = run_descriptions(searcher, queries)
        ident = run_identifiers(searcher, ident_queries)
        query_side = query_precision(searcher)
    return {"descriptions": descriptions, "identifiers": ident, "query_precision": query_side}


def precision_record(built: Built, result: dict[str, Any]) -> dict[str, Any]:
    """The by_precision entry: metrics and latency per mode, identifier success, and the
    precisions really used (index and query), without the example lists."""
    ident = {k: v for k, v in result["identifiers"].items() if k != "examples_failed"}
    return {
        "precision": built.precision,
        "precision_reason": built.precision_reason,
        "query_precision": result["query_precision"],
        "index_dir": str(built.index_dir),
        "chunks": built.chunks,
        "index_seconds": round(built.seconds, 2),
        "rebuild_reason": built.rebuild_reason,
        "modes": {m: result["descriptions"][m] for m in MODES},
        "identifier_queries": ident,
    }


def compare_bf16(by_precision: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """bf16 minus fp32 MRR@10 per mode, and whether hybrid stays within 0.005 of fp32 (a gain
    passes too); None unless both ran."""
    if "fp32" not in by_precision or "bf16" not in by_precision:
        return None
    fp32, bf16 = by_precision["fp32"]["modes"], by_precision["bf16"]["modes"]
    delta = {m: round(bf16[m]["mrr@10"] - fp32[m]["mrr@10"], 4) for m in MODES}
    return {
        "mrr10_delta": delta,
        "within_0_005": delta["hybrid"] >= -MAX_BF16_LOSS,
        "query_precisions": {
            "fp32": by_precision["fp32"]["query_precision"],
            "bf16": by_precision["bf16"]["query_precision"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure coarch search quality on a real Python tree with its docstrings "
        "blanked (MRR@10, recall@1/@10 per mode; identifier queries).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stdlib",
        type=Path,
        default=Path(sysconfig.get_paths()["stdlib"]),
        help="the Python tree to take packages from (default: this Python's standard library)",
    )
    parser.add_argument(
        "--packages",
        default=",".join(DEFAULT_PACKAGES),
        help="comma-separated packages or modules of that tree "
        f"(default: {','.join(DEFAULT_PACKAGES)})",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N description queries and N identifier queries (an "
        "evenly spaced sample; default: all)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "coarch-eval-search",
        help="folder for the blanked copy and its indexes (index-PRECISION), outside any git "
        "repository that ignores it (reused: each index is updated incrementally; default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results/eval_search.json"),
        help="where to write the JSON report",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="model threads for indexing (default: coarch's default, the cores available)",
    )
    parser.add_argument(
        "--precisions",
        default="fp32",
        help="comma-separated precisions to index and search in, each fp32, bf16 or auto, each "
        "with its own index; the report's top level describes the first, by_precision all "
        "(default: %(default)s)",
    )
    args = parser.parse_args(argv)

    precisions = parse_precisions(args.precisions)
    packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    tree = args.work / "tree"
    t0 = time.perf_counter()
    definitions = build_tree(args.stdlib, packages, tree)
    described = [d for d in definitions if d.sentence]
    names = Counter(d.name for d in definitions)
    identifiers = [d for d in definitions if names[d.name] == 1]
    print(
        f"eval_search: {len(definitions)} definitions, {len(described)} with a usable "
        f"description, {len(identifiers)} with a unique name",
        file=sys.stderr,
    )
    prepare_seconds = time.perf_counter() - t0

    queries = sample(described, args.limit)
    ident_queries = sample(identifiers, args.limit)
    by_precision: dict[str, dict[str, Any]] = {}
    first: tuple[Built, dict[str, Any]] | None = None
    for precision in precisions:
        built = build_index(tree, args.work / f"index-{precision}", precision, args.threads)
        print(
            f"eval_search [{precision}]: indexed {built.chunks} chunks in {built.seconds:.1f}s "
            f"(index precision {built.precision})",
            file=sys.stderr,
        )
        result = evaluate(built, queries, ident_queries)
        by_precision[precision] = precision_record(built, result)
        modes = by_precision[precision]["modes"]
        print(
            f"eval_search [{precision}]: MRR@10 "
            + " ".join(f"{m} {modes[m]['mrr@10']:.4f}" for m in MODES)
            + f", identifiers first {result['identifiers']['first']:.1%}, "
            f"hybrid median {modes['hybrid']['median_ms']:.1f} ms, "
            f"query precision {result['query_precision']}",
            file=sys.stderr,
        )
        if built.precision and result["query_precision"] != built.precision:
            print(
                f"eval_search [{precision}]: warning: queries embedded in "
                f"{result['query_precision']}, the index in {built.precision}",
                file=sys.stderr,
            )
        if first is None:
            first = (built, result)
    assert first is not None
    built, result = first
    descriptions, ident = result["descriptions"], result["identifiers"]

    modes = {m: descriptions[m] for m in MODES}
    best_other = max(modes["keyword"]["mrr@10"], modes["semantic"]["mrr@10"])
    report: dict[str, Any] = {
        "tree": {
            "source": str(args.stdlib),
            "packages": packages,
            "files": len({d.path for d in definitions}),
            "definitions": len(definitions),
            "chunks": built.chunks,
            "prepare_seconds": round(prepare_seconds, 2),
            "index_seconds": round(built.seconds, 2),
        },
        "description_queries": len(queries),
        "k": K,
        "precision": built.precision,
        "modes": modes,
        "identifier_queries": ident,
        "targets": {
            "hybrid_beats_keyword_and_semantic_mrr": modes["hybrid"]["mrr@10"] > best_other,
            "identifier_first_at_least_90pct": ident["first"] >= 0.9,
        },
        "examples_missed": descriptions["examples_missed"],
        "by_precision": by_precision,
    }
    comparison = compare_bf16(by_precision)
    if comparison is not None:
        report["bf16_vs_fp32"] = comparison
        print(
            "eval_search: bf16 - fp32 MRR@10 "
            + " ".join(f"{m} {comparison['mrr10_delta'][m]:+.4f}" for m in MODES)
            + f"; hybrid within {MAX_BF16_LOSS}: {comparison['within_0_005']}",
            file=sys.stderr,
        )
    report["environment"] = search_environment()
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

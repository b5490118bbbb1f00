"""sweep_fusion.py: which fusion of the semantic and keyword rankings answers best, per kind of
query, on the search evaluation's trees (scripts/eval_search.py).

Each description query's two rankings (100 deep) are read once from the evaluation's indexes
(built by eval_search.py, or here when missing); every candidate fusion then re-ranks the same
lists, so the sweep costs one retrieval per query whatever the number of candidates. Reported
per candidate, per query kind (sentence, mix) and language: file MRR@10, chunk MRR@10 and
lines read to the first hit (p50), as in eval_search.py, also after coarch.rerank with each of
RERANKS (on the fusions of --rerank-on), and beside them each query's better ranking of the
two (a bound on choosing one retriever per query); and per kind the candidate with the
best mean over languages of file MRR@10 + chunk MRR@10 among those that lose in no language
against plain RRF by more than --tolerance.

    .venv/bin/python scripts/sweep_fusion.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus
import eval_search
from eval_search import Definition, K, Outcome, outcome, summarise

from coarch.fusion import RRF, Fusion, Ranked, ScoreFusion
from coarch.hit import Hit
from coarch.rerank import RERANK_DEPTH, Candidate, rerank
from coarch.search import FUSION_DEPTH, Searcher

# Re-rank settings tried on top of each fusion: (name, file lift, drop repeats). "none" is the
# fused order as it is.
RERANKS: tuple[tuple[str, float | None, bool], ...] = (
    ("none", None, False),
    ("lift0 dedupe", 0.0, True),
    ("lift0.05 dedupe", 0.05, True),
    ("lift0.1 dedupe", 0.1, True),
    ("lift0.2 dedupe", 0.2, True),
    ("lift0.1", 0.1, False),
)


def candidates() -> dict[str, Fusion]:
    """Weighted RRF over a grid of weights and k, and normalised-score fusion over weights."""
    out: dict[str, Fusion] = {}
    for k in (10, 30, 60):
        for sem, kw in ((1, 1), (1, 1.5), (1, 2), (1.5, 1), (2, 1), (1, 3), (3, 1)):
            out[f"rrf k={k} sem={sem} kw={kw}"] = RRF(float(sem), float(kw), k)
    for w in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        out[f"score sem={w}"] = ScoreFusion(w)
    return out


Row = tuple[str, int, int, tuple[str, ...], str | None]
# Not a fusion: each query's better ranking of the two, reported beside the candidates as the
# most that picking one retriever per query could reach (choose() leaves it out).
BOUND = "better of the two per query"


def rows_of(searcher: Searcher) -> dict[int, Row]:
    """(path, start, end, symbols, language) of every chunk of the index."""
    store = searcher.store
    return {
        r.id: (r.path, r.start_line, r.end_line, r.symbols, r.language)
        for r in store.chunks_by_ids(range(1, store.max_chunk_id() + 1))
    }


def hits_of(order: list[int], rows: dict[int, Row]) -> list[Hit]:
    return [Hit(rows[c][0], rows[c][1], rows[c][2], 0.0, None, None, "") for c in order[:K]]


def reranked(
    query: str,
    order: list[int],
    scores: dict[int, float],
    rows: dict[int, Row],
    lift: float | None,
    dedupe: bool,
) -> list[int]:
    """The fused order after coarch.rerank with these settings (as Searcher._rerank does)."""
    if lift is None:
        return order
    top = order[:RERANK_DEPTH]
    candidates = [Candidate(c, *rows[c][:4], scores[c], rows[c][4]) for c in top]
    return [c.id for c in rerank(query, candidates, lift, dedupe)] + order[len(top) :]


def better_of_two(
    lists: list[tuple[Definition, Ranked, Ranked]], rows: dict[int, Row]
) -> dict[str, dict[str, float]]:
    """{kind: summary} when each query takes whichever of its two rankings finds the file
    sooner (then the chunk): what choosing one retriever per query could reach at best."""
    by_kind: dict[str, list[Outcome]] = {}
    missed = K + 1
    for d, semantic, keyword in lists:
        got = min(
            (outcome(hits_of(ranked.ids, rows), d, 0.0) for ranked in (semantic, keyword)),
            key=lambda o: (o.file_rank or missed, o.chunk_rank or missed),
        )
        by_kind.setdefault(eval_search.query_kind(d.sentence or ""), []).append(got)
        by_kind.setdefault("all", []).append(got)
    return {kind: summarise(v) for kind, v in by_kind.items()}


def sweep_language(
    index_dir: Path, queries: list[Definition], fusions: dict[str, Fusion], rerank_fusions: set[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """{fusion (+ re-rank): {kind: summary}} for one language; the re-rank settings are tried
    on the fusions named in rerank_fusions."""
    with Searcher(index_dir) as searcher:
        rows = rows_of(searcher)
        lists: list[tuple[Definition, Ranked, Ranked]] = []
        for d in queries:
            assert d.sentence is not None
            semantic, keyword = searcher.rankings(d.sentence, FUSION_DEPTH)
            lists.append((d, semantic, keyword))
    result: dict[str, dict[str, dict[str, float]]] = {BOUND: better_of_two(lists, rows)}
    for name, fusion in fusions.items():
        for rerank_name, lift, dedupe in RERANKS:
            if rerank_name != "none" and name not in rerank_fusions:
                continue
            by_kind: dict[str, list[Outcome]] = {}
            for d, semantic, keyword in lists:
                scores = fusion.fuse(semantic, keyword)
                order = sorted(scores, key=lambda cid: (-scores[cid], cid))
                order = reranked(d.sentence or "", order, scores, rows, lift, dedupe)
                kind = eval_search.query_kind(d.sentence or "")
                got = outcome(hits_of(order, rows), d, 0.0)
                by_kind.setdefault(kind, []).append(got)
                by_kind.setdefault("all", []).append(got)
            key = name if rerank_name == "none" else f"{name} + {rerank_name}"
            result[key] = {kind: summarise(v) for kind, v in by_kind.items()}
    return result


def choose(
    per_language: dict[str, dict[str, dict[str, dict[str, float]]]],
    kind: str,
    reference: str,
    tolerance: float,
) -> dict[str, Any]:
    """The best candidate for a kind by mean file + chunk MRR@10 over languages, among those
    within `tolerance` of the reference in every language."""

    def value(entry: dict[str, float]) -> float:
        return entry["file_mrr@10"] + entry["chunk_mrr@10"]

    table: list[tuple[float, str, bool]] = []
    for name in next(iter(per_language.values())):
        if name == BOUND:
            continue
        values = {
            lang: value(res[name][kind]) for lang, res in per_language.items() if kind in res[name]
        }
        refs = {
            lang: value(res[reference][kind])
            for lang, res in per_language.items()
            if kind in res[reference]
        }
        safe = all(values[lang] >= refs[lang] - tolerance for lang in values)
        table.append((sum(values.values()) / len(values), name, safe))
    table.sort(reverse=True)
    best = next((t for t in table if t[2]), table[0])
    return {
        "best": best[1],
        "mean_file_plus_chunk_mrr": round(best[0], 4),
        "reference": round(next(t[0] for t in table if t[1] == reference), 4),
        "top5": [(name, round(v, 4), safe) for v, name, safe in table[:5]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default=",".join(corpus.EVAL_LANGUAGES))
    parser.add_argument("--limit", type=int, default=eval_search.DEFAULT_LIMIT)
    parser.add_argument("--seed", type=int, default=eval_search.DEFAULT_SEED)
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest loss against plain RRF allowed in any language",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "coarch-eval-search"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/sweep_fusion.json"))
    parser.add_argument(
        "--rerank-on",
        action="append",
        default=["rrf k=60 sem=1 kw=1"],
        help="a fusion (as named in the report) to try the re-rank settings on",
    )
    args = parser.parse_args(argv)

    languages = eval_search.parse_list(args.languages, corpus.EVAL_LANGUAGES, "language")
    sources, missing = corpus.eval_sources(args.work / "sources", tuple(languages))
    fusions = candidates()
    reference = "rrf k=60 sem=1 kw=1"
    per_language: dict[str, Any] = {}
    t0 = time.perf_counter()
    for source in sources:
        lang_set = eval_search.prepare(source, args.work, args.limit or None, args.seed)
        index_dir = args.work / f"index-{source.language}-{args.precision}"
        eval_search.build_index(lang_set.tree, index_dir, args.precision, None)
        per_language[source.language] = sweep_language(
            index_dir, lang_set.queries, fusions, set(args.rerank_on)
        )
        print(
            f"sweep_fusion [{source.language}]: {len(lang_set.queries)} queries, "
            f"{time.perf_counter() - t0:.0f}s",
            file=sys.stderr,
        )
    chosen = {
        kind: choose(per_language, kind, reference, args.tolerance)
        for kind in ("sentence", "mix", "all")
    }
    for language, result in per_language.items():
        bound = result[BOUND]["all"]
        print(
            f"sweep_fusion [{language}] {BOUND}: file MRR@10 {bound['file_mrr@10']:.4f}, "
            f"chunk MRR@10 {bound['chunk_mrr@10']:.4f}",
            file=sys.stderr,
        )
    for kind, pick in chosen.items():
        print(
            f"sweep_fusion {kind}: best {pick['best']} {pick['mean_file_plus_chunk_mrr']} "
            f"(plain RRF {pick['reference']}); top: {pick['top5']}",
            file=sys.stderr,
        )
    report = {"left_out": missing, "chosen": chosen, "languages": per_language}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(chosen, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

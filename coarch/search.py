"""Query -> hits: FAISS vector search and FTS5 BM25 keyword search, fused by reciprocal rank.

Three modes. `semantic` ranks chunks by cosine similarity between the query's vector and the
chunk vectors (FAISS, inner product on L2-normalised rows). `keyword` ranks them by BM25 over the
FTS5 table, with the query's identifiers split exactly as at indexing time (coarch.identifiers).
`hybrid` (the default) fuses the two rankings by reciprocal rank fusion chosen by kind of
query (coarch.fusion), re-ranks the fused top by code-aware rules (coarch.rerank: tests, docs and
vendored code below source, a file with several strong chunks lifted, one long definition shown
once), and when the query is a bare identifier (`parse_config`, `HttpClient.send`) puts the
chunks that *define* it first (coarch.definitions). Queries are embedded in the form chunks were: identifiers split
into words (coarch.identifiers.model_text). `explain=True` says, per hit, why it is there.

Reading never writes and never blocks an indexer: SQLite is opened read-only and every search
runs in one read transaction (it sees the last committed state); the FAISS file is
memory-mapped. While an indexer runs, the FAISS file lags behind SQLite: chunks it does not cover
yet are scored from their vectors in SQLite, streamed in batches, and chunks deleted since it was
written are dropped, so results always match the committed state (coarch.vectors.VectorIndex).

Filters (coarch.filters: `lang`, `path` globs with `!` exclusions) are applied inside the
retrieval (an SQL join in the store's queries, a FAISS id selector), so `k` hits come back
whenever `k` chunks pass the filters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coarch.definitions import DEFINITION_TIERS, could_define, ranked_definitions
from coarch.errors import CoarchError, IndexNotFoundError, ModelMismatchError, UsageError
from coarch.filters import Filters
from coarch.fusion import Ranked, fusion_for, query_kind
from coarch.hit import Hit
from coarch.identifiers import model_text, parse_identifier, query_terms
from coarch.rerank import RERANK_DEPTH, Candidate, rerank
from coarch.search_options import DEFAULT_K, MAX_K, MODES
from coarch.store import ChunkRow, Store, corruption_reported
from coarch.vectors import NearestLookup, VectorIndex

if TYPE_CHECKING:
    from coarch.embedder import Embedder

log = logging.getLogger(__name__)


# Depth of each ranked list fused in hybrid mode: deep enough that a chunk ranked well by one
# retriever and moderately by the other is found, shallow enough to stay cheap.
FUSION_DEPTH = 100
# At most this many chunks whose symbol mentions a queried identifier are examined.
DEFINITION_CANDIDATES = 500


class Searcher:
    """Searches one index folder. Opens SQLite read-only and the FAISS file memory-mapped; the
    model is loaded on the first semantic query and shared by every Searcher of the process.

    `model` overrides the model folder (it must be the one the index was built with).
    Not thread-safe: use one Searcher per thread.
    """

    def __init__(
        self, index_dir: str | os.PathLike[str], model: str | os.PathLike[str] | None = None
    ) -> None:
        self.index_dir = Path(index_dir)
        self._model_arg = model
        self.store = Store(self.index_dir, readonly=True)
        self._db_identity = _identity(self.store.path)
        self._vectors = VectorIndex(self.index_dir)
        self._embedder_cache: tuple[tuple[str, str], Embedder] | None = None

    @property
    def dim(self) -> int:
        """Width of the index's vectors (0 until a first `coarch index` has loaded a model)."""
        return int(self.store.get_meta("dim") or 0)

    # -- lifecycle --

    def close(self) -> None:
        self._vectors.forget()
        self.store.close()

    def __enter__(self) -> Searcher:  # noqa: PYI034  (final class; no typing_extensions)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --

    def search(
        self,
        query: str,
        k: int = DEFAULT_K,
        mode: str = "hybrid",
        lang: str | Sequence[str] | None = None,
        path: str | Sequence[str] | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """The best `k` chunks for `query`, best first (see the module docstring). With
        `explain`, each hit carries why it is there (Hit.explain)."""
        if mode not in MODES:
            raise UsageError(f"unknown search mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        if not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be a positive integer, not {k!r}")
        filters = Filters.build(lang, path)
        if k > MAX_K:
            log.warning("at most %d hits are returned, not %d", MAX_K, k)
            k = MAX_K
        if not query.strip():
            return []
        self._follow_swap()
        with corruption_reported(self.index_dir):
            return self._search(query, k, mode, filters, explain)

    def _follow_swap(self) -> None:
        """Reopens the index when another file now sits at its path (a rebuild was swapped in,
        or the index was rebuilt from scratch); until then the open files keep answering."""
        now = _identity(self.store.path)
        if now is None or now == self._db_identity:
            return
        log.info("%s was replaced: reopening the index", self.store.path)
        fresh = Store(self.index_dir, readonly=True)
        self.store.close()
        self.store, self._db_identity = fresh, _identity(fresh.path)
        self._vectors.forget()

    def _search(self, query: str, k: int, mode: str, filters: Filters, explain: bool) -> list[Hit]:
        # One read transaction: FTS5, chunks and vectors all show the same committed state.
        with self.store.read_snapshot():
            if mode in ("keyword", "semantic"):
                retrieve = self._keyword if mode == "keyword" else self._semantic
                ranked = retrieve(query, k, filters)
                return self._hits(ranked.ids, ranked.scores, mode if explain else None)
            return self._hybrid(query, k, filters, explain)

    # -- retrieval --

    def rankings(
        self, query: str, depth: int = FUSION_DEPTH, filters: Filters | None = None
    ) -> tuple[Ranked, Ranked]:
        """The (semantic, keyword) rankings hybrid mode fuses, `depth` deep, read in one
        snapshot (for the evaluation's fusion sweep; a search needs none of this)."""
        filters = filters or Filters()
        self._follow_swap()
        with corruption_reported(self.index_dir), self.store.read_snapshot():
            return self._semantic(query, depth, filters), self._keyword(query, depth, filters)

    def _hybrid(self, query: str, k: int, filters: Filters, explain: bool) -> list[Hit]:
        depth = max(FUSION_DEPTH, k)
        # The query is embedded and the FAISS file scanned in the query thread while FTS5
        # ranks the keywords here (all three release the GIL): on 2 cores a hybrid search
        # waits for the slower side, not for the sum of both.
        started = self._semantic_started(query, depth, filters)
        keyword = self._keyword(query, depth, filters)
        semantic = self._semantic_done(started, depth)
        fused = fusion_for(query_kind(query)).fuse(semantic, keyword)
        order = sorted(fused, key=lambda cid: (-fused[cid], cid))
        order, scores, rules = self._rerank(query, order, fused, k)

        ident = parse_identifier(query)
        definitions = self._definitions(ident, order, filters) if ident else []
        rows: list[ChunkRow] = []
        final_scores: list[float] = []
        tiers: dict[int, int] = {}
        for row, tier in definitions:
            if len(rows) == k:
                break
            rows.append(row)
            final_scores.append(float(DEFINITION_TIERS - tier[0]) + scores.get(row.id, 0.0))
            tiers[row.id] = tier[0]
        rest = [cid for cid in order if cid not in tiers][: k - len(rows)]
        by_id = {row.id: row for row in self.store.chunks_by_ids(rest)}
        for cid in rest:
            if cid in by_id:
                rows.append(by_id[cid])
                final_scores.append(scores[cid])
        if not explain:
            return [_hit(row, score) for row, score in zip(rows, final_scores)]
        ranks = {"semantic": _rank_table(semantic), "keyword": _rank_table(keyword)}
        return [
            _hit(
                row,
                score,
                {
                    **{name: table.get(row.id) for name, table in ranks.items()},
                    "fused": round(fused.get(row.id, 0.0), 6),
                    "rules": rules.get(row.id, {}),
                    "definition_tier": tiers.get(row.id),
                },
            )
            for row, score in zip(rows, final_scores)
        ]

    def _rerank(
        self, query: str, order: list[int], fused: dict[int, float], k: int
    ) -> tuple[list[int], dict[int, float], dict[int, dict[str, float]]]:
        """The fused order after coarch.rerank's rules over its top: (order, scores, the
        rules' score changes per chunk). Scores stay in (0, 1]."""
        top = order[: max(RERANK_DEPTH, k)]
        candidates = [
            Candidate(
                row.id,
                row.path,
                row.start_line,
                row.end_line,
                row.symbols,
                fused[row.id],
                row.language,
            )
            for row in self.store.chunks_by_ids(top)
        ]
        reranked = rerank(query, candidates)
        scale = max([1.0, *(c.score for c in reranked)])
        scores = {c.id: c.score / scale for c in reranked}
        lowest = min(scores.values(), default=1.0)
        rest = order[len(top) :]
        for cid in rest:  # below every re-ranked candidate, in fused order
            scores[cid] = min(fused[cid], lowest)
        rules = {c.id: c.rules for c in reranked if c.rules}
        return [c.id for c in reranked] + rest, scores, rules

    def _keyword(self, query: str, n: int, filters: Filters) -> Ranked:
        expr = query_terms(query)
        if not expr:
            return Ranked([], [])
        ids, scores = self.store.keyword_ranking(expr, n, filters)
        return Ranked(ids, scores)

    def _semantic(self, query: str, n: int, filters: Filters) -> Ranked:
        return self._semantic_done(self._semantic_started(query, n, filters), n)

    def _semantic_started(self, query: str, n: int, filters: Filters) -> _SemanticQuery | None:
        """Starts the semantic ranking: what it needs from SQLite is read here, the query's
        vector and the FAISS scan are computed in the query thread. None: nothing to rank."""
        if self.dim <= 0 or not self.store.has_chunks():
            return None
        embedder = self._embedder()  # here: it reads the store, whose connection is this thread's
        lookup = self._vectors.lookup(self.store, self.dim, filters)
        answer = _query_thread().submit(_vector_and_file_hits, embedder, query, lookup, n, self.dim)
        return lookup, answer

    def _semantic_done(self, started: _SemanticQuery | None, n: int) -> Ranked:
        """The semantic ranking `_semantic_started` began, completed from SQLite."""
        if started is None:
            return Ranked([], [])
        lookup, answer = started
        vector, file_hits = answer.result()
        self._check_width(vector)
        found = lookup.finish(self.store, vector, n, file_hits)
        order = sorted(found, key=lambda cid: (-found[cid], cid))[:n]
        return Ranked(order, [found[c] for c in order])

    def _definitions(
        self, ident: str, fused_order: list[int], filters: Filters
    ) -> list[tuple[ChunkRow, tuple[int, int]]]:
        """Chunks that define `ident`, best first: by (tier, indent), then fused rank, then
        position."""
        last = ident.rsplit(".", 1)[-1]
        expr = query_terms(last)
        if not expr:
            return []
        # Chunks whose symbol holds the name; chunks without a symbol (languages chunked
        # without a grammar) that define it are among the fused hits, which keyword search
        # ranks by the exact identifier.
        candidates = self.store.symbol_matches(last, DEFINITION_CANDIDATES, filters)
        ids = list(dict.fromkeys([*fused_order[:FUSION_DEPTH], *candidates]))
        if "." in ident:  # qualified: only the chunks whose symbol relates to it are read
            symbols = self.store.symbols_by_ids(ids)
            ids = [cid for cid in ids if could_define(ident, symbols.get(cid, ()))]
        return ranked_definitions(ident, self.store.chunks_by_ids(ids), fused_order)

    # -- helpers --

    def _check_width(self, vector: np.ndarray) -> None:
        if vector.shape[1] != self.dim:
            raise ModelMismatchError(
                f"the model gives {vector.shape[1]}-wide vectors, the index holds {self.dim}",
                hint=f"run `coarch index --full {self.store.get_meta('root') or 'PATH'}`",
            )

    def _embedder(self) -> Embedder:
        """The embedder of the model the index was built with (checked by model id)."""
        from coarch.models import model_id_once, resolve_model_path

        meta = self.store.meta()
        indexed_id = meta.get("model_id")
        precision = self.store.precision() or "fp32"
        if self._embedder_cache is not None and self._embedder_cache[0] == (indexed_id, precision):
            return self._embedder_cache[1]
        if not indexed_id:
            raise IndexNotFoundError(
                f"the index at {self.index_dir} has no model recorded (never built?)",
                hint="run `coarch index PATH` first",
            )
        candidates: list[Path] = []
        if self._model_arg is not None:
            candidates.append(resolve_model_path(self._model_arg))
        else:
            recorded = meta.get("model_path")
            if recorded and Path(recorded).is_dir():
                candidates.append(Path(recorded))
            with contextlib.suppress(CoarchError):
                candidates.append(resolve_model_path(None))
        for folder in candidates:
            if model_id_once(folder) == indexed_id:
                from coarch.embedder import get_embedder  # loads libtorch

                max_len = int(meta.get("max_seq_length") or 0)
                embedder = get_embedder(folder, indexed_id, max_len, precision)
                self._embedder_cache = ((indexed_id, precision), embedder)
                return embedder
        tried = candidates[0] if candidates else "no model folder"
        raise ModelMismatchError(
            f"index at {self.index_dir} was built with model {indexed_id}, not {tried}",
            hint=f"rebuild it: `coarch index --full {meta.get('root') or 'PATH'}`"
            + (" (or pass the same --model)" if self._model_arg is None else ""),
        )

    def _hits(
        self, ids: list[int], scores: list[float], explained_mode: str | None = None
    ) -> list[Hit]:
        """Hits of one retriever's ranking; with `explained_mode`, each tells its rank and
        score in it."""
        rows = self.store.chunks_by_ids(ids)
        score_of = dict(zip(ids, scores))
        if explained_mode is None:
            return [_hit(row, score_of[row.id]) for row in rows]
        table = _rank_table(Ranked(ids, scores))
        return [_hit(row, score_of[row.id], {explained_mode: table.get(row.id)}) for row in rows]


# A semantic ranking under way: its lookup and the query thread's (vector, file hits).
_SemanticQuery = tuple[NearestLookup, Future[tuple[np.ndarray, list[tuple[int, float]]]]]


def _vector_and_file_hits(
    embedder: Embedder, query: str, lookup: NearestLookup, n: int, dim: int
) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """In the query thread: the query's vector (shape (1, width) float32, L2-normalised,
    from the query in the form chunks were embedded in: identifiers split into words) and
    the FAISS file's best n chunks for it (none when the width is not the index's: the
    caller reports that)."""
    vector = np.ascontiguousarray(embedder.encode([model_text(query)]), dtype=np.float32)
    if vector.shape[1] != dim:
        return vector, []
    return vector, lookup.search_file(vector, n)


_query_threads: tuple[int, ThreadPoolExecutor] | None = None  # (pid, the process's executor)


def _query_thread() -> ThreadPoolExecutor:
    """The process's one thread for query vectors (started on first use, and again in a
    forked child, which inherits the executor but not its thread)."""
    global _query_threads
    if _query_threads is None or _query_threads[0] != os.getpid():
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coarch-query")
        _query_threads = (os.getpid(), executor)
    return _query_threads[1]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when it is not there (mid-swap)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _rank_table(ranked: Ranked) -> dict[int, dict[str, float]]:
    """{chunk id: {"rank": 1-based rank, "score": the retriever's score}} of one ranking."""
    return {
        cid: {"rank": rank, "score": round(score, 6)}
        for rank, (cid, score) in enumerate(zip(ranked.ids, ranked.scores), 1)
    }


def _hit(row: ChunkRow, score: float, explain: dict[str, Any] | None = None) -> Hit:
    return Hit(
        path=row.path,
        start_line=row.start_line,
        end_line=row.end_line,
        score=float(score),
        language=row.language,
        symbol=row.symbol,
        snippet=row.text,
        explain=explain,
    )

"""Query -> hits: FAISS vector search and FTS5 BM25 keyword search, fused by reciprocal rank.

Three modes. `semantic` ranks chunks by cosine similarity between the query's vector and the
chunk vectors (FAISS, inner product on L2-normalised rows). `keyword` ranks them by BM25 over the
FTS5 table, with the query's identifiers split exactly as at indexing time (coarch.identifiers).
`hybrid` (the default) fuses the two rankings by reciprocal rank fusion chosen by kind of
query (coarch.fusion), re-ranks the fused top by code-aware rules (coarch.rerank: tests, docs and
vendored code below source, a file with several strong chunks lifted, one long definition shown
once), and when the query is a bare identifier (`parse_config`, `HttpClient.send`) puts the
chunks that *define* it first. Queries are embedded in the form chunks were: identifiers split
into words (coarch.identifiers.model_text). `explain=True` says, per hit, why it is there.

Reading never writes and never blocks an indexer: SQLite is opened read-only and every search
runs in one read transaction (it sees the last committed state); the FAISS file is
memory-mapped. While an indexer runs, the FAISS file lags behind SQLite: chunks it does not cover
yet are scored from their vectors in SQLite, streamed in batches, and chunks deleted since it was
written are dropped, so results always match the committed state.

Filters (`lang`, `path` globs with `!` exclusions) are applied inside the retrieval (an FTS5 join,
a FAISS id selector), so `k` hits come back whenever `k` chunks pass the filters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coarch.definitions import DEFINITION_TIERS, ranked_definitions
from coarch.errors import CoarchError, IndexNotFoundError, ModelMismatchError, UsageError
from coarch.filters import Filters
from coarch.fusion import Ranked, fusion_for, query_kind
from coarch.hit import Hit
from coarch.identifiers import model_text, parse_identifier, query_terms
from coarch.rerank import RERANK_DEPTH, Candidate, rerank
from coarch.store import VECTOR_DTYPE, ChunkRow, Store, corruption_reported

if TYPE_CHECKING:
    from coarch.embedder import Embedder

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("hybrid", "semantic", "keyword")
DEFAULT_K = 10
MAX_K = 1000

# Depth of each ranked list fused in hybrid mode: deep enough that a chunk ranked well by one
# retriever and moderately by the other is found, shallow enough to stay cheap.
FUSION_DEPTH = 100
# BM25 weights of the FTS5 columns (path_terms, symbol_terms, body_terms).
BM25_WEIGHTS = (0.5, 2.0, 1.0)
# At most this many chunks whose symbol mentions a queried identifier are examined.
DEFINITION_CANDIDATES = 500
# Vectors read per batch when scoring chunks the FAISS file does not cover.
TAIL_BATCH = 4096


# ---- FAISS ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _faiss_single_thread() -> Iterator[None]:
    """One query is too small to share: OpenMP start-up costs more than the scan (measured
    ~30 ms with 2 threads against ~3 ms with 1 on a 50,000-row flat index)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def load_faiss(path: Path) -> Any:
    """Opens a FAISS file read-only, memory-mapping the vectors where the index type allows
    (flat codes: IO_FLAG_MMAP_IFC; IVF lists: IO_FLAG_MMAP), else reading it whole."""
    import faiss

    read_only = getattr(faiss, "IO_FLAG_READ_ONLY", 0)
    attempts = [getattr(faiss, "IO_FLAG_MMAP_IFC", 0), getattr(faiss, "IO_FLAG_MMAP", 0)]
    for flag in attempts:
        if not flag:
            continue
        try:
            return faiss.read_index(str(path), flag | read_only)
        except RuntimeError as exc:
            log.debug("faiss mmap flag %#x refused for %s: %s", flag, path, exc)
    return faiss.read_index(str(path))


# ---- the searcher ---------------------------------------------------------------------------------


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
        self._faiss: Any = None
        self._faiss_key: tuple[object, ...] | None = None
        self._embedder_cache: tuple[tuple[str, str], Embedder] | None = None

    @property
    def dim(self) -> int:
        """Width of the index's vectors (0 until a first `coarch index` has loaded a model)."""
        return int(self.store.get_meta("dim") or 0)

    # -- lifecycle --

    def close(self) -> None:
        self._faiss = None
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
        self._faiss, self._faiss_key = None, None

    def _search(self, query: str, k: int, mode: str, filters: Filters,
                explain: bool) -> list[Hit]:
        # One read transaction: FTS5, chunks and vectors all show the same committed state.
        with self.store.read_snapshot():
            self._register_filter(filters)
            if mode in ("keyword", "semantic"):
                retrieve = self._keyword if mode == "keyword" else self._semantic
                ranked = retrieve(query, k, filters)
                return self._hits(ranked.ids, ranked.scores, mode if explain else None)
            return self._hybrid(query, k, filters, explain)

    # -- retrieval --

    def rankings(self, query: str, depth: int = FUSION_DEPTH,
                 filters: Filters | None = None) -> tuple[Ranked, Ranked]:
        """The (semantic, keyword) rankings hybrid mode fuses, `depth` deep, read in one
        snapshot (for the evaluation's fusion sweep; a search needs none of this)."""
        filters = filters or Filters()
        self._follow_swap()
        with corruption_reported(self.index_dir), self.store.read_snapshot():
            self._register_filter(filters)
            return self._semantic(query, depth, filters), self._keyword(query, depth, filters)

    def _hybrid(self, query: str, k: int, filters: Filters, explain: bool) -> list[Hit]:
        depth = max(FUSION_DEPTH, k)
        keyword = self._keyword(query, depth, filters)
        semantic = self._semantic(query, depth, filters)
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
            _hit(row, score, {
                **{name: table.get(row.id) for name, table in ranks.items()},
                "fused": round(fused.get(row.id, 0.0), 6),
                "rules": rules.get(row.id, {}),
                "definition_tier": tiers.get(row.id),
            })
            for row, score in zip(rows, final_scores)
        ]

    def _rerank(self, query: str, order: list[int], fused: dict[int, float],
                k: int) -> tuple[list[int], dict[int, float], dict[int, dict[str, float]]]:
        """The fused order after coarch.rerank's rules over its top: (order, scores, the
        rules' score changes per chunk). Scores stay in (0, 1]."""
        top = order[: max(RERANK_DEPTH, k)]
        candidates = [
            Candidate(row.id, row.path, row.start_line, row.end_line, row.symbols, fused[row.id])
            for row in self.store.chunks_by_ids(top)
        ]
        reranked = rerank(query, candidates)
        scale = max([1.0, *(c.score for c in reranked)])
        scores = {c.id: c.score / scale for c in reranked}
        lowest = min(scores.values(), default=1.0)
        rest = order[len(top):]
        for cid in rest:  # below every re-ranked candidate, in fused order
            scores[cid] = min(fused[cid], lowest)
        rules = {c.id: c.rules for c in reranked if c.rules}
        return [c.id for c in reranked] + rest, scores, rules

    def _keyword(self, query: str, n: int, filters: Filters) -> Ranked:
        expr = query_terms(query)
        if not expr:
            return Ranked([], [])
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        join, where = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid, bm25(chunks_fts, {weights}) AS s FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY s LIMIT ?"
        )
        rows = self.store.conn.execute(sql, (expr, n)).fetchall()
        return Ranked([int(r[0]) for r in rows], [-float(r[1]) for r in rows])

    def _semantic(self, query: str, n: int, filters: Filters) -> Ranked:
        if self.dim <= 0 or not self._has_chunks():
            return Ranked([], [])
        vector = self._embed(query)
        found: dict[int, float] = {}
        index, covered_max = self._vector_index()
        allowed: np.ndarray | None = None
        if filters.active:
            # Only allowed ids are scored, so the top n are all hits that pass the filters.
            allowed = self._allowed_ids(filters)
            if allowed.size == 0:
                return Ranked([], [])
        if index is not None and index.ntotal > 0:
            found.update(self._faiss_search(index, vector, n, allowed, covered_max is not None))
        if covered_max is not None:
            for cid, score in self._scan_tail(vector, n, covered_max, filters):
                if score > found.get(cid, -np.inf):
                    found[cid] = score
        order = sorted(found, key=lambda cid: (-found[cid], cid))[:n]
        return Ranked(order, [found[c] for c in order])

    def _faiss_search(
        self, index: Any, vector: np.ndarray, n: int, allowed: np.ndarray | None, stale: bool
    ) -> list[tuple[int, float]]:
        """The best n live chunks in the FAISS file. A stale file may hold chunks deleted
        since it was written: those are dropped, fetching deeper until n live ones are found
        (the filter's id selector, built from SQLite, already leaves them out)."""
        import faiss

        params: Any = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
            inner = faiss.downcast_index(index)
            if isinstance(inner, faiss.IndexIVF):
                params = faiss.SearchParametersIVF()
                params.nprobe = inner.nprobe
            else:
                params = faiss.SearchParameters()
            params.sel = selector
            stale = False
        total = int(index.ntotal)
        want = min(n, total)
        while True:
            # shape: vector (1, dim) float32 -> scores, ids (1, want)
            with _faiss_single_thread():
                if params is None:
                    scores, ids = index.search(vector, want)
                else:
                    scores, ids = index.search(vector, want, params=params)
            hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            if not stale:
                return hits
            live = self._live_ids([cid for cid, _ in hits])
            kept = [(cid, s) for cid, s in hits if cid in live]
            if len(kept) >= n or want >= total:
                return kept
            want = min(total, want * 4)

    def _scan_tail(
        self, vector: np.ndarray, n: int, after_id: int, filters: Filters
    ) -> list[tuple[int, float]]:
        """Scores the committed chunks with id > after_id (not in the FAISS file yet) from their
        vectors in SQLite, one batch at a time: memory stays at one batch plus the best n."""
        join, where = self._filter_sql(filters, "c.id", chunks_alias="c")
        sql = (
            f"SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            f"{join} WHERE c.id > ?{where}"
        )
        cursor = self.store.conn.execute(sql, (after_id,))
        best_ids = np.empty(0, dtype=np.int64)
        best_scores = np.empty(0, dtype=np.float32)
        query = vector[0]
        while rows := cursor.fetchmany(TAIL_BATCH):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            # shape: (len(rows), dim) float32
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE)
            vecs = vecs.reshape(len(rows), -1)
            if vecs.shape[1] != query.shape[0]:
                continue
            scores = vecs @ query
            best_ids = np.concatenate([best_ids, ids])
            best_scores = np.concatenate([best_scores, scores.astype(np.float32)])
            if best_ids.size > n:
                keep = np.argpartition(-best_scores, n)[:n]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        return [(int(i), float(s)) for i, s in zip(best_ids, best_scores)]

    def _definitions(
        self, ident: str, fused_order: list[int], filters: Filters
    ) -> list[tuple[ChunkRow, tuple[int, int]]]:
        """Chunks that define `ident`, best first: by (tier, indent), then fused rank, then
        position."""
        last = ident.rsplit(".", 1)[-1]
        expr = query_terms(last)
        if not expr:
            return []
        join, where = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY rank LIMIT ?"
        )
        # Chunks whose symbol holds the name; chunks without a symbol (languages chunked
        # without a grammar) that define it are among the fused hits, which keyword search
        # ranks by the exact identifier.
        exact = '"' + last.lower().replace('"', '""') + '"'
        candidates = [
            int(r[0])
            for r in self.store.conn.execute(
                sql, (f"{{symbol_terms}} : {exact}", DEFINITION_CANDIDATES)
            )
        ]
        ids = list(dict.fromkeys([*fused_order[:FUSION_DEPTH], *candidates]))
        return ranked_definitions(ident, self.store.chunks_by_ids(ids), fused_order)

    # -- helpers --

    def _embed(self, query: str) -> np.ndarray:
        embedder = self._embedder()
        # The query in the form chunks were embedded in (identifiers split into words).
        vector = embedder.encode([model_text(query)])  # shape: (1, dim) float32, L2-normalised
        if vector.shape[1] != self.dim:
            raise ModelMismatchError(
                f"the model gives {vector.shape[1]}-wide vectors, the index holds {self.dim}",
                hint=f"run `coarch index --full {self.store.get_meta('root') or 'PATH'}`",
            )
        return np.ascontiguousarray(vector, dtype=np.float32)

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
                max_len = int(meta.get("max_seq_length") or 0)
                from coarch.embedder import get_embedder

                embedder = get_embedder(folder, indexed_id, max_len, precision)
                self._embedder_cache = ((indexed_id, precision), embedder)
                return embedder
        tried = candidates[0] if candidates else "no model folder"
        raise ModelMismatchError(
            f"index at {self.index_dir} was built with model {indexed_id}, not {tried}",
            hint=f"rebuild it: `coarch index --full {meta.get('root') or 'PATH'}`"
            + (" (or pass the same --model)" if self._model_arg is None else ""),
        )

    def _vector_index(self) -> tuple[Any, int | None]:
        """(FAISS index or None, id after which chunks must be scanned from SQLite or None).

        The FAISS file is reopened when a newer one has been put in place. A missing or
        unreadable file means every chunk is scanned from SQLite (correct, slower)."""
        from coarch import vectors as faiss_file

        meta = self.store.meta()
        path = faiss_file.faiss_path(self.index_dir)
        try:
            st = path.stat()
        except OSError:
            self._faiss, self._faiss_key = None, None
            return None, 0
        key = (meta.get("faiss_generation"), meta.get("faiss_checksum"), st.st_mtime_ns,
               st.st_ino)
        if self._faiss_key != key:
            self._faiss, self._faiss_key = None, key
            # Checked once per file opened: FAISS reads damaged bytes without complaint.
            if faiss_file.check_file(path, meta) in ("corrupt", "missing"):
                log.warning("%s is damaged: using the vectors in SQLite (run `coarch index`"
                            " to rewrite it)", path)
                return None, 0
            try:
                self._faiss = load_faiss(path)
            except RuntimeError as exc:
                log.warning("cannot read %s (%s): scanning vectors from SQLite", path, exc)
                return None, 0
            if self._faiss.d != self.dim:
                log.warning("%s has width %d, index %d: ignoring it", path, self._faiss.d, self.dim)
                self._faiss = None
        if self._faiss is None:
            return None, 0
        if meta.get("faiss_generation") == meta.get("generation"):
            return self._faiss, None
        try:
            covered = int(meta.get("faiss_max_chunk_id") or -1)
        except ValueError:
            covered = -1
        if covered < 0:
            return None, 0
        return self._faiss, covered

    def _has_chunks(self) -> bool:
        return self.store.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None

    def _allowed_ids(self, filters: Filters) -> np.ndarray:
        join, where = self._filter_sql(filters, "c.id", chunks_alias="c")
        sql = f"SELECT c.id FROM chunks c{join} WHERE 1{where}"
        ids = [r[0] for r in self.store.conn.execute(sql)]
        return np.asarray(ids, dtype=np.int64)

    def _live_ids(self, ids: list[int]) -> set[int]:
        live: set[int] = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            live.update(
                r[0]
                for r in self.store.conn.execute(
                    f"SELECT id FROM chunks WHERE id IN ({marks})", part
                )
            )
        return live

    def _register_filter(self, filters: Filters) -> None:
        matcher = filters.path_matcher()
        self.store.conn.create_function("coarch_path_ok", 1, matcher, deterministic=True)

    def _filter_sql(
        self, filters: Filters, id_column: str, chunks_alias: str | None = None
    ) -> tuple[str, str]:
        """(JOIN clause, AND-prefixed WHERE clause) restricting `id_column` to chunks that pass
        the filters; two empty strings when there are none."""
        if not filters.active:
            return "", ""
        join = ""
        c = chunks_alias
        if c is None:
            c = "fc"
            join += f" JOIN chunks fc ON fc.id = {id_column}"
        join += f" JOIN files ff ON ff.id = {c}.file_id"
        where = ""
        if filters.languages:
            quoted = ",".join(_sql_str(x) for x in sorted(filters.languages))
            where += f" AND lower(coalesce({c}.language, ff.language, '')) IN ({quoted})"
        if filters.includes or filters.excludes:
            where += " AND coarch_path_ok(ff.path)"
        return join, where

    def _hits(self, ids: list[int], scores: list[float],
              explained_mode: str | None = None) -> list[Hit]:
        """Hits of one retriever's ranking; with `explained_mode`, each tells its rank and
        score in it."""
        rows = self.store.chunks_by_ids(ids)
        score_of = dict(zip(ids, scores))
        if explained_mode is None:
            return [_hit(row, score_of[row.id]) for row in rows]
        table = _rank_table(Ranked(ids, scores))
        return [_hit(row, score_of[row.id], {explained_mode: table.get(row.id)})
                for row in rows]


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when it is not there (mid-swap)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rank_table(ranked: Ranked) -> dict[int, dict[str, float]]:
    """{chunk id: {"rank": 1-based rank, "score": the retriever's score}} of one ranking."""
    return {cid: {"rank": rank, "score": round(score, 6)}
            for rank, (cid, score) in enumerate(zip(ranked.ids, ranked.scores), 1)}


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

"""What status and search read: counts, chunk rows by id, chunk vectors in batches, and the
queries of keyword search and of the definition finder, with the search filters applied inside
them (a JOIN and WHERE clause; paths through an SQL function).

Call these inside Store.read_snapshot() where several must see the same committed state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from coarch.store.rows import VECTOR_DTYPE, ChunkRow, decode_symbols

if TYPE_CHECKING:
    from coarch.filters import Filters

# BM25 weights of the FTS5 columns (path_terms, symbol_terms, body_terms).
BM25_WEIGHTS = (0.5, 2.0, 1.0)
# Ids per `IN (...)` list: well under SQLite's limit on bound parameters.
_ID_BATCH = 500
# The SQL function that applies a search's path globs (coarch.filters.PathMatcher).
_PATH_FUNCTION = "coarch_path_ok"


class ChunkReads:
    """Reads of the chunks for status and search (a part of Store)."""

    conn: sqlite3.Connection
    _path_filters: Filters | None

    # ---- status ------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        q = self.conn.execute
        return {
            "files": q("SELECT count(*) FROM files WHERE skipped IS NULL").fetchone()[0],
            "skipped_files": q("SELECT count(*) FROM files WHERE skipped IS NOT NULL").fetchone()[
                0
            ],
            "chunks": q("SELECT count(*) FROM chunks").fetchone()[0],
            "vectors": q("SELECT count(*) FROM vectors").fetchone()[0],
            "chunks_without_vector": q(
                "SELECT count(*) FROM chunks c WHERE NOT EXISTS"
                " (SELECT 1 FROM vectors v WHERE v.text_hash = c.text_hash)"
            ).fetchone()[0],
            "languages": self.chunks_per_language(),
        }

    def chunks_per_language(self) -> dict[str, int]:
        """Chunks per language, most first; chunks of no known language under "other"."""
        rows = self.conn.execute(
            "SELECT coalesce(language, 'other'), count(*) AS n FROM chunks"
            " GROUP BY 1 ORDER BY n DESC, 1"
        ).fetchall()
        return {str(language): int(n) for language, n in rows}

    def chunk_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def max_chunk_id(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0])

    def has_chunks(self) -> bool:
        return self.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None

    # ---- chunks by id ------------------------------------------------------------------------

    def chunks_by_ids(self, ids: Iterable[int]) -> list[ChunkRow]:
        """Chunk rows for the given ids, in the order asked; unknown ids are left out."""
        wanted = [int(i) for i in ids]
        found: dict[int, ChunkRow] = {}
        for i in range(0, len(wanted), _ID_BATCH):
            part = wanted[i : i + _ID_BATCH]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                "SELECT c.id, f.path, c.start_line, c.end_line, c.language, c.symbol, c.text"
                f" FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})",
                part,
            ):
                cid, path, start, end, language, symbol, text = row
                found[cid] = ChunkRow(cid, path, start, end, language, decode_symbols(symbol), text)
        return [found[i] for i in wanted if i in found]

    def symbols_by_ids(self, ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        """{chunk id: its symbol names} for the given ids (unknown ids left out), without
        reading their text."""
        found: dict[int, tuple[str, ...]] = {}
        for i in range(0, len(ids), _ID_BATCH):
            part = [int(x) for x in ids[i : i + _ID_BATCH]]
            marks = ",".join("?" * len(part))
            for cid, symbol in self.conn.execute(
                f"SELECT id, symbol FROM chunks WHERE id IN ({marks})", part
            ):
                found[cid] = decode_symbols(symbol)
        return found

    def live_ids(self, ids: list[int]) -> set[int]:
        """The ids of `ids` that are chunks of the committed state."""
        live: set[int] = set()
        for i in range(0, len(ids), _ID_BATCH):
            part = ids[i : i + _ID_BATCH]
            marks = ",".join("?" * len(part))
            live.update(
                r[0]
                for r in self.conn.execute(f"SELECT id FROM chunks WHERE id IN ({marks})", part)
            )
        return live

    def allowed_ids(self, filters: Filters) -> np.ndarray:
        """Ids (int64) of every chunk that passes the filters."""
        join, where, params = self._filter_sql(filters, "c.id", chunks_alias="c")
        sql = f"SELECT c.id FROM chunks c{join} WHERE 1{where}"
        ids = [r[0] for r in self.conn.execute(sql, params)]
        return np.asarray(ids, dtype=np.int64)

    # ---- vectors -----------------------------------------------------------------------------

    def iter_chunk_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 [n], vectors float32 [n, dim]) of every chunk in id order, in batches.
        Call inside read_snapshot() for a consistent pass."""
        cur = self.conn.execute(
            "SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            " ORDER BY c.id"
        )
        yield from _vector_batches(cur, batch)

    def vectors_after(
        self, after_id: int, filters: Filters, batch: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """As iter_chunk_vectors for the chunks with id > after_id that pass the filters, in no
        particular order."""
        join, where, params = self._filter_sql(filters, "c.id", chunks_alias="c")
        cur = self.conn.execute(
            f"SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            f"{join} WHERE c.id > ?{where}",
            (after_id, *params),
        )
        yield from _vector_batches(cur, batch)

    # ---- keyword search ----------------------------------------------------------------------

    def keyword_ranking(self, expr: str, n: int, filters: Filters) -> tuple[list[int], list[float]]:
        """The best `n` chunks for an FTS5 query expression by BM25 over the weighted columns
        (BM25_WEIGHTS), best first: (ids, scores), scores sign-flipped so higher is better."""
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        join, where, params = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid, bm25(chunks_fts, {weights}) AS s FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY s LIMIT ?"
        )
        rows = self.conn.execute(sql, (expr, *params, n)).fetchall()
        return [int(r[0]) for r in rows], [-float(r[1]) for r in rows]

    def symbol_matches(self, name: str, limit: int, filters: Filters) -> list[int]:
        """Ids of up to `limit` chunks whose symbol terms hold `name` (one term, case folded),
        best FTS5 rank first."""
        join, where, params = self._filter_sql(filters, "chunks_fts.rowid")
        sql = (
            f"SELECT chunks_fts.rowid FROM chunks_fts{join}"
            f" WHERE chunks_fts MATCH ?{where} ORDER BY rank LIMIT ?"
        )
        exact = '"' + name.lower().replace('"', '""') + '"'
        expr = f"{{symbol_terms}} : {exact}"
        return [int(r[0]) for r in self.conn.execute(sql, (expr, *params, limit))]

    # ---- filters -----------------------------------------------------------------------------

    def _filter_sql(
        self, filters: Filters, id_column: str, chunks_alias: str | None = None
    ) -> tuple[str, str, tuple[str, ...]]:
        """(JOIN clause, AND-prefixed WHERE clause, its parameters) restricting `id_column` to
        chunks that pass the filters; empty when there are none. Path globs are applied by an
        SQL function, registered here for these filters."""
        if not filters.active:
            return "", "", ()
        join = ""
        c = chunks_alias
        if c is None:
            c = "fc"
            join += f" JOIN chunks fc ON fc.id = {id_column}"
        join += f" JOIN files ff ON ff.id = {c}.file_id"
        where = ""
        params: tuple[str, ...] = ()
        if filters.languages:
            params = tuple(sorted(filters.languages))
            marks = ",".join("?" * len(params))
            where += f" AND lower(coalesce({c}.language, ff.language, '')) IN ({marks})"
        if filters.by_path:
            if self._path_filters is not filters:
                self.conn.create_function(
                    _PATH_FUNCTION, 1, filters.path_matcher(), deterministic=True
                )
                self._path_filters = filters
            where += f" AND {_PATH_FUNCTION}(ff.path)"
        return join, where, params


def _vector_batches(cursor: sqlite3.Cursor, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows (id, vector bytes) of `cursor` as (ids int64 [n], vectors float32 [n, dim])."""
    while rows := cursor.fetchmany(batch):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE)
        yield ids, vecs.reshape(len(rows), -1).astype(np.float32, copy=False)

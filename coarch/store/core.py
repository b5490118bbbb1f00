"""`Store`: one open index.sqlite, its transactions and its meta table.

Writers go through `Store.transaction()`; readers open the file read-only and see the last
committed state while an indexer runs (`read_snapshot()` keeps one state across queries).
The rows it reads and writes are the concerns of its parts: coarch.store.files (what the
indexer writes), coarch.store.reads (what status and search read), coarch.store.fts (the
keyword table's rows).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from coarch.errors import CorruptIndexError, IndexNotFoundError
from coarch.location import DB_FILE
from coarch.store import fts, schema
from coarch.store.damage import CORRUPT_HINT
from coarch.store.files import FileRows
from coarch.store.reads import ChunkReads

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

if TYPE_CHECKING:
    from coarch.filters import Filters

log = logging.getLogger(__name__)


class Store(FileRows, ChunkReads):
    """One index.sqlite. Not thread-safe: use it from the thread that opened it."""

    def __init__(self, index_dir: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / DB_FILE
        self.readonly = readonly
        self._generation_bumped = False
        self._path_filters: Filters | None = None
        if readonly:
            if not self.path.is_file():
                raise IndexNotFoundError(
                    f"no index at {self.index_dir}", hint="run `coarch index PATH` first"
                )
            uri = f"file:{self.path}?mode=ro"
            self.conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            if schema.prepare(self.conn, readonly):
                self._rebuild_fts()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CorruptIndexError(
                f"index database {self.path} is unreadable: {exc}", hint=CORRUPT_HINT
            ) from exc

    def _rebuild_fts(self) -> None:
        """Re-derives every FTS5 row from the stored chunks under this process's rules, so
        that later deletes remove exactly what was inserted. The writer holds the index lock,
        so no other writer derives terms under other rules meanwhile."""
        recorded = self.get_meta("fts_rules")
        started = time.monotonic()
        with self.transaction():
            count = fts.rebuild(self.conn)
            self.set_meta("fts_rules", schema.fts_rules())
        log.info(
            "keyword index rebuilt (%s -> %s): %d chunks in %.1fs",
            recorded or "unrecorded",
            schema.fts_rules(),
            count,
            time.monotonic() - started,
        )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if not self.readonly:
                self.conn.execute("PRAGMA optimize")
            self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; ROLLBACK on any exception, a failed COMMIT included
        (SQLite leaves the transaction open when COMMIT fails, e.g. on a full disk or a deferred
        constraint, and every later write would then join it and be lost with it). Changes to
        chunks bump the `generation` meta key once per transaction (FAISS staleness check)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self._generation_bumped = False
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same committed state."""
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("COMMIT")

    def quick_check(self) -> str | None:
        """None when SQLite's `PRAGMA quick_check` finds the file sound, else its first
        finding (or the error that stopped it)."""
        try:
            rows = self.conn.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        first = str(rows[0][0]) if rows else "no answer"
        return None if first == "ok" else first

    # ---- meta --------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | float | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value))
            )

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def precision(self) -> str | None:
        """The precision of the index's vectors: as recorded; fp32 for an index built before
        precisions were recorded (all were fp32); None for an index never built."""
        recorded = self.get_meta("precision")
        if recorded:
            return recorded
        return "fp32" if self.get_meta("model_id") else None

"""The index's source of truth: one SQLite file (WAL) with files, chunks, vectors and FTS5.

Writers go through `Store.transaction()`; a file's row, its chunks, their FTS rows and their
vectors are written in the same transaction, so after any crash a file is either fully indexed
or not at all. Readers open the file read-only and see the last committed state while an
indexer runs. The FAISS file (coarch.vectors) is derived from this one.

Schema (coarch.search reads it too):
  meta(key, value)
  files(id, path UNIQUE, size, mtime_ns, content_hash, language, skipped)
      skipped: NULL for an indexed file, else why discovery skipped it (so an unchanged skipped
      file is not read again)
  chunks(id AUTOINCREMENT, file_id -> files ON DELETE CASCADE, start_line, end_line, language,
         symbol, text, text_hash)                       lines 1-based inclusive
      symbol: NULL (none), the one name as is when it holds no ',' and does not start with
      '[', else a JSON array of names (see encode_symbols)
      text_hash: key of the chunk's vector: the hash of the text that vector is of (for a
      renamed file's re-used vectors, the text under the old path)
  vectors(text_hash PRIMARY KEY, vector)               float32 little-endian, dim floats
  chunks_fts(path_terms, symbol_terms, body_terms)     contentless FTS5, rowid = chunks.id

The FTS5 table is contentless (it does not store its text twice), so deleting a row needs the
very terms it was inserted with, re-derived from the chunk's stored columns. Those terms depend
on the term rules (coarch.identifiers.TERMS_VERSION) and on Python's Unicode tables (behind
`str.lower` and `\\w`); meta key `fts_rules` records both, and a writer that opens an index
recorded under other rules rebuilds chunks_fts from the chunks before touching it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coarch.chunking import symbol_text
from coarch.discovery import content_hash
from coarch.errors import CorruptIndexError, IndexNotFoundError, disk_full_error
from coarch.identifiers import TERMS_VERSION, index_terms
from coarch.location import DB_FILE, FAISS_FILE

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
VECTOR_DTYPE = np.dtype("<f4")
APP_MARKER = "coarch"  # meta.app of every index coarch creates
CORRUPT_HINT = "`coarch index --full PATH` rebuilds it"
# SQLite's primary result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPTION_CODES = frozenset({11, 26})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    language TEXT,
    skipped TEXT
);
CREATE INDEX IF NOT EXISTS files_content_hash ON files(content_hash);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    language TEXT,
    symbol TEXT,
    text TEXT NOT NULL,
    text_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id);
CREATE INDEX IF NOT EXISTS chunks_text_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS vectors(text_hash TEXT PRIMARY KEY, vector BLOB NOT NULL)
    WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    path_terms, symbol_terms, body_terms,
    content='', tokenize="unicode61 tokenchars '_'"
);
"""


def fts_rules() -> str:
    """What decides a chunk's FTS5 terms in this process: the term rules' version and the
    Unicode version of Python's tables (a Python upgrade may change how a word is cut or
    lowercased)."""
    return f"terms {TERMS_VERSION}, unicode {unicodedata.unidata_version}"


def text_hash(embed_text: str) -> str:
    """Key of the vector cache: a hash of exactly what the model embeds."""
    return content_hash(embed_text.encode("utf-8", errors="surrogatepass"))


@dataclass(frozen=True, slots=True)
class FileState:
    id: int
    size: int
    mtime_ns: int
    content_hash: str
    skipped: str | None


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk as search reads it back."""

    id: int
    path: str
    start_line: int
    end_line: int
    language: str | None
    symbols: tuple[str, ...]
    text: str

    @property
    def symbol(self) -> str | None:
        return symbol_text(self.symbols)


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk to write: its place, its texts and the key of its vector."""

    start_line: int
    end_line: int
    language: str | None
    symbols: tuple[str, ...]
    text: str
    text_hash: str

    @property
    def symbol(self) -> str | None:
        return symbol_text(self.symbols)


def encode_symbols(symbols: Sequence[str]) -> str | None:
    """The `symbol` column of a chunk. One plain name stays readable as is; a list, or a name
    that could be read as one (a comma, a leading '['), is a JSON array."""
    if not symbols:
        return None
    if len(symbols) == 1 and "," not in symbols[0] and not symbols[0].startswith("["):
        return symbols[0]
    return json.dumps(list(symbols), ensure_ascii=False)


def decode_symbols(stored: str | None) -> tuple[str, ...]:
    """The names of a `symbol` column. Rows written before names were kept as a list (chunker
    1; re-chunked by the next run) joined them with ", ": those are split there."""
    if not stored:
        return ()
    if stored.startswith("["):
        try:
            names = json.loads(stored)
        except ValueError:
            names = None
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return tuple(names)
    return tuple(part for part in stored.split(", ") if part)


def _fts_values(path: str, stored_symbol: str | None, text: str) -> tuple[str, str, str]:
    """The FTS5 row of a chunk. Deleting from a contentless table needs these exact values
    again, so they are always computed here and only from the stored columns (and under the
    rules `fts_rules` records)."""
    symbols = symbol_text(decode_symbols(stored_symbol)) or ""
    return index_terms(path), index_terms(symbols), index_terms(text)


class Store:
    """One index.sqlite. Not thread-safe: use it from the thread that opened it."""

    def __init__(self, index_dir: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.index_dir = Path(index_dir)
        self.path = self.index_dir / DB_FILE
        self.readonly = readonly
        self._generation_bumped = False
        if readonly:
            if not self.path.is_file():
                raise IndexNotFoundError(f"no index at {self.index_dir}",
                                         hint="run `coarch index PATH` first")
            uri = f"file:{self.path}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                                        check_same_thread=False)
        else:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CorruptIndexError(f"index database {self.path} is unreadable: {exc}",
                                    hint=CORRUPT_HINT) from exc

    def _setup(self) -> None:
        c = self.conn
        c.execute("PRAGMA busy_timeout = 10000")
        if self.readonly:
            c.execute("PRAGMA query_only = ON")
            version = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                raise sqlite3.DatabaseError("no schema version")
            return
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = NORMAL")
        c.execute("PRAGMA foreign_keys = ON")
        c.execute("PRAGMA temp_store = MEMORY")
        version = None
        exists = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if exists:
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = row[0] if row else None
        if version is not None and version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
        if version is not None:
            c.executescript(_SCHEMA)
            if self.get_meta("fts_rules") != fts_rules():
                self._rebuild_fts()
            return
        # One transaction: a process killed while creating the file leaves either nothing or a
        # whole, marked index (never tables without the marker, which would look foreign).
        c.executescript(
            "BEGIN IMMEDIATE;" + _SCHEMA
            + "INSERT OR REPLACE INTO meta(key, value) VALUES"
            f" ('schema_version', '{SCHEMA_VERSION}'), ('app', '{APP_MARKER}'),"
            f" ('created_at', '{time.time():.3f}'), ('generation', '0'),"
            f" ('fts_rules', '{fts_rules()}');"  # quote-free: digits, letters, dots
            "COMMIT;")

    def _rebuild_fts(self) -> None:
        """Re-derives every FTS5 row from the stored chunks under this process's rules, so
        that later deletes remove exactly what was inserted. The writer holds the index lock,
        so no other writer derives terms under other rules meanwhile. Chunk ids are kept: the
        FAISS file stays valid."""
        recorded = self.get_meta("fts_rules")
        started = time.monotonic()
        count = 0
        with self.transaction():
            self.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
            rows = self.conn.execute(
                "SELECT c.id, f.path, c.symbol, c.text FROM chunks c"
                " JOIN files f ON f.id = c.file_id ORDER BY c.id")
            while batch := rows.fetchmany(1000):
                self.conn.executemany(
                    "INSERT INTO chunks_fts(rowid, path_terms, symbol_terms, body_terms)"
                    " VALUES (?, ?, ?, ?)",
                    [(cid, *_fts_values(path, symbol, text)) for cid, path, symbol, text in batch])
                count += len(batch)
            self.set_meta("fts_rules", fts_rules())
        log.info("keyword index rebuilt (%s -> %s): %d chunks in %.1fs", recorded or "unrecorded",
                 fts_rules(), count, time.monotonic() - started)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if not self.readonly:
                self.conn.execute("PRAGMA optimize")
            self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions and meta ---------------------------------------------------------------

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

    def _bump_generation(self) -> None:
        if not self._generation_bumped:
            self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            self._generation_bumped = True

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def precision(self) -> str | None:
        """The precision of the index's vectors: as recorded; fp32 for an index built before
        precisions were recorded (all were fp32); None for an index never built."""
        recorded = self.get_meta("precision")
        if recorded:
            return recorded
        return "fp32" if self.get_meta("model_id") else None

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | float | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                              (key, str(value)))

    def quick_check(self) -> str | None:
        """None when SQLite's `PRAGMA quick_check` finds the file sound, else its first
        finding (or the error that stopped it)."""
        try:
            rows = self.conn.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        first = str(rows[0][0]) if rows else "no answer"
        return None if first == "ok" else first

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def reset(self, keep_vectors: bool = False) -> None:
        """Empties the index (inside the caller's transaction): files, chunks, FTS rows and,
        unless kept, the vector cache."""
        self.conn.execute("DELETE FROM chunks")
        self.conn.execute("DELETE FROM files")
        self.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
        if not keep_vectors:
            self.conn.execute("DELETE FROM vectors")
        self._bump_generation()

    # ---- files -------------------------------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        """Every file row by path (paths and stat data only: small per file)."""
        return {
            path: FileState(fid, size, mtime, chash, skipped)
            for fid, path, size, mtime, chash, skipped in self.conn.execute(
                "SELECT id, path, size, mtime_ns, content_hash, skipped FROM files")
        }

    def file_state(self, path: str) -> FileState | None:
        row = self.conn.execute(
            "SELECT id, size, mtime_ns, content_hash, skipped FROM files WHERE path = ?",
            (path,)).fetchone()
        return None if row is None else FileState(*row)

    def forget_file_states(self) -> None:
        """Makes every file look changed (unknown mtime and content) so that the next pass
        reads and chunks each again; chunks and cached vectors stay until replaced."""
        self.conn.execute("UPDATE files SET mtime_ns = -1, content_hash = ''")

    def update_stat(self, path: str, size: int, mtime_ns: int) -> None:
        """Records a new size and mtime for a file whose content did not change."""
        self.conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?",
                          (size, mtime_ns, path))

    def put_skipped(self, path: str, size: int, mtime_ns: int, content_hash: str,
                    reason: str) -> None:
        """Records a file discovery skipped for its content, so it is not read again while
        unchanged. Any chunks it had are removed."""
        self._delete_chunks_of(path)
        self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, content_hash, language, skipped)"
            " VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
            " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,"
            " language = NULL, skipped = excluded.skipped",
            (path, size, mtime_ns, content_hash, reason))

    def put_file(self, path: str, size: int, mtime_ns: int, content_hash: str,
                 language: str | None, chunks: Sequence[NewChunk]) -> int:
        """Writes a file and its chunks (replacing what it had). Every chunk's vector must
        already be in the vectors table or be written in the same transaction. Returns the
        file's id."""
        self._delete_chunks_of(path)
        cur = self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, content_hash, language, skipped)"
            " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
            " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,"
            " language = excluded.language, skipped = NULL RETURNING id",
            (path, size, mtime_ns, content_hash, language))
        file_id = int(cur.fetchone()[0])
        insert = ("INSERT INTO chunks(file_id, start_line, end_line, language, symbol, text,"
                  " text_hash) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id")
        fts_rows = []
        for ch in chunks:
            stored_symbol = encode_symbols(ch.symbols)
            chunk_id = self.conn.execute(insert, (file_id, ch.start_line, ch.end_line,
                                                  ch.language, stored_symbol, ch.text,
                                                  ch.text_hash)).fetchone()[0]
            fts_rows.append((chunk_id, *_fts_values(path, stored_symbol, ch.text)))
        self.conn.executemany(
            "INSERT INTO chunks_fts(rowid, path_terms, symbol_terms, body_terms)"
            " VALUES (?, ?, ?, ?)", fts_rows)
        if chunks:
            self._bump_generation()
        return file_id

    def remove_file(self, path: str) -> None:
        self._delete_chunks_of(path)
        self.conn.execute("DELETE FROM files WHERE path = ?", (path,))

    def _delete_chunks_of(self, path: str) -> None:
        rows = self.conn.execute(
            "SELECT c.id, c.symbol, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
            " WHERE f.path = ?", (path,)).fetchall()
        if not rows:
            return
        self.conn.executemany(
            "INSERT INTO chunks_fts(chunks_fts, rowid, path_terms, symbol_terms, body_terms)"
            " VALUES ('delete', ?, ?, ?, ?)",
            [(cid, *_fts_values(path, symbol, text)) for cid, symbol, text in rows])
        self.conn.execute(
            "DELETE FROM chunks WHERE file_id = (SELECT id FROM files WHERE path = ?)", (path,))
        self._bump_generation()

    def chunks_of(self, path: str) -> list[NewChunk]:
        """The chunks of a file as stored, in order (used to copy a renamed file's work)."""
        return [NewChunk(start, end, language, decode_symbols(symbol), text, digest)
                for start, end, language, symbol, text, digest in self.conn.execute(
            "SELECT c.start_line, c.end_line, c.language, c.symbol, c.text, c.text_hash"
            " FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.path = ? ORDER BY c.id",
            (path,))]

    # ---- vectors -----------------------------------------------------------------------------

    def cached_hashes(self, hashes: Iterable[str]) -> set[str]:
        """The subset of `hashes` whose vectors are stored."""
        wanted = list(dict.fromkeys(hashes))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i: i + 500]
            marks = ",".join("?" * len(part))
            found.update(h for (h,) in self.conn.execute(
                f"SELECT text_hash FROM vectors WHERE text_hash IN ({marks})", part))
        return found

    def get_vectors(self, hashes: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in range(0, len(hashes), 500):
            part = list(hashes[i: i + 500])
            marks = ",".join("?" * len(part))
            out.update(self.conn.execute(
                f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", part))
        return out

    def put_vectors(self, items: Iterable[tuple[str, bytes]]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO vectors(text_hash, vector) VALUES (?, ?)", items)

    def drop_orphan_vectors(self) -> int:
        """Removes cached vectors no chunk uses any more; returns how many."""
        cur = self.conn.execute(
            "DELETE FROM vectors WHERE NOT EXISTS"
            " (SELECT 1 FROM chunks c WHERE c.text_hash = vectors.text_hash)")
        return cur.rowcount

    def iter_chunk_vectors(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64 [n], vectors float32 [n, dim]) of every chunk in id order, in batches.
        Call inside read_snapshot() for a consistent pass."""
        cur = self.conn.execute(
            "SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash"
            " ORDER BY c.id")
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE)
            yield ids, vecs.reshape(len(rows), -1).astype(np.float32, copy=False)

    # ---- reads for status and search ---------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        q = self.conn.execute
        return {
            "files": q("SELECT count(*) FROM files WHERE skipped IS NULL").fetchone()[0],
            "skipped_files": q("SELECT count(*) FROM files WHERE skipped IS NOT NULL")
            .fetchone()[0],
            "chunks": q("SELECT count(*) FROM chunks").fetchone()[0],
            "vectors": q("SELECT count(*) FROM vectors").fetchone()[0],
            "chunks_without_vector": q(
                "SELECT count(*) FROM chunks c WHERE NOT EXISTS"
                " (SELECT 1 FROM vectors v WHERE v.text_hash = c.text_hash)").fetchone()[0],
            "languages": self.chunks_per_language(),
        }

    def chunks_per_language(self) -> dict[str, int]:
        """Chunks per language, most first; chunks of no known language under "other"."""
        rows = self.conn.execute(
            "SELECT coalesce(language, 'other'), count(*) AS n FROM chunks"
            " GROUP BY 1 ORDER BY n DESC, 1").fetchall()
        return {str(language): int(n) for language, n in rows}

    def chunk_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def max_chunk_id(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0])

    def chunks_by_ids(self, ids: Iterable[int]) -> list[ChunkRow]:
        """Chunk rows for the given ids, in the order asked; unknown ids are left out."""
        wanted = [int(i) for i in ids]
        found: dict[int, ChunkRow] = {}
        for i in range(0, len(wanted), 500):
            part = wanted[i: i + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                    "SELECT c.id, f.path, c.start_line, c.end_line, c.language, c.symbol, c.text"
                    f" FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id IN ({marks})",
                    part):
                cid, path, start, end, language, symbol, text = row
                found[cid] = ChunkRow(cid, path, start, end, language, decode_symbols(symbol),
                                      text)
        return [found[i] for i in wanted if i in found]


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite's "the file is damaged" errors (not for a busy or read-only database)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in _CORRUPTION_CODES
    return type(exc) is sqlite3.DatabaseError


def corrupt_error(index_dir: Path, exc: BaseException, hint: str = CORRUPT_HINT
                  ) -> CorruptIndexError:
    """The one-line error of a damaged index database."""
    return CorruptIndexError(f"index database {Path(index_dir) / DB_FILE} is damaged: {exc}",
                             hint=hint)


@contextlib.contextmanager
def corruption_reported(index_dir: Path) -> Iterator[None]:
    """Turns SQLite's corruption errors raised inside into CorruptIndexError, and a full disk
    (SQLite's or the OS's, e.g. while writing the lock file) into DiskFullError naming the
    index."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            raise corrupt_error(index_dir, exc) from exc
        full = disk_full_error(exc, f"the index in {index_dir}")
        if full is not None:
            raise full from exc
        raise
    except OSError as exc:
        full = disk_full_error(exc, f"the index in {index_dir}")
        if full is not None:
            raise full from exc
        raise


def database_owner(path: Path) -> str:
    """Who made the SQLite file at `path`: "coarch" (its meta marker, or the schema_version and
    created_at of indexes made before the marker), "none" (no file, an empty file or one
    without tables), "foreign" (another program's database) or "unreadable" (not SQLite, or
    damaged: coarch's to repair)."""
    try:
        if path.stat().st_size == 0:
            return "none"
    except FileNotFoundError:
        return "none"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return "unreadable"
    try:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return "none"
        if "meta" not in tables:
            return "foreign"
        meta = dict(conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('app', 'schema_version', 'created_at')"))
    except sqlite3.DatabaseError:
        return "unreadable"
    finally:
        conn.close()
    if meta.get("app") == APP_MARKER or ("schema_version" in meta and "created_at" in meta):
        return "coarch"
    return "foreign"


def move_aside(index_dir: Path) -> Path:
    """Renames a damaged index.sqlite (and its WAL) to index.sqlite.corrupt-<time>, keeping it
    for inspection, and removes what is derived from it (its SHM, vectors.faiss). Returns the
    new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = index_dir / f"{DB_FILE}.corrupt-{stamp}"
    os.replace(index_dir / DB_FILE, kept)
    with contextlib.suppress(FileNotFoundError):
        os.replace(index_dir / (DB_FILE + "-wal"), index_dir / f"{kept.name}-wal")
    for name in (DB_FILE + "-shm", DB_FILE + "-journal", FAISS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (index_dir / name).unlink()
    return kept


def remove_index_files(index_dir: Path) -> None:
    """Deletes the SQLite file and its WAL/SHM companions and the FAISS file (a corrupt index
    being rebuilt from scratch)."""
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal",
                 FAISS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (index_dir / name).unlink()

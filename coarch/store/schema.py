"""The tables of index.sqlite, their version, and how a file is created, checked and recognised.

  meta(key, value)
  files(id, path UNIQUE, size, mtime_ns, content_hash, language, skipped)
      skipped: NULL for an indexed file, else why discovery skipped it (so an unchanged skipped
      file is not read again)
  chunks(id AUTOINCREMENT, file_id -> files ON DELETE CASCADE, start_line, end_line, language,
         symbol, text, text_hash)                       lines 1-based inclusive
      symbol: NULL (none), the one name as is when it holds no ',' and does not start with
      '[', else a JSON array of names (see coarch.store.rows.encode_symbols)
      text_hash: key of the chunk's vector: the hash of the text that vector is of (for a
      renamed file's re-used vectors, the text under the old path)
  vectors(text_hash PRIMARY KEY, vector)               float32 little-endian, dim floats
  chunks_fts(path_terms, symbol_terms, body_terms)     contentless FTS5, rowid = chunks.id

Meta keys written when an index is created: `schema_version`, `app` (coarch's marker),
`created_at`, `generation` (bumped by every transaction that changes chunks) and `fts_rules`
(coarch.store.fts). The indexer, coarch.vectors and coarch.index add their own.
"""

from __future__ import annotations

import sqlite3
import time
import unicodedata
from pathlib import Path

from coarch.identifiers import TERMS_VERSION

SCHEMA_VERSION = "1"
APP_MARKER = "coarch"  # meta.app of every index coarch creates

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
"""

# The keyword table's tokenizer: unicode61 with '_' inside a token (coarch.identifiers makes
# the terms it splits), under the Porter stemmer, so that a description's "parsed", "retries"
# or "buffers" meets the code's `parse`, `retry` and `buffer`. The tokenizer is fixed when the
# table is created: a change of it is a change of `fts_rules`, whose rebuild makes the table
# again (coarch.store.fts.rebuild).
FTS_TOKENIZER = "porter unicode61 tokenchars '_'"
FTS_TABLE = f"""CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    path_terms, symbol_terms, body_terms,
    content='', tokenize="{FTS_TOKENIZER}"
);
"""


# Most of an index a reader maps (page cache, given back under pressure; not heap).
READER_MMAP_BYTES = 1 << 30


def fts_rules() -> str:
    """What decides a chunk's FTS5 terms in this process: the term rules' version, the
    tokenizer's stemmer and the Unicode version of Python's tables (a Python upgrade may change
    how a word is cut or lowercased)."""
    return f"terms {TERMS_VERSION}, porter, unicode {unicodedata.unidata_version}"


def prepare(conn: sqlite3.Connection, readonly: bool) -> bool:
    """Sets a new connection up: checks a reader's file is an index, creates a writer's tables
    or checks their version. True when a writer must rebuild the FTS rows first (they were
    derived under other rules than this process's). Raises sqlite3.DatabaseError for a file
    that is no index of this schema."""
    conn.execute("PRAGMA busy_timeout = 10000")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
        # Readers map the file instead of copying pages into SQLite's small page cache (2 MB,
        # a few thousand chunks): a search reads chunks scattered over the whole table.
        conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        if _schema_version(conn) is None:
            raise sqlite3.DatabaseError("no schema version")
        return False
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    version = _schema_version(conn) if exists else None
    if version is not None and version != SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema version {version}, expected {SCHEMA_VERSION}")
    if version is not None:
        conn.executescript(_SCHEMA + FTS_TABLE)
        row = conn.execute("SELECT value FROM meta WHERE key = 'fts_rules'").fetchone()
        return row is None or row[0] != fts_rules()
    # One transaction: a process killed while creating the file leaves either nothing or a
    # whole, marked index (never tables without the marker, which would look foreign).
    conn.executescript(
        "BEGIN IMMEDIATE;" + _SCHEMA + FTS_TABLE + "INSERT OR REPLACE INTO meta(key, value) VALUES"
        f" ('schema_version', '{SCHEMA_VERSION}'), ('app', '{APP_MARKER}'),"
        f" ('created_at', '{time.time():.3f}'), ('generation', '0'),"
        f" ('fts_rules', '{fts_rules()}');"  # quote-free: digits, letters, dots
        "COMMIT;"
    )
    return False


def _schema_version(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return None if row is None else str(row[0])


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
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            return "none"
        if "meta" not in tables:
            return "foreign"
        meta = dict(
            conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('app', 'schema_version', 'created_at')"
            )
        )
    except sqlite3.DatabaseError:
        return "unreadable"
    finally:
        conn.close()
    if meta.get("app") == APP_MARKER or ("schema_version" in meta and "created_at" in meta):
        return "coarch"
    return "foreign"

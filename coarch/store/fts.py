"""The rows of chunks_fts, the contentless FTS5 table keyword search reads.

A contentless table does not store its text twice, so deleting a row needs the very terms it
was inserted with, re-derived from the chunk's stored columns. Those terms depend on the term
rules (coarch.identifiers.TERMS_VERSION), on the table's tokenizer (its stemmer) and on Python's
Unicode tables (behind `str.lower` and `\\w`); meta key `fts_rules` (coarch.store.schema.fts_rules)
records them, and a writer that opens an index recorded under other rules makes chunks_fts again
from the chunks before touching it. Every FTS5 row is computed here, by `fts_values`, and
nowhere else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from coarch.chunking import symbol_text
from coarch.identifiers import index_terms
from coarch.store import schema
from coarch.store.rows import decode_symbols

# (chunk id, path, stored symbol column, text)
StoredChunk = tuple[int, str, "str | None", str]

_INSERT = "INSERT INTO chunks_fts(rowid, path_terms, symbol_terms, body_terms) VALUES (?, ?, ?, ?)"
_DELETE = (
    "INSERT INTO chunks_fts(chunks_fts, rowid, path_terms, symbol_terms, body_terms)"
    " VALUES ('delete', ?, ?, ?, ?)"
)


def fts_values(path: str, stored_symbol: str | None, text: str) -> tuple[str, str, str]:
    """The FTS5 row of a chunk. Deleting from a contentless table needs these exact values
    again, so they are always computed here and only from the stored columns (and under the
    rules `fts_rules` records)."""
    symbols = symbol_text(decode_symbols(stored_symbol)) or ""
    return index_terms(path), index_terms(symbols), index_terms(text)


def insert(conn: sqlite3.Connection, chunks: Iterable[StoredChunk]) -> None:
    conn.executemany(
        _INSERT, [(cid, *fts_values(path, symbol, text)) for cid, path, symbol, text in chunks]
    )


def delete(conn: sqlite3.Connection, chunks: Iterable[StoredChunk]) -> None:
    conn.executemany(
        _DELETE, [(cid, *fts_values(path, symbol, text)) for cid, path, symbol, text in chunks]
    )


def clear(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")


def rebuild(conn: sqlite3.Connection) -> int:
    """Makes chunks_fts again under this process's tokenizer and re-derives every row from the
    stored chunks (inside the caller's transaction); returns how many. Chunk ids are kept: the
    FAISS file stays valid. Readers keep their snapshot of the old table until the commit."""
    conn.execute("DROP TABLE IF EXISTS chunks_fts")
    conn.execute(schema.FTS_TABLE)
    rows = conn.execute(
        "SELECT c.id, f.path, c.symbol, c.text FROM chunks c"
        " JOIN files f ON f.id = c.file_id ORDER BY c.id"
    )
    count = 0
    while batch := rows.fetchmany(1000):
        insert(conn, batch)
        count += len(batch)
    return count

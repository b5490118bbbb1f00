"""The index's source of truth: one SQLite file (WAL) with files, chunks, vectors and FTS5.

Every SQL statement coarch runs on it is in this package, so the schema is defined and read in
one place: coarch.store.schema (the tables, creating and recognising a file), .core (`Store`:
the connection, transactions, meta), .files (what the indexer writes), .reads (what status and
search read, filters applied inside the queries), .fts (the keyword table's rows), .rows (the
row types), .damage (a damaged file). The FAISS file (coarch.vectors) is derived from this one.
"""

from coarch.store.core import Store
from coarch.store.damage import (
    CORRUPT_HINT,
    corrupt_error,
    corruption_reported,
    is_corruption,
    move_aside,
    remove_index_files,
)
from coarch.store.rows import (
    VECTOR_DTYPE,
    ChunkRow,
    FileState,
    NewChunk,
    decode_symbols,
    encode_symbols,
    text_hash,
)
from coarch.store.schema import APP_MARKER, SCHEMA_VERSION, database_owner, fts_rules

__all__ = [
    "APP_MARKER",
    "CORRUPT_HINT",
    "SCHEMA_VERSION",
    "VECTOR_DTYPE",
    "ChunkRow",
    "FileState",
    "NewChunk",
    "Store",
    "corrupt_error",
    "corruption_reported",
    "database_owner",
    "decode_symbols",
    "encode_symbols",
    "fts_rules",
    "is_corruption",
    "move_aside",
    "remove_index_files",
    "text_hash",
]

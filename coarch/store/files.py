"""What the indexer writes and reads back: file rows, their chunks (with their FTS5 rows), and
the vector cache keyed by text hash.

A file's row, its chunks, their FTS rows and their vectors are written in the caller's
transaction (Store.transaction), so after any crash a file is either fully indexed or not at
all. Every change to chunks bumps meta `generation` once per transaction: coarch.vectors
compares it with the generation the FAISS file was written at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from coarch.store import fts
from coarch.store.rows import FileState, NewChunk, decode_symbols, encode_symbols


class FileRows:
    """The files, chunks and vectors tables as the indexer uses them (a part of Store)."""

    conn: sqlite3.Connection
    _generation_bumped: bool

    def _bump_generation(self) -> None:
        if not self._generation_bumped:
            self.conn.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
            )
            self._generation_bumped = True

    def reset(self, keep_vectors: bool = False) -> None:
        """Empties the index (inside the caller's transaction): files, chunks, FTS rows and,
        unless kept, the vector cache."""
        self.conn.execute("DELETE FROM chunks")
        self.conn.execute("DELETE FROM files")
        fts.clear(self.conn)
        if not keep_vectors:
            self.conn.execute("DELETE FROM vectors")
        self._bump_generation()

    # ---- files -------------------------------------------------------------------------------

    def file_states(self) -> dict[str, FileState]:
        """Every file row by path (paths and stat data only: small per file)."""
        return {
            path: FileState(fid, size, mtime, chash, skipped)
            for fid, path, size, mtime, chash, skipped in self.conn.execute(
                "SELECT id, path, size, mtime_ns, content_hash, skipped FROM files"
            )
        }

    def file_state(self, path: str) -> FileState | None:
        row = self.conn.execute(
            "SELECT id, size, mtime_ns, content_hash, skipped FROM files WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else FileState(*row)

    def forget_file_states(self) -> None:
        """Makes every file look changed (unknown mtime and content) so that the next pass
        reads and chunks each again; chunks and cached vectors stay until replaced."""
        self.conn.execute("UPDATE files SET mtime_ns = -1, content_hash = ''")

    def update_stat(self, path: str, size: int, mtime_ns: int) -> None:
        """Records a new size and mtime for a file whose content did not change."""
        self.conn.execute(
            "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path)
        )

    def put_skipped(
        self, path: str, size: int, mtime_ns: int, content_hash: str, reason: str
    ) -> None:
        """Records a file discovery skipped for its content, so it is not read again while
        unchanged. Any chunks it had are removed."""
        self._delete_chunks_of(path)
        self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, content_hash, language, skipped)"
            " VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
            " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,"
            " language = NULL, skipped = excluded.skipped",
            (path, size, mtime_ns, content_hash, reason),
        )

    def put_file(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        content_hash: str,
        language: str | None,
        chunks: Sequence[NewChunk],
    ) -> int:
        """Writes a file and its chunks (replacing what it had). Every chunk's vector must
        already be in the vectors table or be written in the same transaction. Returns the
        file's id."""
        self._delete_chunks_of(path)
        cur = self.conn.execute(
            "INSERT INTO files(path, size, mtime_ns, content_hash, language, skipped)"
            " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(path) DO UPDATE SET size = excluded.size,"
            " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,"
            " language = excluded.language, skipped = NULL RETURNING id",
            (path, size, mtime_ns, content_hash, language),
        )
        file_id = int(cur.fetchone()[0])
        insert = (
            "INSERT INTO chunks(file_id, start_line, end_line, language, symbol, text,"
            " text_hash) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
        )
        written = []
        for ch in chunks:
            stored_symbol = encode_symbols(ch.symbols)
            chunk_id = self.conn.execute(
                insert,
                (
                    file_id,
                    ch.start_line,
                    ch.end_line,
                    ch.language,
                    stored_symbol,
                    ch.text,
                    ch.text_hash,
                ),
            ).fetchone()[0]
            written.append((chunk_id, path, stored_symbol, ch.text))
        fts.insert(self.conn, written)
        if chunks:
            self._bump_generation()
        return file_id

    def remove_file(self, path: str) -> None:
        self._delete_chunks_of(path)
        self.conn.execute("DELETE FROM files WHERE path = ?", (path,))

    def _delete_chunks_of(self, path: str) -> None:
        rows = self.conn.execute(
            "SELECT c.id, c.symbol, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
            " WHERE f.path = ?",
            (path,),
        ).fetchall()
        if not rows:
            return
        fts.delete(self.conn, [(cid, path, symbol, text) for cid, symbol, text in rows])
        self.conn.execute(
            "DELETE FROM chunks WHERE file_id = (SELECT id FROM files WHERE path = ?)", (path,)
        )
        self._bump_generation()

    def chunks_of(self, path: str) -> list[NewChunk]:
        """The chunks of a file as stored, in order (used to copy a renamed file's work)."""
        return [
            NewChunk(start, end, language, decode_symbols(symbol), text, digest)
            for start, end, language, symbol, text, digest in self.conn.execute(
                "SELECT c.start_line, c.end_line, c.language, c.symbol, c.text, c.text_hash"
                " FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.path = ? ORDER BY c.id",
                (path,),
            )
        ]

    # ---- the vector cache --------------------------------------------------------------------

    def cached_hashes(self, hashes: Iterable[str]) -> set[str]:
        """The subset of `hashes` whose vectors are stored."""
        wanted = list(dict.fromkeys(hashes))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            marks = ",".join("?" * len(part))
            found.update(
                h
                for (h,) in self.conn.execute(
                    f"SELECT text_hash FROM vectors WHERE text_hash IN ({marks})", part
                )
            )
        return found

    def get_vectors(self, hashes: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in range(0, len(hashes), 500):
            part = list(hashes[i : i + 500])
            marks = ",".join("?" * len(part))
            out.update(
                self.conn.execute(
                    f"SELECT text_hash, vector FROM vectors WHERE text_hash IN ({marks})", part
                )
            )
        return out

    def put_vectors(self, items: Iterable[tuple[str, bytes]]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO vectors(text_hash, vector) VALUES (?, ?)", items
        )

    def drop_orphan_vectors(self) -> int:
        """Removes cached vectors no chunk uses any more; returns how many."""
        cur = self.conn.execute(
            "DELETE FROM vectors WHERE NOT EXISTS"
            " (SELECT 1 FROM chunks c WHERE c.text_hash = vectors.text_hash)"
        )
        return cur.rowcount

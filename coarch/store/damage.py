"""A damaged index.sqlite: telling SQLite's corruption errors apart, reporting them in one line,
and moving a damaged file aside or removing it with what is derived from it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from coarch.errors import CorruptIndexError, disk_full_error
from coarch.location import DB_FILE, FAISS_FILE

CORRUPT_HINT = "`coarch index --full PATH` rebuilds it"
# SQLite's primary result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPTION_CODES = frozenset({11, 26})


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite's "the file is damaged" errors (not for a busy or read-only database)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in _CORRUPTION_CODES
    return type(exc) is sqlite3.DatabaseError


def corrupt_error(
    index_dir: Path, exc: BaseException, hint: str = CORRUPT_HINT
) -> CorruptIndexError:
    """The one-line error of a damaged index database."""
    return CorruptIndexError(
        f"index database {Path(index_dir) / DB_FILE} is damaged: {exc}", hint=hint
    )


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
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal", FAISS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (index_dir / name).unlink()

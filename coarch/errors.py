"""The one tree of coarch's errors; each class carries the exit code the CLI returns for it.

Exit codes: 0 success (search: hits found), 1 no hits, 2 usage, configuration, I/O or model
error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). "No hits" is a result, not an error,
and has no class here.
"""

from __future__ import annotations

import errno
import os
import sqlite3

EXIT_OK = 0
EXIT_NO_HITS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C stopped
EXIT_TERMINATED = 143  # 128 + SIGTERM: service managers read it as "stopped on request"

_SQLITE_FULL = 13  # sqlite3.h; the sqlite3 module exports it only from Python 3.11 on


class CoarchError(Exception):
    """Base of every error coarch raises on purpose. `hint` is an optional second line that
    tells the user what to do about it."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(CoarchError):
    """Bad arguments or a bad path: a missing folder, a file where a folder is wanted."""


class ConfigError(CoarchError):
    """A bad setting: an environment variable or option value that cannot be used."""


class PrecisionError(ConfigError, ValueError):
    """A precision other than fp32, bf16 or auto; a ValueError too, for library callers."""


class IndexNotFoundError(CoarchError):
    """No index exists for the repository or folder asked about."""


class IndexLockedError(CoarchError):
    """Another process holds the index's lock (another `coarch index` is running)."""

    def __init__(self, pid: int | None, lock_path: str) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"index is locked by {who} ({lock_path})",
            hint="wait for that `coarch index` to finish, or stop it",
        )
        self.pid = pid
        self.lock_path = lock_path


class ModelMismatchError(CoarchError):
    """The index was built with another model (or dimension) than the one asked for."""


class CorruptIndexError(CoarchError):
    """The index's SQLite file cannot be read."""


class IndexingInterrupted(CoarchError):
    """Indexing stopped on request (Ctrl-C) after committing the work in hand."""

    exit_code = EXIT_INTERRUPTED


class IndexingTerminated(IndexingInterrupted):
    """Indexing stopped by SIGTERM after committing the work in hand, as after Ctrl-C."""

    exit_code = EXIT_TERMINATED


class DiskFullError(CoarchError):
    """The disk holding the index filled up. What was committed before stays in the index, so
    running the same command again after freeing space resumes."""

    def __init__(self, where: str) -> None:
        super().__init__(
            f"disk full while writing {where}",
            hint="free some space, then run the same command again to resume",
        )
        self.where = where


def disk_full_error(exc: BaseException, where: str) -> DiskFullError | None:
    """The DiskFullError for `exc` when it says the disk is full (SQLITE_FULL, or ENOSPC and
    EDQUOT from the OS), else None. `where` names what was being written, for the message."""
    if isinstance(exc, sqlite3.Error):
        full = getattr(
            exc, "sqlite_errorcode", None
        ) == _SQLITE_FULL or "database or disk is full" in str(exc)
    elif isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    elif isinstance(exc, RuntimeError):  # faiss.write_index: "write error in ...: (strerror)"
        full = os.strerror(errno.ENOSPC) in str(exc)
    else:
        full = False
    return DiskFullError(str(where)) if full else None


class ModelError(CoarchError):
    """A model folder that cannot be used: missing or unreadable files, a malformed config or
    safetensors header, a missing tensor or one of the wrong shape. The message names the file
    and the tensor."""


class ModelNotFoundError(ModelError):
    """The model folder (or the packaged default model) does not exist."""


class MemoryLimitError(CoarchError, MemoryError):
    """The work cannot fit under the memory limit, even one text alone, or the limit is too
    small for the model itself; the message says the minimum."""


class ClusterError(CoarchError):
    """The Ray cluster could not run the work (a worker that keeps failing, a lost cluster).
    What was committed before stays in the index: the same command resumes."""

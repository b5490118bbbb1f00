"""One writer per index: an exclusive flock on `<index>/lock`, which holds the writer's pid.

The kernel drops the lock when the process dies (kill -9 included), so a stale lock file never
blocks the next run; the pid inside is only for the message."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path

from coarch.errors import IndexLockedError

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


class IndexLock:
    """Exclusive, non-blocking lock of one index folder. `acquire` raises IndexLockedError
    naming the holder's pid when another process has it."""

    def __init__(self, index_dir: str | os.PathLike[str]) -> None:
        self.path = Path(index_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IndexLockedError(read_pid(self.path), str(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:  # the pid is only for the message: a full disk must not keep the lock held
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            log.debug("could not record the pid in %s: %s", self.path, exc)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def holder(index_dir: str | os.PathLike[str]) -> int | None:
    """Pid of the process indexing into `index_dir` now, or None when nobody holds the lock."""
    path = Path(index_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path) or -1
    finally:
        os.close(fd)
    return None

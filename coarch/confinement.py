"""Keeping discovery inside its root: where symlinks lead, and opening a listed file safely.

A path is inside the root when its real path is. Reading opens without following a
last-component symlink the listing did not check (O_NOFOLLOW) and without blocking
(O_NONBLOCK: a FIFO or device put in a file's place is refused, not waited on), then compares
the (st_dev, st_ino) of what it opened with what the listing checked: anything else must still
lie inside the root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from coarch.discovery_report import Skip

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_GROWTH_STEP = 1 << 20  # bytes read at a time from a file that grew since its fstat


class Refused(Exception):
    """A file discovery does not return, and why."""

    def __init__(self, reason: Skip, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RootGuard:
    """The in-root checks of one root (a real path). Not thread-safe for `folder_outside`
    (a cache filled by the listing); `read` is pure and may run in another thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._prefix = str(root).rstrip("/") + "/"
        self._folders_outside: dict[str, str | None] = {"": None}

    def is_inside(self, real: str) -> bool:
        """Whether the real path `real` is the root or lies below it."""
        return real == str(self.root) or real.startswith(self._prefix)

    def relative_prefixes(self, folders: tuple[str, ...]) -> tuple[str, ...]:
        """The real paths `folders` that lie inside the root, as prefixes relative to it
        ("idx/")."""
        return tuple(f[len(self._prefix) :] + "/" for f in folders if f.startswith(self._prefix))

    def resolve_link(self, rel: str) -> str:
        """Real path of a symlink's target, which exists inside the root, or Refused."""
        try:
            target = os.path.realpath(self.root / rel, strict=True)
        except OSError as exc:
            raise Refused(
                Skip.SYMLINK_LOOP, "" if exc.errno == errno.ELOOP else "target missing"
            ) from None
        if not self.is_inside(target):
            raise Refused(Skip.SYMLINK_OUTSIDE, target)
        return target

    def folder_outside(self, folder: str) -> str | None:
        """None when the folder `folder` (relative) resolves inside the root, else its real
        path: a path listed under a symlinked folder that points outside the root is outside.
        Cached: every file of a folder asks."""
        if folder not in self._folders_outside:
            outside = self.folder_outside(folder.rpartition("/")[0])
            if outside is None and self._is_symlink(folder):
                # Its parent is inside: only a symlink can lead out (one lstat per folder).
                real = os.path.realpath(self.root / folder)
                outside = None if self.is_inside(real) else real
            self._folders_outside[folder] = outside
        return self._folders_outside[folder]

    def _is_symlink(self, rel: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.root / rel).st_mode)
        except OSError:  # missing or unreadable: the file's own lstat will say
            return False

    def read(
        self, rel: str, identity: tuple[int, int], via_symlink: bool, cap: int
    ) -> tuple[bytes, os.stat_result]:
        """The bytes of the listed file `rel` (up to `cap` and one byte more; none when its
        fstat says it is over `cap`) and the fstat of what was opened, or Refused / OSError.
        `identity` is the (st_dev, st_ino) the listing checked; `via_symlink`, whether `rel`
        is a symlink the listing found leading inside the root."""
        fd = self._open(rel, via_symlink)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise Refused(Skip.NOT_REGULAR, f"{_kind(st.st_mode)} since the listing")
            if (st.st_dev, st.st_ino) != identity:
                self._check_opened_inside(fh.fileno(), rel)
            if st.st_size > cap:
                return b"", st
            return _read_up_to(fh, st.st_size, cap), st

    def _open(self, rel: str, via_symlink: bool) -> int:
        """A descriptor of `rel` opened without following a last-component symlink (unless
        the listing checked that symlink) and without blocking."""
        follow = 0 if via_symlink else NOFOLLOW
        try:
            return os.open(self.root / rel, OPEN_FLAGS | follow)
        except OSError as exc:
            if exc.errno != errno.ELOOP or via_symlink:
                raise
        # Replaced by a symlink since the listing: follow it only inside the root.
        return os.open(self.resolve_link(rel), OPEN_FLAGS)

    def _check_opened_inside(self, fd: int, rel: str) -> None:
        """Raises Refused unless the open file `fd`, which is not the file the listing
        checked (replaced since, or never checked), lies inside the root: a folder on its path
        may have become a symlink pointing outside."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: resolve the path again
            real = os.path.realpath(self.root / rel)
        if not self.is_inside(real.removesuffix(" (deleted)")):
            raise Refused(Skip.SYMLINK_OUTSIDE, real)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_up_to(fh: BinaryIO, size: int, cap: int) -> bytes:
    """The file's bytes: `size` (its fstat size) and what it grew by since, up to `cap` + 1.
    Asking for `cap` + 1 bytes at once would allocate that much whatever the file's size."""
    data = fh.read(min(size, cap) + 1)
    while size < len(data) <= cap:
        more = fh.read(min(_GROWTH_STEP, cap + 1 - len(data)))
        if not more:
            break
        data += more
    return data

"""Has anything changed under a folder since the last look? Linux inotify, through ctypes.

A long-lived searcher (the MCP server) asks this before every search: when the answer is no, it
can skip listing the repository (git ls-files plus a stat per file: tens of ms on a few
thousand files). The kernel queues an event during the writer's own system call, so a change
made before the question is asked is always seen: a poll of the queue, unlike a watcher thread
that batches notifications, has no window in which a fresh write goes unnoticed.

Every folder under the root is watched except the excluded ones (the index folder, whose files
change on every search's read) and those discovery never enters (`.git` and the other VCS
folders); folders created later are added when the events are drained. Where inotify is
missing (not Linux) or runs out of watches, `start` returns False and the caller lists the
files every time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from coarch.discovery import VCS_DIRS

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# What changes a file's listing, size or mtime (IN_ATTRIB: `touch`, chmod).
WATCH_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of name
# Folders discovery never enters, tracked or not: nothing in them is indexed.
SKIPPED_NAMES = frozenset(os.fsencode(name) for name in VCS_DIRS)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


class ChangeNotifier:
    """Watches every folder under `root` but `excluded` ones; `changed()` says whether any
    event came since the last call. Not thread-safe: one owner (the searcher's lock)."""

    def __init__(
        self, root: str | os.PathLike[str], excluded: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self._excluded = {os.path.realpath(p) for p in excluded}
        self._fd = -1
        self._libc: ctypes.CDLL | None = None
        self._folders: dict[int, bytes] = {}  # watch descriptor -> folder path

    @property
    def active(self) -> bool:
        return self._fd >= 0

    def start(self) -> bool:
        """Sets the watches up; False (and nothing held) where inotify cannot watch the tree."""
        self._libc = _libc()
        if self._libc is None:
            return False
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.info(
                "inotify unavailable (%s): searches list the files", os.strerror(ctypes.get_errno())
            )
            return False
        self._fd = fd
        if not self._watch_tree(os.fsencode(self.root)):
            self.close()
            return False
        log.debug("watching %d folders under %s", len(self._folders), self.root)
        return True

    def changed(self) -> bool:
        """Whether anything changed since the last call (or since `start`); drains the queue
        and watches the folders created meanwhile. True once the notifier can no longer
        vouch for the tree (queue overflow, out of watches, root gone)."""
        if self._fd < 0:
            return True
        changed = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)  # non-blocking: the queued events
            except BlockingIOError:
                break
            changed = True
            if not self._handle(data):
                self.close()
                return True
        return changed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._folders.clear()

    def __del__(self) -> None:
        # An owner dropped without close() (an Index never closed) must not leak the fd.
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    # -- internals --

    def _handle(self, data: bytes) -> bool:
        """Follows the events' folder changes; False when the tree can no longer be vouched
        for."""
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                log.info("inotify queue overflowed; watching %s afresh", self.root)
                return self._watch_tree(os.fsencode(self.root))
            folder = self._folders.get(wd)
            if mask & IN_IGNORED:
                self._folders.pop(wd, None)
                if folder == os.fsencode(self.root):
                    return False  # the root itself is gone
                continue
            if (
                folder is not None
                and mask & IN_ISDIR
                and mask & (IN_CREATE | IN_MOVED_TO)
                and not self._watch_tree(os.path.join(folder, name))
            ):
                return False
        return True

    def _watch_tree(self, top: bytes) -> bool:
        """Adds a watch on `top` and every folder below it that is not excluded; False when
        the kernel refuses for lack of watches. Each folder is watched before it is read, so
        that a subfolder created meanwhile is either read or reported."""
        stack = [top]
        while stack:
            folder = stack.pop()
            if os.fsdecode(folder) in self._excluded:
                continue
            if not self._add_watch(folder):
                return False
            try:
                with os.scandir(folder) as entries:
                    stack.extend(
                        e.path
                        for e in entries
                        if e.name not in SKIPPED_NAMES and e.is_dir(follow_symlinks=False)
                    )
            except OSError:
                continue  # gone or unreadable: its parent's events say when it changes
        return True

    def _add_watch(self, folder: bytes) -> bool:
        assert self._libc is not None
        wd = self._libc.inotify_add_watch(self._fd, folder, WATCH_MASK)
        if wd >= 0:
            self._folders[wd] = folder
            return True
        err = ctypes.get_errno()
        if err == errno.ENOSPC:
            log.info(
                "out of inotify watches (fs.inotify.max_user_watches) under %s: searches "
                "list the files",
                self.root,
            )
            return False
        # Gone or unreadable meanwhile: its parent's events still say when it comes back.
        return err in (errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ELOOP)

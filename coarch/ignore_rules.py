"""gitignore-flavoured rules read from the ignore files (.gitignore, .coarchignore) of a tree."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pathspec

from coarch.confinement import NOFOLLOW, OPEN_FLAGS
from coarch.discovery_report import printable

log = logging.getLogger(__name__)

IGNORE_FILE = ".coarchignore"
_IGNORE_FILE_LIMIT = 4_000_000  # bytes of one ignore file read; the rest is not a rule list


def read_ignore_file(path: Path, shown: str) -> list[str] | None:
    """Lines of an ignore file; None when it is missing, a symlink (git does not follow those
    either) or not a regular file, or unreadable (then a warning: its rules are not applied)."""
    try:
        fd = os.open(path, OPEN_FLAGS | NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            log.warning(
                "cannot read %s (%s); its rules are not applied", shown, exc.strerror or exc
            )
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            data = fh.read(_IGNORE_FILE_LIMIT)
    except OSError as exc:
        log.warning("cannot read %s (%s); its rules are not applied", shown, exc.strerror or exc)
        return None
    return data.decode("utf-8", errors="replace").splitlines()


class IgnoreRules:
    """gitignore-flavoured rules from ignore files found in several folders. A path is checked
    against the rules of each of its ancestors from the root down; the last match decides."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}

    def load(self, root: Path, folder: str, name: str) -> None:
        """Adds the rules of the ignore file `name` in `folder` (relative to `root`)."""
        rel = f"{folder}/{name}" if folder else name
        lines = read_ignore_file(root / rel, printable(rel))
        if lines is None:
            return
        spec = pathspec.GitIgnoreSpec.from_lines(lines)
        if folder in self._specs:
            spec = self._specs[folder] + spec
        self._specs[folder] = spec

    def __bool__(self) -> bool:
        return bool(self._specs)

    def ignored(self, path: str, is_dir: bool = False) -> bool:
        if not self._specs:
            return False
        decision = False
        parts = path.split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            spec = self._specs.get(folder)
            if spec is None:
                continue
            rel = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(rel)
            if result.include is not None:
                decision = result.include
        return decision

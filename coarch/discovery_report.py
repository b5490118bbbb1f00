"""Why discovery left a file out, counted per run, and how a path that is not UTF-8 is shown.

Every part of discovery (the walk, the git listing, the in-root checks, reading) reports a
skipped file here; only the reasons in WARN_SKIPS are logged as warnings.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Skip(enum.Enum):
    """Why a file was not indexed; the value is the phrase used in reports."""

    TOO_LARGE = "over the size cap"
    BINARY = "binary"
    MINIFIED = "minified or generated"
    VENDORED = "in an untracked vendored folder"
    NOT_REGULAR = "not a regular file"
    SYMLINK_OUTSIDE = "symlink pointing outside the root"
    SYMLINK_LOOP = "symlink loop or dangling symlink"
    DUPLICATE = "same file reached twice"
    UNREADABLE = "unreadable"
    VANISHED = "deleted during the run"
    BAD_NAME = "name not valid UTF-8"


# Skips worth a warning line each: something is wrong with the file or the tree. The others are
# ordinary and only counted (and logged at info level).
WARN_SKIPS = frozenset(
    {Skip.UNREADABLE, Skip.VANISHED, Skip.SYMLINK_LOOP, Skip.SYMLINK_OUTSIDE, Skip.BAD_NAME}
)


@dataclass
class DiscoveryReport:
    """Counts of what discovery skipped, by reason, with one example path each."""

    skipped: Counter[Skip] = field(default_factory=Counter)
    examples: dict[Skip, str] = field(default_factory=dict)
    invalid_utf8: int = 0
    mode: str = "walk"

    def skip(self, reason: Skip, path: str, detail: str = "") -> None:
        shown = printable(path)
        self.skipped[reason] += 1
        self.examples.setdefault(reason, shown)
        level = logging.WARNING if reason in WARN_SKIPS else logging.INFO
        log.log(level, "skipping %s: %s%s", shown, reason.value, f" ({detail})" if detail else "")

    def lines(self) -> list[str]:
        """One human line per reason, e.g. "2 binary (e.g. img/logo.png)"."""
        return [
            f"{n} {reason.value} (e.g. {self.examples[reason]})"
            for reason, n in sorted(self.skipped.items(), key=lambda kv: kv[0].name)
        ]


def valid_name(path: str) -> bool:
    """Whether a path (as os.fsdecode gives it: bytes that are not UTF-8 become surrogates) is
    valid UTF-8, so that it can be stored, searched and printed."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """`path` with the bytes that are not UTF-8 shown as \\xNN."""
    if valid_name(path):
        return path
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")

"""The files git lists in a folder: tracked ones, and untracked ones that are not ignored.

Two `git ls-files` runs in the folder (English messages, paths unquoted); a folder git could
not open is reported as unreadable. Without git, outside a repository, or for a folder that its
enclosing repository ignores, there is no listing and discovery walks the folder instead.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from coarch.discovery_report import DiscoveryReport, Skip

log = logging.getLogger(__name__)

# git's line for a folder it could not list (LC_ALL=C keeps it in English).
_GIT_UNREADABLE = re.compile(rb"^warning: could not open directory '(.*)': (.*)$", re.MULTILINE)


def git_listing(root: Path, report: DiscoveryReport) -> tuple[list[str], list[str]] | None:
    """(tracked, untracked-not-ignored) paths relative to `root`, or None outside git and for
    a root that the enclosing repository ignores (it is then walked by its own rules)."""
    done = _git(root, "rev-parse", "--show-prefix")
    if done is None or done.returncode != 0:
        if done is not None:
            _git_failed(done)
        return None
    prefix = done.stdout.decode("utf-8", errors="surrogateescape").strip()
    if prefix and _ignored_by_enclosing_repository(root):
        return None
    tracked = _ls(root, report, prefix, "--cached")
    if tracked is None:
        return None
    untracked = _ls(root, report, prefix, "--others", "--exclude-standard")
    if untracked is None:
        return None
    return sorted(set(tracked)), untracked


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    """One git command run in `root` (English messages), or None when git is missing."""
    try:
        return subprocess.run(
            ["git", "-c", "core.quotepath=off", *args],
            cwd=root,
            capture_output=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError:
        return None


def _git_failed(done: subprocess.CompletedProcess[bytes]) -> None:
    err = done.stderr.decode(errors="replace").strip()
    if "not a git repository" not in err:
        log.warning(
            "git failed (%s); walking the folder instead",
            err.splitlines()[0] if err else done.returncode,
        )


def _ignored_by_enclosing_repository(root: Path) -> bool:
    """Whether the enclosing repository's ignore rules exclude the root itself. A folder
    named explicitly is then indexed by its own ignore files, as if git were not there: git
    would list nothing in it."""
    done = _git(root, "check-ignore", "-v", "--", ".")
    if done is None or done.returncode != 0:
        return False
    rule = done.stdout.decode("utf-8", errors="replace").split("\t")[0].strip()
    log.warning(
        "%s is ignored by the enclosing git repository (%s); indexing it by its own ignore files",
        root,
        rule or "an ignore rule",
    )
    return True


def _ls(root: Path, report: DiscoveryReport, prefix: str, *args: str) -> list[str] | None:
    """`git ls-files -z ARGS` relative to the root; folders git could not open are reported
    as unreadable."""
    done = _git(root, "ls-files", "-z", *args)
    if done is None:
        return None
    if done.returncode != 0:
        _git_failed(done)
        return None
    for folder, why in _GIT_UNREADABLE.findall(done.stderr):
        name = os.fsdecode(folder).rstrip("/")
        name = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        report.skip(Skip.UNREADABLE, name or ".", why.decode(errors="replace"))
    names = done.stdout.decode("utf-8", errors="surrogateescape").split("\0")
    return [n for n in names if n]

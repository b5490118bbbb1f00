"""Which files of a folder to index: the files git sees, or the same rules without git.

Listing (`Discovery.candidates`) costs a directory walk or one `git ls-files` and one lstat per
file; it reads no content, so an unchanged repository is compared with the index by size and
mtime alone. Reading (`Discovery.read`) applies the content checks: binary, minified, encoding.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import os
import re
import stat
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pathspec

from coarch.errors import UsageError
from coarch.languages import language_for

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_SIZE = 1_000_000
# Folders of other people's code or of build output: skipped unless git tracks their files.
VENDORED_DIRS = frozenset({
    "node_modules", "bower_components", "jspm_packages", "vendor", "third_party",
    "third-party", "thirdparty", "external", ".venv", "venv", "env", ".env", "virtualenv",
    "site-packages", "dist", "build", "_build", "out", "target", ".tox", ".nox", ".eggs",
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".gradle",
    ".idea", ".vscode", ".next", ".nuxt", ".cache", ".terraform", "Pods", "DerivedData",
    "coverage", "htmlcov",
})
# Folders never entered, tracked or not.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", ".jj"})
# Files that are generated and useless to search.
GENERATED_NAMES = frozenset({
    "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "Cargo.lock", "poetry.lock",
    "composer.lock", "Gemfile.lock", "go.sum", "Pipfile.lock", "uv.lock", "bun.lockb",
})
GENERATED_SUFFIXES = (".min.js", ".min.css", ".min.mjs", ".map", ".pyc", ".pyo", ".class")
IGNORE_FILE = ".coarchignore"
SNIFF_BYTES = 8192


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
WARN_SKIPS = frozenset({Skip.UNREADABLE, Skip.VANISHED, Skip.SYMLINK_LOOP, Skip.SYMLINK_OUTSIDE,
                        Skip.BAD_NAME})

# Opening never follows a last-component symlink the listing did not check, and never waits on
# a FIFO or device put in a file's place during the run (fstat then tells what was opened).
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_IGNORE_FILE_LIMIT = 4_000_000   # bytes of one ignore file read; the rest is not a rule list
_GROWTH_STEP = 1 << 20           # bytes read at a time from a file that grew since its fstat


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that passed the listing checks: path relative to the root (POSIX), stat data, and
    the identity (st_dev, st_ino) of the file the listing checked, so that reading can tell
    whether it opened that file; 0, 0 when unknown. `via_symlink`: the path is a symlink whose
    target the listing found inside the root."""

    path: str
    size: int
    mtime_ns: int
    dev: int = 0
    ino: int = 0
    via_symlink: bool = False


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file read and decoded: `text` has "\\n" line ends; `content_hash` is of the raw bytes."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    text: str
    language: str | None
    valid_utf8: bool


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file `read` did not return: why, and what is known of it (the content hash when the
    content was read, so an unchanged skipped file need not be read again)."""

    path: str
    reason: Skip
    size: int
    mtime_ns: int
    content_hash: str | None


@dataclass(frozen=True)
class DiscoveryOptions:
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_line_length: int = 1000          # a line longer than this counts as a "long line"
    max_average_line_length: int = 300   # files whose lines average more are minified
    use_git: bool = True                 # False: the gitignore rules without calling git
    exclude: tuple[str, ...] = ()        # absolute folders never entered (the index folder)


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
        return [f"{n} {reason.value} (e.g. {self.examples[reason]})"
                for reason, n in sorted(self.skipped.items(), key=lambda kv: kv[0].name)]


def content_hash(data: bytes) -> str:
    """The 128-bit BLAKE2b of `data`, in hex: the key of a file's content and of a vector."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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


def check_root(path: str | os.PathLike[str]) -> Path:
    """The real path of an existing folder to index, or UsageError with a hint."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"no such folder: {p}", hint="give the path of a repository or folder")
    if not p.is_dir():
        raise UsageError(f"not a folder: {p}",
                         hint="coarch indexes folders; give the folder that contains it")
    try:
        os.listdir(p)
    except OSError as exc:
        raise UsageError(f"cannot read folder {p}: {exc.strerror}") from exc
    return p.resolve()


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def _read_ignore_file(path: Path, shown: str) -> list[str] | None:
    """Lines of an ignore file; None when it is missing, a symlink (git does not follow those
    either) or not a regular file, or unreadable (then a warning: its rules are not applied)."""
    try:
        fd = os.open(path, _OPEN_FLAGS | _NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            log.warning("cannot read %s (%s); its rules are not applied", shown,
                        exc.strerror or exc)
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


class _IgnoreRules:
    """gitignore-flavoured rules from ignore files found in several folders. A path is checked
    against the rules of each of its ancestors from the root down; the last match decides."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}

    def load(self, root: Path, folder: str, name: str) -> None:
        rel = f"{folder}/{name}" if folder else name
        lines = _read_ignore_file(root / rel, printable(rel))
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


class _Refused(Exception):
    """A file `read` does not return, and why."""

    def __init__(self, reason: Skip, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Entry(enum.Enum):
    """What the walk does with one folder entry."""

    FILE = "list it"
    FOLDER = "enter it"
    LEAVE = "leave it out"


# git's line for a folder it could not list (LC_ALL=C keeps it in English).
_GIT_UNREADABLE = re.compile(rb"^warning: could not open directory '(.*)': (.*)$", re.MULTILINE)


class Discovery:
    """Lists and reads the files of one root. Not thread-safe for listing; `read` is pure and
    may run in another thread.

    Nothing outside the root is listed or read: a path whose folder, or which itself, resolves
    outside the root is skipped, and reading opens the file without following a symlink the
    listing did not check, then compares it with the file the listing checked."""

    def __init__(self, root: str | os.PathLike[str], options: DiscoveryOptions | None = None,
                 report: DiscoveryReport | None = None) -> None:
        self.root = check_root(root)
        self.options = options or DiscoveryOptions()
        self.report = report if report is not None else DiscoveryReport()
        self._root_prefix = str(self.root).rstrip("/") + "/"
        self._exclude = tuple(os.path.realpath(e) for e in self.options.exclude)
        self._folders_inside: dict[str, str | None] = {"": None}

    # ---- listing ---------------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every file to consider, sorted by path, after the listing checks (ignore rules,
        vendored folders, size cap, symlinks, duplicates, names). Content is not read."""
        listed = self._git_listing() if self.options.use_git else None
        if listed is not None:
            self.report.mode = "git"
            entries = self._from_git(*listed)
        else:
            self.report.mode = "walk"
            entries = self._walk()
        return self._stat_all(entries)

    def _git(self, *args: str) -> subprocess.CompletedProcess[bytes] | None:
        """One git command run in the root (English messages), or None when git is missing."""
        try:
            return subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=self.root,
                                  capture_output=True, check=False,
                                  env={**os.environ, "LC_ALL": "C"})
        except OSError:
            return None

    def _git_listing(self) -> tuple[list[str], list[str]] | None:
        """(tracked, untracked-not-ignored) paths relative to the root, or None outside git and
        for a root that the enclosing repository ignores (it is then walked by its own rules)."""
        done = self._git("rev-parse", "--show-prefix")
        if done is None or done.returncode != 0:
            if done is not None:
                self._git_failed(done)
            return None
        prefix = done.stdout.decode("utf-8", errors="surrogateescape").strip()
        if prefix and self._ignored_by_enclosing_repository():
            return None
        tracked = self._ls(prefix, "--cached")
        if tracked is None:
            return None
        untracked = self._ls(prefix, "--others", "--exclude-standard")
        if untracked is None:
            return None
        return sorted(set(tracked)), untracked

    def _git_failed(self, done: subprocess.CompletedProcess[bytes]) -> None:
        err = done.stderr.decode(errors="replace").strip()
        if "not a git repository" not in err:
            log.warning("git failed (%s); walking the folder instead",
                        err.splitlines()[0] if err else done.returncode)

    def _ignored_by_enclosing_repository(self) -> bool:
        """Whether the enclosing repository's ignore rules exclude the root itself. A folder
        named explicitly is then indexed by its own ignore files, as if git were not there:
        git would list nothing in it."""
        done = self._git("check-ignore", "-v", "--", ".")
        if done is None or done.returncode != 0:
            return False
        rule = done.stdout.decode("utf-8", errors="replace").split("\t")[0].strip()
        log.warning("%s is ignored by the enclosing git repository (%s); indexing it by its own"
                    " ignore files", self.root, rule or "an ignore rule")
        return True

    def _ls(self, prefix: str, *args: str) -> list[str] | None:
        """`git ls-files -z ARGS` relative to the root; folders git could not open are
        reported as unreadable."""
        done = self._git("ls-files", "-z", *args)
        if done is None:
            return None
        if done.returncode != 0:
            self._git_failed(done)
            return None
        for folder, why in _GIT_UNREADABLE.findall(done.stderr):
            name = os.fsdecode(folder).rstrip("/")
            name = name[len(prefix):] if prefix and name.startswith(prefix) else name
            self.report.skip(Skip.UNREADABLE, name or ".", why.decode(errors="replace"))
        names = done.stdout.decode("utf-8", errors="surrogateescape").split("\0")
        return [n for n in names if n]

    def _from_git(self, tracked: list[str], untracked: list[str]) -> Iterator[str]:
        rules = _IgnoreRules()
        excluded = self._excluded_prefixes()
        keep = [name for name in (*tracked, *untracked)
                if valid_name(name) and not name.startswith(excluded)]
        for name in keep:
            folder, _, base = name.rpartition("/")
            if base == IGNORE_FILE and self._folder_outside(folder) is None:
                rules.load(self.root, folder, IGNORE_FILE)
        untracked_set = set(untracked)
        for name in (*tracked, *untracked):
            if not valid_name(name):
                self.report.skip(Skip.BAD_NAME, name)
            elif name.startswith(excluded):
                continue
            elif name in untracked_set and any(p in VENDORED_DIRS for p in name.split("/")[:-1]):
                self.report.skip(Skip.VENDORED, name)
            elif not rules.ignored(name):
                yield name

    def _excluded_prefixes(self) -> tuple[str, ...]:
        """The excluded folders inside the root, as path prefixes relative to it ("idx/")."""
        return tuple(e[len(self._root_prefix):] + "/" for e in self._exclude
                     if e.startswith(self._root_prefix))

    def _walk(self) -> Iterator[str]:
        """Paths under the root honouring .gitignore and .coarchignore files at every level,
        following symlinked folders only inside the root and never twice (loops). A folder that
        cannot be listed is reported and skipped."""
        rules = _IgnoreRules()
        st = os.stat(self.root)
        visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
        stack: list[str] = [""]
        while stack:
            folder = stack.pop()
            abs_folder = self.root / folder if folder else self.root
            try:
                with os.scandir(abs_folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.report.skip(Skip.UNREADABLE, folder or ".", exc.strerror or str(exc))
                continue
            names = {e.name for e in entries}
            for name in (".gitignore", IGNORE_FILE):
                if name in names:
                    rules.load(self.root, folder, name)
            subfolders: list[str] = []
            for entry in entries:
                rel = f"{folder}/{entry.name}" if folder else entry.name
                if not valid_name(entry.name):
                    self.report.skip(Skip.BAD_NAME, rel)
                    continue
                kind = self._walk_entry(entry, rel, rules, visited)
                if kind is _Entry.FOLDER:
                    subfolders.append(rel)
                elif kind is _Entry.FILE:
                    yield rel
            stack.extend(reversed(subfolders))

    def _walk_entry(self, entry: os.DirEntry[str], rel: str, rules: _IgnoreRules,
                    visited: set[tuple[int, int]]) -> _Entry:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_link = entry.is_symlink()
        except OSError:
            return _Entry.LEAVE
        if is_link:
            return self._walk_link(entry, rel, rules, visited)
        if not is_dir:
            return _Entry.LEAVE if rules.ignored(rel) else _Entry.FILE
        if entry.name in VCS_DIRS or self._excluded(Path(entry.path)):
            return _Entry.LEAVE
        if rules.ignored(rel, is_dir=True):
            return _Entry.LEAVE
        if entry.name in VENDORED_DIRS:
            self.report.skip(Skip.VENDORED, rel + "/")
            return _Entry.LEAVE
        try:
            dst = entry.stat(follow_symlinks=False)
        except OSError:
            return _Entry.LEAVE
        visited.add((dst.st_dev, dst.st_ino))
        return _Entry.FOLDER

    def _walk_link(self, entry: os.DirEntry[str], rel: str, rules: _IgnoreRules,
                   visited: set[tuple[int, int]]) -> _Entry:
        """A symlink is followed only inside the root, and a folder never twice."""
        target = self._inside_root(rel)
        if target is None:
            return _Entry.LEAVE
        if not os.path.isdir(target):
            return _Entry.LEAVE if rules.ignored(rel) else _Entry.FILE
        if entry.name in VCS_DIRS or rules.ignored(rel, is_dir=True) or \
                self._excluded(Path(target)):
            return _Entry.LEAVE
        try:
            tst = os.stat(target)
        except OSError:
            return _Entry.LEAVE
        key = (tst.st_dev, tst.st_ino)
        if key in visited:
            self.report.skip(Skip.SYMLINK_LOOP, rel, "folder already walked")
            return _Entry.LEAVE
        visited.add(key)
        return _Entry.FOLDER

    def _excluded(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return any(real == e or real.startswith(e + "/") for e in self._exclude)

    def _resolve_link(self, rel: str) -> str:
        """Real path of a symlink's target, which exists inside the root, or _Refused."""
        try:
            target = os.path.realpath(self.root / rel, strict=True)
        except OSError as exc:
            raise _Refused(Skip.SYMLINK_LOOP,
                           "" if exc.errno == errno.ELOOP else "target missing") from None
        if not self._is_inside(target):
            raise _Refused(Skip.SYMLINK_OUTSIDE, target)
        return target

    def _inside_root(self, rel: str) -> str | None:
        """Real path of a symlink's target when it exists inside the root, else None (reported)."""
        try:
            return self._resolve_link(rel)
        except _Refused as refused:
            self.report.skip(refused.reason, rel, refused.detail)
            return None

    def _is_inside(self, real: str) -> bool:
        return real == str(self.root) or real.startswith(self._root_prefix)

    def _folder_outside(self, folder: str) -> str | None:
        """None when the folder `folder` (relative) resolves inside the root, else its real
        path: a path listed under a symlinked folder that points outside the root is outside.
        Cached: every file of a folder asks."""
        if folder not in self._folders_inside:
            outside = self._folder_outside(folder.rpartition("/")[0])
            if outside is None and self._is_symlink(folder):
                # Its parent is inside: only a symlink can lead out (one lstat per folder).
                real = os.path.realpath(self.root / folder)
                outside = None if self._is_inside(real) else real
            self._folders_inside[folder] = outside
        return self._folders_inside[folder]

    def _is_symlink(self, rel: str) -> bool:
        try:
            return stat.S_ISLNK(os.lstat(self.root / rel).st_mode)
        except OSError:  # missing or unreadable: the file's own lstat will say
            return False

    def _stat_all(self, names: Iterable[str]) -> list[Candidate]:
        """Applies the stat checks; symlinked files come last so that the real path wins when a
        file is reachable both ways."""
        out: list[Candidate] = []
        seen: set[tuple[int, int]] = set()
        links: list[str] = []
        cap = self.options.max_file_size
        for rel in names:
            if self._is_generated_name(rel):
                self.report.skip(Skip.MINIFIED, rel, "generated file name")
                continue
            outside = self._folder_outside(rel.rpartition("/")[0])
            if outside is not None:
                self.report.skip(Skip.SYMLINK_OUTSIDE, rel, f"in {outside}")
                continue
            try:
                st = os.lstat(self.root / rel)
            except FileNotFoundError:
                log.debug("listed but missing on disk: %s", rel)
                continue
            except OSError as exc:
                self.report.skip(Skip.UNREADABLE, rel, exc.strerror or str(exc))
                continue
            if stat.S_ISLNK(st.st_mode):
                links.append(rel)
                continue
            self._admit(rel, st, cap, seen, out, via_symlink=False)
        for rel in links:
            target = self._inside_root(rel)
            if target is None:
                continue
            try:
                st = os.stat(target)
            except OSError as exc:
                self.report.skip(Skip.UNREADABLE, rel, exc.strerror or str(exc))
                continue
            self._admit(rel, st, cap, seen, out, via_symlink=True)
        out.sort(key=lambda c: c.path)
        return out

    def _admit(self, rel: str, st: os.stat_result, cap: int, seen: set[tuple[int, int]],
               out: list[Candidate], via_symlink: bool) -> None:
        if not stat.S_ISREG(st.st_mode):
            if not stat.S_ISDIR(st.st_mode):  # git lists submodules as folders: not worth a line
                self.report.skip(Skip.NOT_REGULAR, rel)
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            self.report.skip(Skip.DUPLICATE, rel)
            return
        seen.add(key)
        if st.st_size > cap:
            self.report.skip(Skip.TOO_LARGE, rel,
                             f"{human_size(st.st_size)} > {human_size(cap)}")
            return
        out.append(Candidate(rel, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, via_symlink))

    @staticmethod
    def _is_generated_name(rel: str) -> bool:
        name = rel.rpartition("/")[2]
        return name in GENERATED_NAMES or name.endswith(GENERATED_SUFFIXES)

    # ---- reading ---------------------------------------------------------------------------

    def read(self, candidate: Candidate) -> SourceFile | SkippedFile:
        """Reads and checks one file (a skip is also recorded in the report). Size and mtime
        are taken again from the open file, so a file changed since listing is recorded as it
        was read. What is read is the file the listing checked, or one found inside the root
        in its place: never a file outside the root, never a FIFO or device (no wait)."""

        def skipped(reason: Skip, detail: str = "", size: int = candidate.size,
                    mtime_ns: int = candidate.mtime_ns, digest: str | None = None) -> SkippedFile:
            self.report.skip(reason, candidate.path, detail)
            return SkippedFile(candidate.path, reason, size, mtime_ns, digest)

        try:
            data, st = self._read_checked(candidate)
        except _Refused as refused:
            return skipped(refused.reason, refused.detail)
        except FileNotFoundError:
            return skipped(Skip.VANISHED)
        except OSError as exc:
            return skipped(Skip.UNREADABLE, exc.strerror or str(exc))
        if st.st_size > self.options.max_file_size:
            return skipped(Skip.TOO_LARGE, human_size(st.st_size), st.st_size, st.st_mtime_ns)
        if len(data) > self.options.max_file_size:
            return skipped(Skip.TOO_LARGE, "grew while being read", len(data), st.st_mtime_ns)
        digest = content_hash(data)
        if b"\0" in data[:SNIFF_BYTES]:
            return skipped(Skip.BINARY, "", st.st_size, st.st_mtime_ns, digest)
        text, valid = decode(data)
        del data
        if self.is_minified(text):
            return skipped(Skip.MINIFIED, "very long lines", st.st_size, st.st_mtime_ns, digest)
        if not valid:
            self.report.invalid_utf8 += 1
            log.warning("%s: not valid UTF-8; undecodable bytes replaced", candidate.path)
        first_line = text[: text.find("\n")] if "\n" in text else text
        return SourceFile(
            path=candidate.path, size=st.st_size, mtime_ns=st.st_mtime_ns,
            content_hash=digest, text=text,
            language=language_for(candidate.path, first_line[:200]), valid_utf8=valid)

    def _read_checked(self, candidate: Candidate) -> tuple[bytes, os.stat_result]:
        """The bytes of the candidate (up to the size cap and one byte more) and the fstat of
        what was opened, or _Refused / OSError."""
        fd = self._open_checked(candidate)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _Refused(Skip.NOT_REGULAR, f"{_kind(st.st_mode)} since the listing")
            if (st.st_dev, st.st_ino) != (candidate.dev, candidate.ino):
                self._check_opened_inside(fh.fileno(), candidate.path)
            cap = self.options.max_file_size
            if st.st_size > cap:
                return b"", st
            return _read_up_to(fh, st.st_size, cap), st

    def _open_checked(self, candidate: Candidate) -> int:
        """A descriptor of the candidate opened without following a last-component symlink
        (unless the listing checked that symlink) and without blocking."""
        path = self.root / candidate.path
        follow = 0 if candidate.via_symlink else _NOFOLLOW
        try:
            return os.open(path, _OPEN_FLAGS | follow)
        except OSError as exc:
            if exc.errno != errno.ELOOP or candidate.via_symlink:
                raise
        # Replaced by a symlink since the listing: follow it only inside the root.
        return os.open(self._resolve_link(candidate.path), _OPEN_FLAGS)

    def _check_opened_inside(self, fd: int, rel: str) -> None:
        """Raises _Refused unless the open file `fd`, which is not the file the listing
        checked (replaced since, or never checked), lies inside the root: a folder on its path
        may have become a symlink pointing outside."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: resolve the path again
            real = os.path.realpath(self.root / rel)
        if not self._is_inside(real.removesuffix(" (deleted)")):
            raise _Refused(Skip.SYMLINK_OUTSIDE, real)

    def is_minified(self, text: str) -> bool:
        """Minified or generated: lines average over max_average_line_length characters, or
        lines over max_line_length hold most of the text."""
        if not text:
            return False
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        if len(text) / max(lines, 1) > self.options.max_average_line_length:
            return True
        limit = self.options.max_line_length
        if len(text) <= limit:
            return False
        long_chars = sum(len(line) for line in text.split("\n") if len(line) > limit)
        return long_chars * 2 > len(text)


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text with "\\n" line ends (a BOM dropped), and whether the bytes were valid UTF-8;
    invalid bytes become U+FFFD."""
    valid = True
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        valid = False
        text = data.decode("utf-8-sig", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, valid


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


def human_size(n: int) -> str:
    """Bytes in SI units, as --max-file-size takes them: "1.5 MB", "300 KB"."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.0f} KB"
    return f"{n} B"

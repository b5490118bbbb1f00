"""Which files of a folder to index: the files git sees, or the same rules without git.

Listing (`Discovery.candidates`) costs a directory walk or one `git ls-files` and one lstat per
file; it reads no content, so an unchanged repository is compared with the index by size and
mtime alone. Reading (`Discovery.read`) applies the content checks: binary, minified, encoding.

Its parts: coarch.git_listing (what git lists), coarch.ignore_rules (.gitignore and
.coarchignore without git), coarch.confinement (nothing outside the root is listed or read),
coarch.discovery_report (what was skipped, and why), coarch.sizes (the size cap in SI units).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coarch.confinement import Refused, RootGuard
from coarch.discovery_report import DiscoveryReport, Skip, valid_name
from coarch.errors import UsageError
from coarch.git_listing import git_listing
from coarch.ignore_rules import IGNORE_FILE, IgnoreRules
from coarch.languages import language_for
from coarch.sizes import human_size

# The API, with the report and size names of the modules this one uses (importers of
# coarch.discovery need not know where those live).
__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "GENERATED_NAMES",
    "GENERATED_SUFFIXES",
    "SNIFF_BYTES",
    "VCS_DIRS",
    "VENDORED_DIRS",
    "Candidate",
    "Discovery",
    "DiscoveryOptions",
    "DiscoveryReport",
    "Skip",
    "SkippedFile",
    "SourceFile",
    "check_root",
    "content_hash",
    "decode",
    "human_size",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_SIZE = 1_000_000
# Folders of other people's code or of build output: skipped unless git tracks their files.
VENDORED_DIRS = frozenset(
    {
        "node_modules",
        "bower_components",
        "jspm_packages",
        "vendor",
        "third_party",
        "third-party",
        "thirdparty",
        "external",
        ".venv",
        "venv",
        "env",
        ".env",
        "virtualenv",
        "site-packages",
        "dist",
        "build",
        "_build",
        "out",
        "target",
        ".tox",
        ".nox",
        ".eggs",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".gradle",
        ".idea",
        ".vscode",
        ".next",
        ".nuxt",
        ".cache",
        ".terraform",
        "Pods",
        "DerivedData",
        "coverage",
        "htmlcov",
    }
)
# Folders never entered, tracked or not.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", ".jj"})
# Files that are generated and useless to search.
GENERATED_NAMES = frozenset(
    {
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "Cargo.lock",
        "poetry.lock",
        "composer.lock",
        "Gemfile.lock",
        "go.sum",
        "Pipfile.lock",
        "uv.lock",
        "bun.lockb",
    }
)
GENERATED_SUFFIXES = (".min.js", ".min.css", ".min.mjs", ".map", ".pyc", ".pyo", ".class")
SNIFF_BYTES = 8192


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
    max_line_length: int = 1000  # a line longer than this counts as a "long line"
    max_average_line_length: int = 300  # files whose lines average more are minified
    use_git: bool = True  # False: the gitignore rules without calling git
    exclude: tuple[str, ...] = ()  # absolute folders never entered (the index folder)


def content_hash(data: bytes) -> str:
    """The 128-bit BLAKE2b of `data`, in hex: the key of a file's content and of a vector."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def check_root(path: str | os.PathLike[str]) -> Path:
    """The real path of an existing folder to index, or UsageError with a hint."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"no such folder: {p}", hint="give the path of a repository or folder")
    if not p.is_dir():
        raise UsageError(
            f"not a folder: {p}", hint="coarch indexes folders; give the folder that contains it"
        )
    try:
        os.listdir(p)
    except OSError as exc:
        raise UsageError(f"cannot read folder {p}: {exc.strerror}") from exc
    return p.resolve()


class _Entry(enum.Enum):
    """What the walk does with one folder entry."""

    FILE = "list it"
    FOLDER = "enter it"
    LEAVE = "leave it out"


class Discovery:
    """Lists and reads the files of one root. Not thread-safe for listing; `read` is pure and
    may run in another thread.

    Nothing outside the root is listed or read: a path whose folder, or which itself, resolves
    outside the root is skipped, and reading opens the file without following a symlink the
    listing did not check, then compares it with the file the listing checked."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        options: DiscoveryOptions | None = None,
        report: DiscoveryReport | None = None,
    ) -> None:
        self.root = check_root(root)
        self.options = options or DiscoveryOptions()
        self.report = report if report is not None else DiscoveryReport()
        self._guard = RootGuard(self.root)
        self._exclude = tuple(os.path.realpath(e) for e in self.options.exclude)

    # ---- listing ---------------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every file to consider, sorted by path, after the listing checks (ignore rules,
        vendored folders, size cap, symlinks, duplicates, names). Content is not read."""
        listed = git_listing(self.root, self.report) if self.options.use_git else None
        if listed is not None:
            self.report.mode = "git"
            entries = self._from_git(*listed)
        else:
            self.report.mode = "walk"
            entries = self._walk()
        return self._stat_all(entries)

    def _from_git(self, tracked: list[str], untracked: list[str]) -> Iterator[str]:
        rules = IgnoreRules()
        excluded = self._guard.relative_prefixes(self._exclude)
        keep = [
            name
            for name in (*tracked, *untracked)
            if valid_name(name) and not name.startswith(excluded)
        ]
        for name in keep:
            folder, _, base = name.rpartition("/")
            if base == IGNORE_FILE and self._guard.folder_outside(folder) is None:
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

    def _walk(self) -> Iterator[str]:
        """Paths under the root honouring .gitignore and .coarchignore files at every level,
        following symlinked folders only inside the root and never twice (loops). A folder that
        cannot be listed is reported and skipped."""
        rules = IgnoreRules()
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

    def _walk_entry(
        self, entry: os.DirEntry[str], rel: str, rules: IgnoreRules, visited: set[tuple[int, int]]
    ) -> _Entry:
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

    def _walk_link(
        self, entry: os.DirEntry[str], rel: str, rules: IgnoreRules, visited: set[tuple[int, int]]
    ) -> _Entry:
        """A symlink is followed only inside the root, and a folder never twice."""
        target = self._inside_root(rel)
        if target is None:
            return _Entry.LEAVE
        if not os.path.isdir(target):
            return _Entry.LEAVE if rules.ignored(rel) else _Entry.FILE
        if (
            entry.name in VCS_DIRS
            or rules.ignored(rel, is_dir=True)
            or self._excluded(Path(target))
        ):
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

    def _inside_root(self, rel: str) -> str | None:
        """Real path of a symlink's target when it exists inside the root, else None (reported)."""
        try:
            return self._guard.resolve_link(rel)
        except Refused as refused:
            self.report.skip(refused.reason, rel, refused.detail)
            return None

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
            outside = self._guard.folder_outside(rel.rpartition("/")[0])
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

    def _admit(
        self,
        rel: str,
        st: os.stat_result,
        cap: int,
        seen: set[tuple[int, int]],
        out: list[Candidate],
        via_symlink: bool,
    ) -> None:
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
            self.report.skip(Skip.TOO_LARGE, rel, f"{human_size(st.st_size)} > {human_size(cap)}")
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

        def skipped(
            reason: Skip,
            detail: str = "",
            size: int = candidate.size,
            mtime_ns: int = candidate.mtime_ns,
            digest: str | None = None,
        ) -> SkippedFile:
            self.report.skip(reason, candidate.path, detail)
            return SkippedFile(candidate.path, reason, size, mtime_ns, digest)

        try:
            data, st = self._guard.read(
                candidate.path,
                (candidate.dev, candidate.ino),
                candidate.via_symlink,
                self.options.max_file_size,
            )
        except Refused as refused:
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
            path=candidate.path,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            content_hash=digest,
            text=text,
            language=language_for(candidate.path, first_line[:200]),
            valid_utf8=valid,
        )

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

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
import stat
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


# Skips worth a warning line each: something is wrong with the file or the tree. The others are
# ordinary and only counted (and logged at info level).
WARN_SKIPS = frozenset({Skip.UNREADABLE, Skip.VANISHED, Skip.SYMLINK_LOOP, Skip.SYMLINK_OUTSIDE})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that passed the listing checks: path relative to the root (POSIX), stat data."""

    path: str
    size: int
    mtime_ns: int


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
        self.skipped[reason] += 1
        self.examples.setdefault(reason, path)
        level = logging.WARNING if reason in WARN_SKIPS else logging.INFO
        log.log(level, "skipping %s: %s%s", path, reason.value, f" ({detail})" if detail else "")

    def lines(self) -> list[str]:
        """One human line per reason, e.g. "2 binary (e.g. img/logo.png)"."""
        return [f"{n} {reason.value} (e.g. {self.examples[reason]})"
                for reason, n in sorted(self.skipped.items(), key=lambda kv: kv[0].name)]


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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


class _IgnoreRules:
    """gitignore-flavoured rules from ignore files found in several folders. A path is checked
    against the rules of each of its ancestors from the root down; the last match decides."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}

    def load(self, root: Path, folder: str, name: str) -> None:
        file = root / folder / name if folder else root / name
        try:
            lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
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


class Discovery:
    """Lists and reads the files of one root. Not thread-safe for listing; `read` is pure and
    may run in another thread."""

    def __init__(self, root: str | os.PathLike[str], options: DiscoveryOptions | None = None,
                 report: DiscoveryReport | None = None) -> None:
        self.root = check_root(root)
        self.options = options or DiscoveryOptions()
        self.report = report if report is not None else DiscoveryReport()
        self._root_prefix = str(self.root).rstrip("/") + "/"
        self._exclude = tuple(os.path.realpath(e) for e in self.options.exclude)

    # ---- listing ---------------------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """Every file to consider, sorted by path, after the listing checks (ignore rules,
        vendored folders, size cap, symlinks, duplicates). Content is not read."""
        listed = self._git_listing() if self.options.use_git else None
        if listed is not None:
            self.report.mode = "git"
            entries = self._from_git(*listed)
        else:
            self.report.mode = "walk"
            entries = self._walk()
        return self._stat_all(entries)

    def _git_listing(self) -> tuple[list[str], list[str]] | None:
        """(tracked, untracked-not-ignored) paths relative to the root, or None outside git."""

        def ls(*args: str) -> list[str] | None:
            try:
                done = subprocess.run(
                    ["git", "-c", "core.quotepath=off", "ls-files", "-z", *args],
                    cwd=self.root, capture_output=True, check=False)
            except OSError:
                return None
            if done.returncode != 0:
                err = done.stderr.decode(errors="replace").strip()
                if "not a git repository" not in err:
                    log.warning("git ls-files failed (%s); walking the folder instead",
                                err.splitlines()[0] if err else done.returncode)
                return None
            names = done.stdout.decode("utf-8", errors="surrogateescape").split("\0")
            return [n for n in names if n]

        tracked = ls("--cached")
        if tracked is None:
            return None
        untracked = ls("--others", "--exclude-standard")
        if untracked is None:
            return None
        return sorted(set(tracked)), untracked

    def _from_git(self, tracked: list[str], untracked: list[str]) -> Iterator[str]:
        rules = _IgnoreRules()
        for name in (*tracked, *untracked):
            if name == IGNORE_FILE or name.endswith("/" + IGNORE_FILE):
                rules.load(self.root, name.rpartition("/")[0], IGNORE_FILE)
        for name in tracked:
            if not rules.ignored(name):
                yield name
        for name in untracked:
            parts = name.split("/")
            if any(p in VENDORED_DIRS for p in parts[:-1]):
                self.report.skip(Skip.VENDORED, name)
            elif not rules.ignored(name):
                yield name

    def _walk(self) -> Iterator[str]:
        """Paths under the root honouring .gitignore and .coarchignore files at every level,
        following symlinked folders only inside the root and never twice (loops)."""
        rules = _IgnoreRules()
        st = os.stat(self.root)
        visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
        stack: list[str] = [""]
        while stack:
            folder = stack.pop()
            abs_folder = self.root / folder if folder else self.root
            for name in (".gitignore", IGNORE_FILE):
                if (abs_folder / name).is_file():
                    rules.load(self.root, folder, name)
            try:
                with os.scandir(abs_folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.report.skip(Skip.UNREADABLE, folder or ".", exc.strerror or str(exc))
                continue
            subfolders: list[str] = []
            for entry in entries:
                rel = f"{folder}/{entry.name}" if folder else entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_link = entry.is_symlink()
                except OSError:
                    continue
                if is_link:
                    target = self._inside_root(rel)
                    if target is None:
                        continue
                    if os.path.isdir(target):
                        if entry.name in VCS_DIRS or rules.ignored(rel, is_dir=True):
                            continue
                        tst = os.stat(target)
                        key = (tst.st_dev, tst.st_ino)
                        if key in visited:
                            self.report.skip(Skip.SYMLINK_LOOP, rel, "folder already walked")
                            continue
                        visited.add(key)
                        subfolders.append(rel)
                        continue
                if is_dir:
                    if entry.name in VCS_DIRS or self._excluded(abs_folder / entry.name):
                        continue
                    if rules.ignored(rel, is_dir=True):
                        continue
                    if entry.name in VENDORED_DIRS:
                        self.report.skip(Skip.VENDORED, rel + "/")
                        continue
                    try:
                        dst = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    visited.add((dst.st_dev, dst.st_ino))
                    subfolders.append(rel)
                elif not rules.ignored(rel):
                    yield rel
            stack.extend(reversed(subfolders))

    def _excluded(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return any(real == e or real.startswith(e + "/") for e in self._exclude)

    def _inside_root(self, rel: str) -> str | None:
        """Real path of a symlink's target when it exists inside the root, else None (reported)."""
        link = self.root / rel
        try:
            target = os.path.realpath(link, strict=True)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.report.skip(Skip.SYMLINK_LOOP, rel)
            else:
                self.report.skip(Skip.SYMLINK_LOOP, rel, "target missing")
            return None
        if target != str(self.root) and not target.startswith(self._root_prefix):
            self.report.skip(Skip.SYMLINK_OUTSIDE, rel, target)
            return None
        return target

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
            self._admit(rel, st, cap, seen, out)
        for rel in links:
            target = self._inside_root(rel)
            if target is None:
                continue
            try:
                st = os.stat(target)
            except OSError as exc:
                self.report.skip(Skip.UNREADABLE, rel, exc.strerror or str(exc))
                continue
            self._admit(rel, st, cap, seen, out)
        out.sort(key=lambda c: c.path)
        return out

    def _admit(self, rel: str, st: os.stat_result, cap: int,
               seen: set[tuple[int, int]], out: list[Candidate]) -> None:
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
                             f"{_human_size(st.st_size)} > {_human_size(cap)}")
            return
        out.append(Candidate(rel, st.st_size, st.st_mtime_ns))

    @staticmethod
    def _is_generated_name(rel: str) -> bool:
        name = rel.rpartition("/")[2]
        return name in GENERATED_NAMES or name.endswith(GENERATED_SUFFIXES)

    # ---- reading ---------------------------------------------------------------------------

    def read(self, candidate: Candidate) -> SourceFile | SkippedFile:
        """Reads and checks one file (a skip is also recorded in the report). Size and mtime
        are taken again from the open file, so a file changed since listing is recorded as it
        was read."""
        path = self.root / candidate.path

        def skipped(reason: Skip, detail: str = "", size: int = candidate.size,
                    mtime_ns: int = candidate.mtime_ns, digest: str | None = None) -> SkippedFile:
            self.report.skip(reason, candidate.path, detail)
            return SkippedFile(candidate.path, reason, size, mtime_ns, digest)

        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size > self.options.max_file_size:
                    return skipped(Skip.TOO_LARGE, _human_size(st.st_size), st.st_size,
                                   st.st_mtime_ns)
                data = fh.read(self.options.max_file_size + 1)
        except FileNotFoundError:
            return skipped(Skip.VANISHED)
        except OSError as exc:
            return skipped(Skip.UNREADABLE, exc.strerror or str(exc))
        if len(data) > self.options.max_file_size:
            return skipped(Skip.TOO_LARGE, "grew while being read", len(data), st.st_mtime_ns)
        digest = content_hash(data)
        if b"\0" in data[:SNIFF_BYTES]:
            return skipped(Skip.BINARY, "", st.st_size, st.st_mtime_ns, digest)
        text, valid = decode(data)
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


def _human_size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.0f} KB"
    return f"{n} B"

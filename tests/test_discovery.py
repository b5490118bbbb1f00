"""Discovery: which files are listed and read, in git repositories and plain folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from indexing_helpers import DROP_DAC_SOURCE, index_rows

from coarch.cli import main
from coarch.discovery import (
    Discovery,
    DiscoveryOptions,
    Skip,
    SkippedFile,
    SourceFile,
    check_root,
    decode,
)
from coarch.errors import UsageError
from coarch.languages import EXTENSIONS, FILENAMES, language_for

REPO = Path(__file__).resolve().parent.parent
GOOD_SOURCE = "def greet(name):\n    return f'hello {name}'\n"


def write(root: Path, rel: str, text: str | bytes = "x = 1\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def listed(root: Path, **options: object) -> list[str]:
    return [c.path for c in Discovery(root, DiscoveryOptions(**options)).candidates()]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with tracked, untracked, ignored and vendored files."""
    root = tmp_path / "repo"
    write(root, "src/app.py")
    write(root, "src/util.js")
    write(root, "vendor/lib.py")  # vendored but tracked: kept
    write(root, ".gitignore", "*.log\nbuild/\n")
    write(root, ".coarchignore", "docs/private/\n")
    write(root, "docs/private/notes.md", "secret\n")
    write(root, "docs/guide.md", "# guide\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    write(root, "src/new.py")  # untracked, not ignored: kept
    write(root, "debug.log", "log\n")  # ignored by .gitignore
    write(root, "build/out.py")  # ignored folder
    write(root, "node_modules/pkg/index.js")  # untracked vendored folder
    write(root, "local.txt", "local\n")
    (root / ".git" / "info" / "exclude").write_text("local.txt\n")
    return root


def test_git_repository_lists_what_git_sees(repo: Path) -> None:
    d = Discovery(repo)
    paths = [c.path for c in d.candidates()]
    assert d.report.mode == "git"
    assert paths == sorted(paths)
    assert {
        "src/app.py",
        "src/util.js",
        "src/new.py",
        "vendor/lib.py",
        "docs/guide.md",
        ".gitignore",
        ".coarchignore",
    } <= set(paths)
    for gone in (
        "debug.log",
        "build/out.py",
        "node_modules/pkg/index.js",
        "local.txt",
        "docs/private/notes.md",
    ):
        assert gone not in paths
    assert d.report.skipped[Skip.VENDORED] == 1


def test_same_rules_without_git(repo: Path) -> None:
    paths = listed(repo, use_git=False)
    assert {"src/app.py", "src/new.py", "docs/guide.md"} <= set(paths)
    for gone in ("debug.log", "build/out.py", "node_modules/pkg/index.js", "docs/private/notes.md"):
        assert gone not in paths
    assert not any(p.startswith(".git/") for p in paths)
    # Without git, a vendor/ folder cannot be known to be tracked: it is skipped.
    assert "vendor/lib.py" not in paths


def test_nested_gitignore_and_negation_without_git(tmp_path: Path) -> None:
    write(tmp_path, "a/.gitignore", "*.gen.py\n!keep.gen.py\n")
    write(tmp_path, "a/x.gen.py")
    write(tmp_path, "a/keep.gen.py")
    write(tmp_path, "a/b/y.gen.py")
    write(tmp_path, "x.gen.py")  # the rule lives in a/: not here
    paths = listed(tmp_path, use_git=False)
    assert "a/keep.gen.py" in paths and "x.gen.py" in paths
    assert "a/x.gen.py" not in paths and "a/b/y.gen.py" not in paths


def test_index_folder_inside_root_is_excluded(tmp_path: Path) -> None:
    write(tmp_path, "main.py")
    write(tmp_path, ".coarch-index/index.sqlite", "db")
    paths = listed(tmp_path, use_git=False, exclude=(str(tmp_path / ".coarch-index"),))
    assert paths == ["main.py"]


def test_size_cap_and_generated_names(tmp_path: Path) -> None:
    write(tmp_path, "small.py", "x = 1\n")
    write(tmp_path, "big.py", "x = 1\n" * 50_000)  # 300 KB
    write(tmp_path, "package-lock.json", "{}\n")
    write(tmp_path, "app.min.js", "var a=1;\n")
    d = Discovery(tmp_path, DiscoveryOptions(max_file_size=100_000, use_git=False))
    assert [c.path for c in d.candidates()] == ["small.py"]
    assert d.report.skipped[Skip.TOO_LARGE] == 1
    assert d.report.skipped[Skip.MINIFIED] == 2
    assert any("over the size cap" in line and "big.py" in line for line in d.report.lines())


def test_read_checks_binary_minified_and_encoding(tmp_path: Path) -> None:
    write(tmp_path, "img.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(100))
    write(tmp_path, "min.js", "var a=1;" * 500 + "\n")  # one 4,000-char line
    write(tmp_path, "latin1.py", "# caf\xe9\nx = 1\n".encode("latin-1"))
    write(tmp_path, "crlf.py", b"\xef\xbb\xbfa = 1\r\nb = 2\r\n")
    write(tmp_path, "ok.py", "def f():\n    return 1\n" + "y = 'x' * 10\n" * 50)
    d = Discovery(tmp_path, DiscoveryOptions(use_git=False))
    got = {c.path: d.read(c) for c in d.candidates()}
    assert isinstance(got["img.png"], SkippedFile) and got["img.png"].reason is Skip.BINARY
    assert got["img.png"].content_hash  # remembered, so it is not read again while unchanged
    assert isinstance(got["min.js"], SkippedFile) and got["min.js"].reason is Skip.MINIFIED
    latin = got["latin1.py"]
    assert isinstance(latin, SourceFile) and not latin.valid_utf8
    assert latin.text == "# caf\ufffd\nx = 1\n" and d.report.invalid_utf8 == 1
    crlf = got["crlf.py"]
    assert isinstance(crlf, SourceFile) and crlf.text == "a = 1\nb = 2\n" and crlf.valid_utf8
    ok = got["ok.py"]
    assert isinstance(ok, SourceFile) and ok.language == "python"
    assert ok.size == (tmp_path / "ok.py").stat().st_size


def test_long_line_in_ordinary_file_is_kept(tmp_path: Path) -> None:
    text = "".join(f"line_{i} = {i}\n" for i in range(400)) + "TABLE = '" + "ab " * 700 + "'\n"
    write(tmp_path, "table.py", text)
    d = Discovery(tmp_path, DiscoveryOptions(use_git=False))
    (c,) = d.candidates()
    assert isinstance(d.read(c), SourceFile)


def test_file_deleted_after_listing_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    write(tmp_path, "b.py")
    d = Discovery(tmp_path, DiscoveryOptions(use_git=False))
    candidates = d.candidates()
    (tmp_path / "b.py").unlink()
    results = [d.read(c) for c in candidates]
    assert isinstance(results[0], SourceFile)
    assert isinstance(results[1], SkippedFile) and results[1].reason is Skip.VANISHED
    assert "1 deleted during the run (e.g. b.py)" in d.report.lines()


def test_symlinks_never_leave_the_root_nor_loop(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside/secret.py")
    root = tmp_path / "root"
    write(root, "pkg/mod.py")
    (root / "pkg" / "loop").symlink_to(root / "pkg")  # folder loop
    (root / "up").symlink_to(root)  # loop to the root
    (root / "escape.py").symlink_to(outside)  # file outside
    (root / "escape_dir").symlink_to(outside.parent)  # folder outside
    (root / "alias.py").symlink_to(root / "pkg" / "mod.py")  # same file twice
    (root / "dangling.py").symlink_to(root / "missing.py")
    (root / "self").symlink_to(root / "self")  # ELOOP
    for use_git in (False, True):
        if use_git:
            git(root, "init", "-q")
        d = Discovery(root, DiscoveryOptions(use_git=use_git))
        paths = [c.path for c in d.candidates()]
        assert paths == ["pkg/mod.py"], (use_git, paths)
        assert d.report.skipped[Skip.SYMLINK_OUTSIDE] >= 1
        assert d.report.skipped[Skip.DUPLICATE] == 1  # alias.py -> pkg/mod.py
        assert d.report.skipped[Skip.SYMLINK_LOOP] >= 2


def test_check_root_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such folder"):
        check_root(tmp_path / "nope")
    write(tmp_path, "file.py")
    with pytest.raises(UsageError, match="not a folder"):
        check_root(tmp_path / "file.py")
    assert check_root(tmp_path) == tmp_path.resolve()


def test_decode_reports_invalid_utf8() -> None:
    assert decode(b"ok\r\n") == ("ok\n", True)
    assert decode(b"\xff\xfe") == ("\ufffd\ufffd", False)


def test_languages_cover_thirty_and_well_known_names() -> None:
    assert len(set(EXTENSIONS.values()) | set(FILENAMES.values())) >= 30
    cases = {
        "a.py": "python",
        "b.ts": "typescript",
        "c.tsx": "tsx",
        "d.go": "go",
        "e.rs": "rust",
        "f.java": "java",
        "g.cpp": "cpp",
        "h.h": "c",
        "Makefile": "make",
        "Dockerfile": "dockerfile",
        "CMakeLists.txt": "cmake",
        "x/Dockerfile.dev": "dockerfile",
        "README.md": "markdown",
        "q.SQL": "sql",
    }
    for path, language in cases.items():
        assert language_for(path) == language, path
    assert language_for("bin/tool", "#!/usr/bin/env python3") == "python"
    assert language_for("bin/run", "#!/bin/bash") == "shell"
    assert language_for("data.unknownext") is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "ok.py")
    write(tmp_path, "secret.py").chmod(0)
    code = DROP_DAC_SOURCE + (
        "import sys, json\n"
        "from coarch.discovery import Discovery, DiscoveryOptions\n"
        "d = Discovery(sys.argv[1], DiscoveryOptions(use_git=False))\n"
        "out = {c.path: getattr(d.read(c), 'reason', None) for c in d.candidates()}\n"
        "print(json.dumps({k: v.name if v else None for k, v in out.items()}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert '"secret.py": "UNREADABLE"' in done.stdout and '"ok.py": null' in done.stdout
    assert "skipping secret.py: unreadable (Permission denied)" in done.stderr


# ---- nothing outside the root, no hang, no abort on one bad entry --------------------------------


def index_cli(capsys: pytest.CaptureFixture[str], root: Path, *extra: str) -> tuple[int, str, str]:
    code = main(
        ["index", str(root), "--index", str(root.parent / "idx"), "--checkpoint-every", "0", *extra]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def indexed_paths(index_dir: Path) -> list[str]:
    return sorted({row[0] for row in index_rows(index_dir)})


def test_tracked_folder_replaced_by_a_symlink_outside_is_not_indexed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path, "outside/f.py", "OUTSIDE_SECRET = 1\n")
    root = tmp_path / "repo"
    write(root, "a.py")
    write(root, "d/f.py", "inside = 1\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    shutil.rmtree(root / "d")
    (root / "d").symlink_to(tmp_path / "outside")  # git ls-files still lists d/f.py
    for use_git in (True, False):
        d = Discovery(root, DiscoveryOptions(use_git=use_git))
        assert [c.path for c in d.candidates()] == ["a.py"], use_git
        assert d.report.skipped[Skip.SYMLINK_OUTSIDE] >= 1
    code, out, err = index_cli(capsys, root)
    assert code == 0 and "1 files: 1 indexed" in out
    assert "coarch: warning: skipping d/f.py: symlink pointing outside the root" in err
    assert indexed_paths(tmp_path / "idx") == ["a.py"]


def test_symlinked_folder_inside_the_root_is_still_read(tmp_path: Path) -> None:
    write(tmp_path, "data/.gitignore", "*.py\n")  # data/ itself is not listed...
    write(tmp_path, "data/mod.py", "x = 1\n")
    (tmp_path / "alias").symlink_to(tmp_path / "data")  # ...but reached through alias/
    (tmp_path / "one.py").symlink_to(tmp_path / "data" / "mod.py")
    d = Discovery(tmp_path, DiscoveryOptions(use_git=False))
    candidates = d.candidates()
    assert [c.path for c in candidates] == ["alias/.gitignore", "one.py"]
    assert all(isinstance(d.read(c), SourceFile) for c in candidates)


def test_file_replaced_by_a_symlink_outside_during_the_run_is_not_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = write(tmp_path, "outside/secret.py", "OUTSIDE_SECRET = 1\n")
    write(tmp_path, "outside/pkg/mod.py", "OUTSIDE_SECRET = 2\n")
    root = tmp_path / "root"
    write(root, "a.py")
    write(root, "pkg/mod.py")
    d = Discovery(root, DiscoveryOptions(use_git=False))
    a, mod = d.candidates()
    (root / "a.py").unlink()
    (root / "a.py").symlink_to(secret)  # the file itself
    shutil.rmtree(root / "pkg")
    (root / "pkg").symlink_to(tmp_path / "outside" / "pkg")  # a folder on its path
    with caplog.at_level(logging.WARNING, logger="coarch"):
        got = [d.read(a), d.read(mod)]
    for result in got:
        assert isinstance(result, SkippedFile) and result.reason is Skip.SYMLINK_OUTSIDE
    assert d.report.skipped[Skip.SYMLINK_OUTSIDE] == 2
    warned = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("skipping a.py: symlink pointing outside the root") for m in warned)
    assert any(m.startswith("skipping pkg/mod.py: symlink pointing outside") for m in warned)


def test_file_replaced_inside_the_root_during_the_run_is_read(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "old = 1\n")
    write(tmp_path, "b.py", "b = 1\n")
    d = Discovery(tmp_path, DiscoveryOptions(use_git=False))
    a, b = d.candidates()
    write(tmp_path, "a.tmp", "new = 2\n").replace(tmp_path / "a.py")  # an editor's save
    (tmp_path / "b.py").unlink()
    (tmp_path / "b.py").symlink_to(tmp_path / "a.py")  # a symlink inside
    got_a, got_b = d.read(a), d.read(b)
    assert isinstance(got_a, SourceFile) and got_a.text == "new = 2\n"
    assert isinstance(got_b, SourceFile) and got_b.text == "new = 2\n"


READ_AFTER_REPLACING = """
import json, os, sys
from coarch.discovery import Discovery, DiscoveryOptions
root = sys.argv[1]
d = Discovery(root, DiscoveryOptions(use_git=False))
candidates = d.candidates()
os.unlink(os.path.join(root, "a.py"))
os.mkfifo(os.path.join(root, "a.py"))     # nobody ever writes to it
print(json.dumps([getattr(d.read(c), "reason", None) and d.read(c).reason.name
                  for c in candidates]))
"""


def test_file_replaced_by_a_fifo_during_the_run_does_not_hang(tmp_path: Path) -> None:
    write(tmp_path, "a.py")
    write(tmp_path, "b.py")
    try:
        done = subprocess.run(
            [sys.executable, "-c", READ_AFTER_REPLACING, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO put in a file's place hung")
    assert json.loads(done.stdout) == ["NOT_REGULAR", None]


# Runs the CLI without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, removed from the bounding set so
# that git, started by it, cannot read what the permission bits forbid either (root otherwise can).
SETPRIV = shutil.which("setpriv")
NO_DAC = [
    SETPRIV or "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def run_without_dac(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NO_DAC, sys.executable, "-m", "coarch", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.skipif(
    SETPRIV is None or os.geteuid() != 0,
    reason="needs root and setpriv to drop the capability to read anything",
)
@pytest.mark.parametrize("use_git", [False, True])
def test_unreadable_folder_is_skipped_and_named(tmp_path: Path, use_git: bool) -> None:
    root = tmp_path / "repo"
    write(root, "a.py", GOOD_SOURCE)
    write(root, "noexec/b.py")  # neither listed nor entered
    write(root, "noread/c.py")  # entered (x) but not listed (r)
    if use_git:
        git(root, "init", "-q")
    (root / "noexec").chmod(0)
    (root / "noread").chmod(0o311)
    idx = tmp_path / "idx"
    try:
        done = run_without_dac(
            "index",
            str(root),
            "--index",
            str(idx),
            "--checkpoint-every",
            "0",
            *([] if use_git else ["--no-git"]),
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        assert "1 files: 1 indexed" in done.stdout
        assert "skipped: 2 unreadable (e.g. noexec)" in done.stdout
        assert "coarch: warning: skipping noexec: unreadable (Permission denied)" in done.stderr
        assert "coarch: warning: skipping noread: unreadable (Permission denied)" in done.stderr
        status = run_without_dac("status", str(root), "--index", str(idx), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pending"] == {"new": 0, "changed": 0, "deleted": 0}
    finally:
        (root / "noexec").chmod(0o755)
        (root / "noread").chmod(0o755)


def test_names_that_are_not_utf8_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "a.py")
    bad = os.fsdecode(b"bad\xff\xfe.py")
    write(root, bad)
    write(root, os.fsdecode(b"dir\xff") + "/c.py")
    for use_git in (False, True):
        if use_git:
            git(root, "init", "-q")
        d = Discovery(root, DiscoveryOptions(use_git=use_git))
        assert [c.path for c in d.candidates()] == ["a.py"], use_git
        assert d.report.skipped[Skip.BAD_NAME] == 2
        assert d.report.examples[Skip.BAD_NAME] in ("bad\\xff\\xfe.py", "dir\\xff", "dir\\xff/c.py")


def test_a_name_that_is_not_utf8_does_not_stop_indexing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    write(root, "a.py", GOOD_SOURCE)
    write(root, os.fsdecode(b"bad\xff\xfe.py"), GOOD_SOURCE)
    git(root, "init", "-q")
    for _ in range(2):  # and a later update lands too
        code, out, err = index_cli(capsys, root)
        assert code == 0, err
        assert "skipped: 1 name not valid UTF-8 (e.g. bad\\xff\\xfe.py)" in out
        assert "coarch: warning: skipping bad\\xff\\xfe.py: name not valid UTF-8" in err
    write(root, "b.py", "def other():\n    return 2\n")
    code, out, _ = index_cli(capsys, root)
    assert code == 0 and "2 files: 1 indexed, 1 unchanged" in out
    assert indexed_paths(tmp_path / "idx") == ["a.py", "b.py"]


def test_folder_ignored_by_the_enclosing_repository_is_indexed_by_its_own_rules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write(repo, ".gitignore", "gen/\n")
    write(repo, "gen/g.py", GOOD_SOURCE)
    write(repo, "gen/.gitignore", "*.tmp.py\n")
    write(repo, "gen/x.tmp.py")
    git(repo, "init", "-q")
    d = Discovery(repo / "gen")
    assert [c.path for c in d.candidates()] == [".gitignore", "g.py"]
    assert d.report.mode == "walk"
    code, out, err = index_cli(capsys, repo / "gen")
    assert code == 0 and "2 files: 2 indexed" in out
    assert (
        f"coarch: warning: {repo / 'gen'} is ignored by the enclosing git repository"
        " (.gitignore:1:gen/); indexing it by its own ignore files"
    ) in err
    # A folder that is not ignored keeps git's listing.
    write(repo, "src/s.py")
    assert Discovery(repo / "src").candidates()[0].path == "s.py"


def test_index_folder_inside_a_repository_is_excluded_in_git_mode(tmp_path: Path) -> None:
    write(tmp_path, "main.py")
    git(tmp_path, "init", "-q")
    write(tmp_path, ".coarch-index/index.sqlite", "db")
    write(tmp_path, ".coarch-index/lock", "123\n")
    d = Discovery(tmp_path, DiscoveryOptions(exclude=(str(tmp_path / ".coarch-index"),)))
    assert [c.path for c in d.candidates()] == ["main.py"] and d.report.mode == "git"

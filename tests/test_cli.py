"""The `coarch index` and `coarch status` commands: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from indexing_helpers import DROP_DAC_SOURCE, SMALL_FILES, stdlib_tree

from coarch.cli import main
from coarch.locking import IndexLock
from coarch.store import Store

REPO = Path(__file__).resolve().parent.parent
GOOD = "def greet(name):\n    return f'hello {name}'\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("coarch: error:")]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "good.py").write_text(GOOD)
    return root


def index_cmd(root: Path, *extra: str) -> list[str]:
    return ["index", str(root), "--index", str(root.parent / "idx"), *extra]


# ---- bad input: one clear line, no traceback -----------------------------------------------------


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "index", str(tmp_path / "nope"), "--index", str(tmp_path / "i"))
    assert code == 2 and out == ""
    assert error_lines(err) == [f"coarch: error: no such folder: {tmp_path / 'nope'}"]
    assert "coarch: hint:" in err


def test_file_instead_of_folder(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    code, _, err = run(capsys, "index", str(repo / "good.py"), "--index", str(repo / "i"))
    assert code == 2
    assert error_lines(err) == [f"coarch: error: not a folder: {repo / 'good.py'}"]


def test_bad_option_value(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    code, _, err = run(capsys, *index_cmd(repo, "--threads", "zero"))
    assert code == 2
    assert error_lines(err) == ["coarch: error: argument --threads: 'zero' is not a whole number"]
    code, _, err = run(capsys, *index_cmd(repo, "--profile", "turbo"))
    assert code == 2
    (line,) = error_lines(err)
    assert line.startswith("coarch: error: argument --profile: 'turbo' is not a memory profile")
    code, _, err = run(capsys, "frobnicate")
    assert code == 2 and len(error_lines(err)) == 1


def test_empty_repository(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    code, out, err = run(capsys, *index_cmd(root, "-q"))
    assert code == 0
    assert f"coarch: warning: nothing to index in {root}: no files found" in err
    code, out, _ = run(capsys, *index_cmd(root, "--json"))
    assert code == 0 and json.loads(out)["files_total"] == 0


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("blob.bin", b"\x00\x01\x02binary\x00" * 100, "1 binary (e.g. blob.bin)"),
        ("huge.py", None, "1 over the size cap (e.g. huge.py)"),  # 50 MB, sparse
        ("oneline.js", b"var a=1;" * 640_000, "1 over the size cap (e.g. oneline.js)"),  # 5 MB
    ],
)
def test_skipped_files_are_summarised(
    capsys: pytest.CaptureFixture[str], repo: Path, name: str, content: bytes | None, expected: str
) -> None:
    path = repo / name
    if content is None:
        with open(path, "wb") as fh:
            fh.truncate(50_000_000)
    else:
        path.write_bytes(content)
    code, out, _ = run(capsys, *index_cmd(repo))
    assert code == 0
    assert f"skipped: {expected}" in out
    assert "files: 1 indexed" in out


def test_single_line_file_under_a_raised_cap_is_minified(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    (repo / "oneline.js").write_bytes(b"var a=1;" * 640_000)
    code, out, _ = run(capsys, *index_cmd(repo, "--max-file-size", "10M"))
    assert code == 0 and "skipped: 1 minified or generated (e.g. oneline.js)" in out


def test_invalid_utf8_is_indexed_with_a_warning(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    (repo / "latin.py").write_bytes("# caf\xe9\ndef cafe():\n    pass\n".encode("latin-1"))
    code, out, err = run(capsys, *index_cmd(repo))
    assert code == 0
    assert "coarch: warning: latin.py: not valid UTF-8; undecodable bytes replaced" in err
    assert "2 files: 2 indexed" in out and "1 files not valid UTF-8" in out


def test_symlink_loop(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    (repo / "loop").symlink_to(repo)
    (repo / "self").symlink_to(repo / "self")
    code, out, err = run(capsys, *index_cmd(repo, "--no-git"))
    assert code == 0
    assert "coarch: warning: skipping self: symlink loop or dangling symlink" in err
    assert "1 files: 1 indexed" in out


def test_unreadable_file(tmp_path: Path, repo: Path) -> None:
    (repo / "secret.py").write_text(GOOD)
    (repo / "secret.py").chmod(0)
    code = DROP_DAC_SOURCE + "import sys\nfrom coarch.cli import main\nsys.exit(main())\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *index_cmd(repo)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "coarch: warning: skipping secret.py: unreadable (Permission denied)" in done.stderr
    assert "skipped: 1 unreadable (e.g. secret.py)" in done.stdout


def test_corrupt_sqlite_is_rebuilt(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    idx = repo.parent / "idx"
    idx.mkdir()
    (idx / "index.sqlite").write_bytes(b"garbage, not SQLite\n" * 500)
    code, out, err = run(capsys, *index_cmd(repo))
    assert code == 0
    assert "is unreadable: file is not a database; rebuilding the index from scratch" in err
    assert "1 files: 1 indexed" in out
    code, out, _ = run(capsys, "status", "--index", str(idx), "--json")
    assert code == 0 and json.loads(out)["files"] == 1


def test_corrupt_sqlite_for_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "index.sqlite").write_bytes(b"garbage, not SQLite\n" * 500)
    code, _, err = run(capsys, "status", str(tmp_path), "--index", str(tmp_path))
    assert code == 2
    (line,) = error_lines(err)
    assert "is unreadable: file is not a database" in line
    assert "coarch: hint: `coarch index --full PATH` rebuilds it" in err


def test_corrupt_faiss_is_rebuilt_from_sqlite(
    capsys: pytest.CaptureFixture[str], repo: Path
) -> None:
    assert run(capsys, *index_cmd(repo, "-q"))[0] == 0
    faiss_file = repo.parent / "idx" / "vectors.faiss"
    size = faiss_file.stat().st_size
    faiss_file.write_bytes(b"\x00" * 64)
    code, out, _ = run(capsys, "status", "--index", str(repo.parent / "idx"), "--json")
    assert json.loads(out)["faiss"]["state"] == "corrupt"
    code, out, err = run(capsys, *index_cmd(repo, "-v"))
    assert code == 0 and "0 chunks embedded" in out
    assert "writing vectors.faiss (flat, 1 vectors, corrupt)" in err
    assert faiss_file.stat().st_size == size


def test_index_locked(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    with IndexLock(repo.parent / "idx"):
        code, out, err = run(capsys, *index_cmd(repo))
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert line.startswith(f"coarch: error: index is locked by pid {os.getpid()} (")
    assert "coarch: hint: wait for that `coarch index` to finish" in err


# ---- normal use ----------------------------------------------------------------------------------


def test_index_then_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py", "tty.py"))
    idx = tmp_path / "idx"
    code, out, _ = run(capsys, "index", str(tree), "--index", str(idx))
    assert code == 0
    assert "3 files: 3 indexed, 0 unchanged" in out and "chunks in the index" in out
    code, out, _ = run(capsys, "index", str(tree), "--index", str(idx))
    assert "3 files: 0 indexed, 3 unchanged" in out and "0 chunks embedded" in out

    (tree / "lib" / "this.py").unlink()
    code, out, _ = run(capsys, "status", str(tree), "--index", str(idx))
    assert code == 0
    assert f"index:      {idx}" in out and f"root:       {tree}" in out
    assert "files:      3" in out and "FAISS fresh, flat" in out and "last run:   ok" in out
    assert "pending:    0 new, 0 changed, 1 deleted (run `coarch index" in out
    code, out, _ = run(capsys, "status", "--index", str(idx), "--json", "--memory")
    status = json.loads(out)
    assert status["files"] == 3 and status["dim"] == 384 and status["max_seq_length"] == 256
    assert status["pending"] == {"new": 0, "changed": 0, "deleted": 1}
    assert status["memory"]["rss_mb"] > 0 and status["memory"]["pressure"] in (
        "low",
        "moderate",
        "high",
        "critical",
    )
    code, out, _ = run(capsys, "status", "--index", str(idx), "--memory")
    assert "memory:     RSS " in out and "pressure " in out


def test_status_without_an_index(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "status", str(tmp_path), "--index", str(tmp_path / "none"))
    assert code == 2 and out == ""
    assert error_lines(err) == [f"coarch: error: no index for {tmp_path}"]
    assert f"coarch: hint: run `coarch index {tmp_path}` first" in err


def test_default_location_and_status_from_inside(
    capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("COARCH_INDEX_DIR", raising=False)
    assert run(capsys, "index", str(repo), "-q")[0] == 0
    folders = list((tmp_path / "cache" / "coarch").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("repo-")
    sub = repo / "pkg"
    sub.mkdir()
    monkeypatch.chdir(sub)
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["index_dir"] == str(folders[0])


def test_python_m_coarch_help_and_closed_pipe(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coarch", "index", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert (
        "exit codes:" in done.stdout
        and "130" in done.stdout
        and "--checkpoint-every" in done.stdout
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    done2 = subprocess.run(
        [sys.executable, "-m", "coarch", "--help"],
        cwd=REPO,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    os.close(write_end)
    assert done2.returncode == 0 and done2.stderr == ""


def test_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py",))
    done = subprocess.run(
        [sys.executable, "-m", "coarch", "index", str(tree), "--index", str(tmp_path / "idx")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("coarch: ") for line in lines)
    assert any(line.startswith("coarch: indexing: files ") and "RSS" in line for line in lines)
    assert "\r" not in done.stderr and "1 files: 1 indexed" in done.stdout


def test_status_counts_chunks_per_language_and_lang_takes_aliases(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Retry.kt").write_text(
        "class Uploader {\n    fun retryUpload(times: Int): Boolean {\n"
        "        return times > 0\n    }\n}\n"
    )
    (tree / "retry.rb").write_text("def retry_upload(times)\n  times > 0\nend\n")
    (tree / "notes.md").write_text("# Uploads\n\nWe retry failed uploads.\n")
    idx = tmp_path / "idx"
    code, _, _ = run(capsys, "index", str(tree), "--index", str(idx), "--checkpoint-every", "0")
    assert code == 0
    code, out, _ = run(capsys, "status", "--index", str(idx), "--json")
    assert json.loads(out)["languages"] == {"kotlin": 1, "markdown": 1, "ruby": 1}
    code, out, _ = run(capsys, "status", "--index", str(idx))
    assert "languages:  kotlin 1, markdown 1, ruby 1" in out
    for alias, path in (("kt", "Retry.kt"), ("rb", "retry.rb"), ("md", "notes.md")):
        code, out, _ = run(
            capsys, "search", "--index", str(idx), "--lang", alias, "--json", "retry uploads"
        )
        assert code == 0 and {json.loads(line)["path"] for line in out.splitlines()} == {path}


# ---- settings out of range -----------------------------------------------------------------------


def test_threads_above_the_cores_are_capped(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    code, out, err = run(capsys, *index_cmd(repo, "-q", "--threads", "9999"))
    assert (code, out) == (0, "")
    assert err == (
        f"coarch: warning: 9999 threads asked for, but this process may use {cores}"
        f" cores: using {cores}\n"
    )


# ---- the disk filling up -------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB filesystem (tmpfs; mounting needs root, as the tests run here)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Takes all of `disk`'s free space but `leave` bytes with one file, returned."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - leave)
    return filler


DISK_FULL_HINT = "coarch: hint: free some space, then run the same command again to resume"


def test_disk_full_mid_run_keeps_committed_work(
    capsys: pytest.CaptureFixture[str], small_disk: Path, tmp_path: Path
) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py"))
    idx = small_disk / "idx"
    argv = ["index", str(tree), "--index", str(idx), "--checkpoint-every", "0"]
    assert run(capsys, *argv, "-q")[0] == 0
    more = tuple(f for f in SMALL_FILES if f not in ("keyword.py", "this.py"))[:5]
    stdlib_tree(tree, more)  # about 60 chunks more: far over 64 KB in SQLite
    filler = fill(small_disk, 64 * 1024)
    code, out, err = run(capsys, *argv, "-q")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"coarch: error: disk full while writing the index in {idx}",
        DISK_FULL_HINT,
    ]
    with Store(idx, readonly=True) as store:
        assert store.counts()["files"] == 2  # what the first run committed is intact
    filler.unlink()
    code, out, err = run(capsys, *argv)
    assert code == 0 and "7 files: 5 indexed, 2 unchanged" in out, err


def test_disk_full_while_writing_vectors_faiss(
    capsys: pytest.CaptureFixture[str], small_disk: Path, tmp_path: Path
) -> None:
    tree = stdlib_tree(tmp_path / "tree", SMALL_FILES)
    idx = small_disk / "idx"
    argv = ["index", str(tree), "--index", str(idx), "-q"]
    assert run(capsys, *argv)[0] == 0
    faiss_size = (idx / "vectors.faiss").stat().st_size
    assert faiss_size > 128 * 1024
    (idx / "vectors.faiss").unlink()
    filler = fill(small_disk, 64 * 1024)  # room for SQLite's bookkeeping, not for the vectors
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.splitlines() == [
        f"coarch: error: disk full while writing the index in {idx}",
        DISK_FULL_HINT,
    ]
    left = {p.name for p in idx.iterdir()} - {"index.sqlite-wal", "index.sqlite-shm"}
    assert sorted(left) == ["index.sqlite", "lock"]  # no temp file left
    filler.unlink()
    assert run(capsys, *argv)[0] == 0
    assert (idx / "vectors.faiss").stat().st_size == faiss_size


# ---- stopping: Ctrl-C and SIGTERM ----------------------------------------------------------------


def _run_state(idx: Path) -> str | None:
    try:
        with sqlite3.connect(f"file:{idx / 'index.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'last_run_state'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _stop_once_running(argv: list[str], idx: Path, signum: int, **popen: object) -> tuple[int, str]:
    """Starts `coarch index`, sends `signum` once the run has begun (its state is recorded, the
    signal handlers are in place), and returns the exit code and stderr."""
    proc = subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-m", "coarch", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    deadline = time.monotonic() + 120
    while _run_state(idx) != "running" and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err
    return proc.returncode, err


def test_sigterm_stops_like_ctrl_c_and_exits_143(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", SMALL_FILES)
    idx = tmp_path / "idx"
    code, err = _stop_once_running(
        ["index", str(tree), "--index", str(idx)], idx, signal.SIGTERM, cwd=REPO
    )
    assert code == 143, err
    lines = [
        line
        for line in err.splitlines()
        if not line.startswith(("coarch: scanning", "coarch: indexing"))
    ]
    assert lines == [
        (
            "coarch: warning: terminated: finishing the batch in hand and committing (SIGTERM"
            " again to stop at once)"
        ),
        "coarch: terminated; 0 files committed",
        (f"coarch: hint: run `coarch index {tree} --index {idx}` again to resume where it stopped"),
    ]
    assert _run_state(idx) == "interrupted"


def test_resume_hint_repeats_the_options_that_pick_the_index(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "my tree", SMALL_FILES[:3])
    idx = tmp_path / "my idx"
    env = {k: v for k, v in os.environ.items() if k != "COARCH_INDEX_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    argv = [
        "index",
        str(tree),
        "--index",
        str(idx),
        "--no-git",
        "--precision",
        "fp32",
        "--max-file-size",
        "2M",
    ]
    code, err = _stop_once_running(argv, idx, signal.SIGINT, cwd=REPO, env=env)
    assert code == 130, err
    (hint,) = [line for line in err.splitlines() if line.startswith("coarch: hint:")]
    command = (
        f"coarch index {shlex.quote(str(tree))} --index {shlex.quote(str(idx))}"
        " --no-git --precision fp32 --max-file-size 2000000"
    )
    assert hint == f"coarch: hint: run `{command}` again to resume where it stopped"
    # Run as printed, from elsewhere: it resumes the same index (none is made in the cache).
    done = subprocess.run(
        command.replace("coarch", f"{sys.executable} -m coarch", 1),
        shell=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 files: 3 indexed" in done.stdout
    assert not (tmp_path / "cache" / "coarch").exists()
    with Store(idx, readonly=True) as store:
        assert store.counts()["files"] == 3 and store.precision() == "fp32"

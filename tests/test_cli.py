"""The `coarch index` and `coarch status` commands: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from indexing_helpers import DROP_DAC_SOURCE, stdlib_tree

from coarch.cli import main
from coarch.locking import IndexLock

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
    assert error_lines(err) == [
        "coarch: error: argument --threads: 'zero' is not a whole number"]
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


@pytest.mark.parametrize("name, content, expected", [
    ("blob.bin", b"\x00\x01\x02binary\x00" * 100, "1 binary (e.g. blob.bin)"),
    ("huge.py", None, "1 over the size cap (e.g. huge.py)"),          # 50 MB, sparse
    ("oneline.js", b"var a=1;" * 640_000, "1 over the size cap (e.g. oneline.js)"),  # 5 MB
])
def test_skipped_files_are_summarised(capsys: pytest.CaptureFixture[str], repo: Path,
                                      name: str, content: bytes | None, expected: str) -> None:
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


def test_single_line_file_under_a_raised_cap_is_minified(capsys: pytest.CaptureFixture[str],
                                                         repo: Path) -> None:
    (repo / "oneline.js").write_bytes(b"var a=1;" * 640_000)
    code, out, _ = run(capsys, *index_cmd(repo, "--max-file-size", "10M"))
    assert code == 0 and "skipped: 1 minified or generated (e.g. oneline.js)" in out


def test_invalid_utf8_is_indexed_with_a_warning(capsys: pytest.CaptureFixture[str],
                                                repo: Path) -> None:
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
    done = subprocess.run([sys.executable, "-c", code, *index_cmd(repo)], cwd=REPO,
                          capture_output=True, text=True, check=False)
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


def test_corrupt_faiss_is_rebuilt_from_sqlite(capsys: pytest.CaptureFixture[str],
                                              repo: Path) -> None:
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
        "low", "moderate", "high", "critical")
    code, out, _ = run(capsys, "status", "--index", str(idx), "--memory")
    assert "memory:     RSS " in out and "pressure " in out


def test_status_without_an_index(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "status", str(tmp_path), "--index", str(tmp_path / "none"))
    assert code == 2 and out == ""
    assert error_lines(err) == [f"coarch: error: no index for {tmp_path}"]
    assert f"coarch: hint: run `coarch index {tmp_path}` first" in err


def test_default_location_and_status_from_inside(capsys: pytest.CaptureFixture[str],
                                                 repo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
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
    done = subprocess.run([sys.executable, "-m", "coarch", "index", "--help"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "exit codes:" in done.stdout and "130" in done.stdout and "--checkpoint-every" in \
        done.stdout
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    done2 = subprocess.run([sys.executable, "-m", "coarch", "--help"], cwd=REPO,
                           stdout=write_end, stderr=subprocess.PIPE, text=True, check=False)
    os.close(write_end)
    assert done2.returncode == 0 and done2.stderr == ""


def test_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py",))
    done = subprocess.run(
        [sys.executable, "-m", "coarch", "index", str(tree), "--index", str(tmp_path / "idx")],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("coarch: ") for line in lines)
    assert any(line.startswith("coarch: indexing: files ") and "RSS" in line for line in lines)
    assert "\r" not in done.stderr and "1 files: 1 indexed" in done.stdout


def test_status_counts_chunks_per_language_and_lang_takes_aliases(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Retry.kt").write_text(
        "class Uploader {\n    fun retryUpload(times: Int): Boolean {\n"
        "        return times > 0\n    }\n}\n")
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
        code, out, _ = run(capsys, "search", "--index", str(idx), "--lang", alias, "--json",
                           "retry uploads")
        assert code == 0 and {json.loads(line)["path"] for line in out.splitlines()} == {path}

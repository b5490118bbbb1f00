"""Freshness before search (coarch.freshness) through the API and the CLI: few changes are
re-indexed first, many are counted, a held lock is never waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import coarch
from coarch.cli import main

REPO = Path(__file__).resolve().parents[1]


def make_repo(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "net.py").write_text(
        'def open_socket(host, port):\n    """Open a TCP connection."""\n    return host\n'
    )
    (root / "src" / "db.py").write_text(
        'def run_migrations(conn):\n    """Apply pending schema migrations."""\n    return conn\n'
    )
    return root


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, Path]:
    root = make_repo(tmp_path / "repo")
    index_dir = tmp_path / "index"
    with coarch.Index(root, index_dir=index_dir, checkpoint_every=0) as index:
        index.build()
    return root, index_dir


def test_api_search_reindexes_a_few_changed_files_first(repo: tuple[Path, Path]) -> None:
    root, index_dir = repo
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.search("open_socket", k=1)[0].path == "src/net.py"
        assert index.freshness.state == "fresh"
        (root / "src" / "cache.py").write_text("def evict_lru_entries(cache):\n    return 0\n")
        (root / "src" / "db.py").unlink()
        hits = index.search("evict_lru_entries", k=3)
        assert index.freshness.state == "refreshed"
        assert index.freshness.refreshed_files == 2
        assert hits[0].path == "src/cache.py"
        assert "src/db.py" not in {h.path for h in index.search("run_migrations", k=5)}
        assert index.status()["pending"] == {"new": 0, "changed": 0, "deleted": 0}


def test_many_changes_answer_at_once_with_the_stale_count(
    repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, index_dir = repo
    for i in range(4):
        (root / "src" / f"gen_{i}.py").write_text(f"def generated_{i}():\n    return {i}\n")
    with coarch.Index(root, index_dir=index_dir) as index:
        hits = index.search("generated_2", k=5, refresh_max_files=3)
        assert index.freshness.state == "stale"
        assert index.freshness.stale_files == 4
        assert "src/gen_2.py" not in {h.path for h in hits}
    code = main(["search", "--index", str(index_dir), "--lines", "0", "open_socket"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("src/net.py:1-3")
    # The default limit (20) covers 4 files: the CLI re-indexed them first.
    assert "stale" not in err
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.search("generated_2", k=1, refresh=False)[0].path == "src/gen_2.py"


def test_cli_warns_when_too_many_files_changed(
    repo: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, index_dir = repo
    monkeypatch.setenv("COARCH_REFRESH_MAX_FILES", "1")
    (root / "src" / "a.py").write_text("def alpha_thing():\n    return 1\n")
    (root / "src" / "b.py").write_text("def beta_thing():\n    return 2\n")
    code = main(["search", "--index", str(index_dir), "--lines", "0", "open_socket"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("src/net.py")
    assert "coarch: warning: 2 files changed since the index was built" in err
    assert f"run `coarch index {root}`" in err


def test_a_held_lock_is_not_waited_for(repo: tuple[Path, Path]) -> None:
    root, index_dir = repo
    (root / "src" / "late.py").write_text("def arrived_late():\n    return 1\n")
    hold = (
        "import time; from coarch.locking import IndexLock\n"
        f"lock = IndexLock({str(index_dir)!r}); lock.acquire(); print('held', flush=True)\n"
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with coarch.Index(root, index_dir=index_dir) as index:
            hits = index.search("open_socket", k=1)
            assert index.freshness.state == "stale"
            assert index.freshness.stale_files == 1
            assert f"pid {holder.pid}" in (index.freshness.reason or "")
        assert time.monotonic() - t0 < 10
        assert hits[0].path == "src/net.py"
    finally:
        holder.kill()
        holder.wait()


def test_check_lists_files_as_the_index_was_built(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "repo")
    (root / "big.py").write_text("x = 1\n" * 400)  # 2,400 bytes: over the limit below
    index_dir = tmp_path / "index"
    assert main(["index", "-q", str(root), "--index", str(index_dir), "--max-file-size", "2K"]) == 0
    with coarch.Index(root, index_dir=index_dir) as index:
        index.search("open_socket", k=1)
        # With the default limit big.py would look new, and a refresh would index it.
        assert index.freshness.state == "fresh"
        assert index.status()["pending"]["new"] == 0


def test_search_dash_c_searches_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("COARCH_INDEX_DIR", raising=False)
    root = make_repo(tmp_path / "repo")
    assert main(["index", "-q", str(root)]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["search", "-C", str(root / "src"), "--lines", "0", "run_migrations"]) == 0
    assert capsys.readouterr().out.startswith("src/db.py:1-3")
    assert main(["search", "-C", str(tmp_path / "missing"), "x"]) == 2
    assert "coarch: error: no such folder" in capsys.readouterr().err


# ---- a followed index (Index.follow_changes: the MCP server's) -----------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_followed_index_lists_nothing_until_a_file_changes(repo: tuple[Path, Path]) -> None:
    root, index_dir = repo
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.follow_changes()
        index.search("open_socket", k=1)
        assert (index.freshness.state, index.freshness.listed) == ("fresh", True)
        index.search("run_migrations", k=1)
        assert (index.freshness.state, index.freshness.listed) == ("fresh", False)
        # Written, then searched at once: the notification is already queued.
        (root / "src" / "net.py").write_text(
            "def open_socket(host, port):\n    return host\n\n"
            "def close_socket_gracefully(sock):\n    return sock\n"
        )
        hits = index.search("close_socket_gracefully", k=1)
        assert (index.freshness.state, index.freshness.listed) == ("refreshed", True)
        assert "close_socket_gracefully" in hits[0].snippet
        # The refresh wrote only the index folder: the next search lists nothing.
        index.search("open_socket", k=1)
        assert (index.freshness.state, index.freshness.listed) == ("fresh", False)
        (root / "src" / "new_pkg").mkdir()
        (root / "src" / "new_pkg" / "queue.py").write_text(
            "def drain_the_queue(q):\n    return list(q)\n"
        )
        assert index.search("drain_the_queue", k=1)[0].path == "src/new_pkg/queue.py"
        assert index.freshness.state == "refreshed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_index_follows_changes_from_its_second_search(repo: tuple[Path, Path]) -> None:
    root, index_dir = repo
    index = coarch.Index(root, index_dir=index_dir)
    listed = []
    for query in ("open_socket", "run_migrations", "open_socket"):
        index.search(query, k=1)
        listed.append((index.freshness.state, index.freshness.listed))
    assert listed == [("fresh", True), ("fresh", True), ("fresh", False)]
    (root / "src" / "net.py").write_text("def open_socket(host, port):\n    return port\n")
    index.search("open_socket", k=1)
    assert (index.freshness.state, index.freshness.listed) == ("refreshed", True)
    notifier = index._gate.notifier if index._gate else None
    index.close()
    assert notifier is not None and not notifier.active  # the watches go with the Index
    # Searches without the check never start following.
    with coarch.Index(root, index_dir=index_dir) as once:
        for _ in range(3):
            once.search("open_socket", k=1, refresh=False)
        assert once._gate is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_followed_index_still_lists_now_and_then(
    repo: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from coarch import freshness

    root, index_dir = repo
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.follow_changes()
        index.search("open_socket", k=1)
        monkeypatch.setattr(freshness, "FULL_CHECK_SECONDS", 0.0)
        index.search("open_socket", k=1)
        assert (index.freshness.state, index.freshness.listed) == ("fresh", True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_followed_index_keeps_listing_while_stale(repo: tuple[Path, Path]) -> None:
    root, index_dir = repo
    for i in range(3):
        (root / "src" / f"gen_{i}.py").write_text(f"def generated_{i}():\n    return {i}\n")
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.follow_changes()
        for _ in range(2):
            index.search("generated_1", k=1, refresh_max_files=2)
            assert (index.freshness.state, index.freshness.listed) == ("stale", True)
            assert index.freshness.stale_files == 3

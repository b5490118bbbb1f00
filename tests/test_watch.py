"""`coarch watch` as a real process on a real tree: edits become searchable, ignored files are
left alone, Ctrl-C stops it, SIGTERM stops it promptly with 143 (idle or during a run)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import coarch
from coarch.errors import EXIT_INTERRUPTED, EXIT_TERMINATED

REPO = Path(__file__).resolve().parents[1]


class WatchProcess:
    """`coarch watch --json` in a child process; its stdout lines as parsed JSON."""

    def __init__(self, root: Path, index_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "COARCH_CHECKPOINT_FREQUENCY": "0"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coarch",
                "watch",
                str(root),
                "--index",
                str(index_dir),
                "--json",
                "--step",
                "0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next_update(self, timeout: float = 30) -> dict[str, Any]:
        return self.lines.get(timeout=timeout)

    def wait_for(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            update = self.next_update(max(0.1, deadline - time.monotonic()))
            if predicate(update):
                return update


def test_edit_under_watch_is_found_by_search(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / ".gitignore").write_text("*.log\n")
    (root / "src" / "app.py").write_text("def start_server(port):\n    return port\n")
    index_dir = tmp_path / "index"
    watch = WatchProcess(root, index_dir)
    try:
        first = watch.next_update(timeout=60)  # the initial catch-up builds the index
        assert first["files_indexed"] == 2
        # The check once the notifications are live (at the first timeout): nothing changed.
        live = watch.next_update()
        assert live["files_changed"] == 0
        # An ignored file: notified, but nothing the index covers changed.
        (root / "debug.log").write_text("noise\n")
        ignored = watch.wait_for(lambda u: u["notifications"] > 0)
        assert ignored["files_changed"] == 0 and ignored["files_indexed"] == 0
        saved = time.monotonic()
        (root / "src" / "app.py").write_text(
            "def start_server(port):\n    return port\n\n"
            "def rotate_pelican_feathers(bird):\n    return bird[::-1]\n"
        )
        watch.wait_for(lambda u: u["files_indexed"] == 1)
        with coarch.Index(root, index_dir=index_dir) as index:
            hits = index.search("rotate_pelican_feathers", k=1, refresh=False)
        assert time.monotonic() - saved < 15
        assert hits[0].path == "src/app.py"
        assert "def rotate_pelican_feathers(bird)" in hits[0].snippet
    finally:
        watch.proc.send_signal(signal.SIGINT)
        code = watch.proc.wait(timeout=30)
        stderr = watch.proc.stderr.read() if watch.proc.stderr else ""
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr


def _live_watch(tmp_path: Path) -> tuple[Path, Path, WatchProcess]:
    """(root, index folder, watch) on a one-file tree, once its notifications are live."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.py").write_text("def start_server(port):\n    return port\n")
    watch = WatchProcess(root, tmp_path / "index")
    try:
        watch.next_update(timeout=60)  # the catch-up
        watch.next_update()  # the check once the notifications are live
    except BaseException:
        watch.proc.kill()
        raise
    return root, tmp_path / "index", watch


def _terminate(watch: WatchProcess, within: float) -> tuple[int, str]:
    """SIGTERM; the exit code (the process must be gone within `within` seconds) and stderr."""
    watch.proc.send_signal(signal.SIGTERM)
    try:
        code = watch.proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        watch.proc.kill()
        watch.proc.wait()
        raise AssertionError(f"coarch watch still running {within} s after SIGTERM") from None
    return code, watch.proc.stderr.read() if watch.proc.stderr else ""


def test_sigterm_stops_an_idle_watch_with_143(tmp_path: Path) -> None:
    _root, _index_dir, watch = _live_watch(tmp_path)
    code, stderr = _terminate(watch, within=10)
    assert code == EXIT_TERMINATED, stderr
    assert "coarch: terminated; the index holds every change committed" in stderr
    assert "Traceback" not in stderr


def test_sigterm_during_a_run_commits_and_exits_143(tmp_path: Path) -> None:
    root, index_dir, watch = _live_watch(tmp_path)
    try:
        for i in range(40):  # a batch that takes a while to embed
            body = "".join(
                f"def handler_{i}_{j}(request):\n    return request.path + '{i}-{j}'\n\n"
                for j in range(30)
            )
            (root / f"mod_{i}.py").write_text(body)
        time.sleep(1.0)  # past the step: the run has begun
    except BaseException:
        watch.proc.kill()
        raise
    code, stderr = _terminate(watch, within=60)
    assert code == EXIT_TERMINATED, stderr
    assert "Traceback" not in stderr
    # What was committed is a consistent index that the next run completes.
    with coarch.Index(root, index_dir=index_dir) as index:
        assert index.status()["last_run"]["state"] in ("ok", "interrupted")
        assert index.build().files_total == 41


def test_vectors_file_is_written_once_changes_pause(tmp_path: Path) -> None:
    root, index_dir, watch = _live_watch(tmp_path)
    try:
        (root / "app.py").write_text(
            "def start_server(port):\n    return port\n\n"
            "def polish_the_brass_lamp(lamp):\n    return lamp\n"
        )
        watch.wait_for(lambda u: u["files_indexed"] == 1)
        with coarch.Index(root, index_dir=index_dir) as index:
            # Left behind by the batch, yet the new chunk is found by meaning.
            assert index.status()["faiss"]["state"] != "fresh"
            hits = index.search("polish the brass lamp", k=1, mode="semantic", refresh=False)
            assert "polish_the_brass_lamp" in hits[0].snippet
        watch.wait_for(lambda u: u["notifications"] == 0 and u["files_changed"] == 0)
        with coarch.Index(root, index_dir=index_dir) as index:
            assert index.status()["faiss"]["state"] == "fresh"
    finally:
        watch.proc.send_signal(signal.SIGTERM)
        watch.proc.wait(timeout=30)

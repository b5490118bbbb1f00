"""coarch index --ray: a real Ray cluster on loopback (started and stopped here, two worker
CPUs), real trees, real processes killed; the result compared with a local index."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from indexing_helpers import SMALL_FILES, STDLIB_FILES, index_rows, index_vectors, stdlib_tree

import coarch
from coarch.location import default_index_dir

REPO = Path(__file__).resolve().parents[1]
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY,
    reason="ray is not installed (pip install 'coarch[ray]'; COARCH_EXTRAS=ray ./scripts/setup.sh)",
)
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
# Every Ray server on loopback, no usage report, and the cluster's token for the driver: one
# made for this test session, given to the head and to every driver through the environment
# (`ray start` refuses token mode without a token, and ~/.ray/auth_token may hold none, or
# another cluster's).
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COARCH_INDEX_DIR", "RAY_ADDRESS")}
    env.update(RAY_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_CACHE_HOME"] = str(cache)
    env["COARCH_PRECISION"] = "fp32"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """`ray start --head --block` on 127.0.0.1 with two CPUs, in its own session."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths live under it and must fit in 107 bytes.
        self.temp = tempfile.mkdtemp(prefix="cxr", dir="/tmp")
        env = {**os.environ, **RAY_ENV}
        self.proc = subprocess.Popen(
            [
                *RAY,
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                self.temp,
                "--object-store-memory",
                str(200 * 2**20),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ray start failed: " + self.proc.stderr.read().decode()[-2000:])
            if self._answers() and self.worker_pids(any_actor=True):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the Ray head did not come up in 90 s")

    def _answers(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def worker_pids(self, any_actor: bool = False) -> list[int]:
        """Processes of the cluster running an IndexWorker actor (with `any_actor`, any
        actor: the head's own show that it is ready)."""
        found = []
        for pid, cmdline in _descendants(self.proc.pid):
            if ("IndexWorker" in cmdline) or (any_actor and cmdline.startswith("ray::")):
                found.append(pid)
        return found

    def stop(self) -> None:
        with _suppress():
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # What the head started outside its session (worker processes are its children).
        with _suppress():
            os.killpg(self.proc.pid, signal.SIGKILL)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError | PermissionError)


def _descendants(root: int) -> list[tuple[int, str]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            out.append((child, cmdline.decode(errors="replace")))
            todo.append(child)
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not HAVE_RAY:
        pytest.skip("ray is not installed")
    head = Cluster()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small real trees and a larger one, each with its local index (fp32)."""
    base = tmp_path_factory.mktemp("trees")
    made = {
        "a": stdlib_tree(base / "a", SMALL_FILES[:6]),
        "b": stdlib_tree(base / "b", SMALL_FILES[6:]),
        "big": stdlib_tree(base / "big", STDLIB_FILES),
    }
    for name, tree in made.items():
        with coarch.Index(
            tree, index_dir=base / f"local-{name}", precision="fp32", checkpoint_every=0
        ) as index:
            index.build()
    return made


def _index_dir(cache: Path, tree: Path) -> Path:
    """Where the CLI, run with XDG_CACHE_HOME=`cache`, keeps the index of `tree`."""
    return cache / "coarch" / default_index_dir(tree).name


def _local(tree: Path) -> Path:
    return tree.parent / f"local-{tree.name}"


def _ray_index(
    cluster: Cluster, cache: Path, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--ray-address",
            cluster.address,
            "--checkpoint-every",
            "0",
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env=_env(cache),
        timeout=timeout,
        check=False,
    )


def _assert_same_index(index_dir: Path, local_dir: Path) -> None:
    """Same chunks, and every vector within cosine 0.9999 of the local one."""
    assert index_rows(index_dir) == index_rows(local_dir)
    ours, theirs = index_vectors(index_dir), index_vectors(local_dir)
    assert ours.keys() == theirs.keys() and ours
    for key, vector in ours.items():
        assert float(np.dot(vector, theirs[key])) >= 0.9999, key


def _committed_files(index_dir: Path) -> int:
    try:
        with sqlite3.connect(
            f"file:{index_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=1
        ) as conn:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0


@needs_ray
def test_two_trees_through_two_workers_equal_local_indexes(
    cluster: Cluster, trees: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    done = _ray_index(cluster, cache, "--ray-workers", "2", str(trees["a"]), str(trees["b"]))
    assert done.returncode == 0, done.stderr
    summaries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [s["root"] for s in summaries] == [str(trees["a"]), str(trees["b"])]
    for tree, summary in zip((trees["a"], trees["b"]), summaries):
        index_dir = _index_dir(cache, tree)
        assert summary["index_dir"] == str(index_dir)
        _assert_same_index(index_dir, _local(tree))
        assert summary["chunks_embedded"] == len(index_vectors(index_dir))
        # Two actors, each under the memory limit Ray gave it, for the whole run.
        assert len(summary["workers"]) == 2
        for worker in summary["workers"]:
            assert worker["limit_mb"] == 1536
            assert 0 < worker["peak_rss"] < worker["limit_mb"] * 2**20
    # Again: nothing changed, nothing is embedded (nor is the cluster's pool even started).
    again = _ray_index(cluster, cache, str(trees["a"]), str(trees["b"]))
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["chunks_embedded"] for line in again.stdout.splitlines()] == [0, 0]


@needs_ray
def test_a_modified_file_reuses_its_unchanged_chunks_vectors(
    cluster: Cluster, trees: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert _ray_index(cluster, cache, str(trees["a"])).returncode == 0
    target = trees["a"] / "lib/json/decoder.py"
    original = target.read_text()
    try:
        target.write_text(original + "\n\ndef added_at_the_end():\n    return 42\n")
        done = _ray_index(cluster, cache, str(trees["a"]))
    finally:
        target.write_text(original)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["files_indexed"] == 1
    assert 1 <= summary["chunks_embedded"] <= 2  # the new tail, not the whole file
    assert summary["chunks_reused"] >= 5


@needs_ray
def test_a_killed_worker_loses_nothing(
    cluster: Cluster, trees: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    tree = trees["big"]
    index_dir = _index_dir(cache, tree)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--ray-address",
            cluster.address,
            "--ray-workers",
            "2",
            "--ray-batch-files",
            "2",
            "--checkpoint-every",
            "0",
            "--json",
            str(tree),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(cache),
    )
    killed = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        workers = cluster.worker_pids()
        if workers and _committed_files(index_dir) >= 1:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=240)
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, err
    _assert_same_index(index_dir, _local(tree))
    assert json.loads(out)["chunks_total"] == len(index_rows(_local(tree)))


@needs_ray
def test_a_driver_killed_with_sigkill_resumes_embedding_nothing_twice(
    cluster: Cluster, trees: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    tree = trees["big"]
    index_dir = _index_dir(cache, tree)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--ray-address",
            cluster.address,
            "--ray-workers",
            "2",
            "--ray-batch-files",
            "2",
            "--checkpoint-every",
            "0",
            str(tree),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(cache),
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if _committed_files(index_dir) >= 2:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    committed = set(index_vectors(index_dir))
    total = {h for *_, h in index_rows(_local(tree))}
    assert committed and committed < total
    done = _ray_index(cluster, cache, "--ray-workers", "2", str(tree))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # Exactly what the killed run had not committed is embedded, nothing more.
    assert summary["chunks_embedded"] == len(total - committed)
    _assert_same_index(index_dir, _local(tree))


@needs_ray
def test_without_an_address_a_local_cluster_is_started(
    trees: dict[str, Path], tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--ray",
            "--ray-workers",
            "1",
            "--json",
            "--index",
            str(tmp_path / "idx"),
            str(trees["a"]),
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "cache"),
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert len(summary["workers"]) == 1
    _assert_same_index(tmp_path / "idx", _local(trees["a"]))


@needs_ray
def test_an_address_where_nothing_answers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "t", SMALL_FILES[:1])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--ray-address",
            f"127.0.0.1:{_free_port()}",
            "--index",
            str(tmp_path / "idx"),
            str(tree),
        ],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "cache"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith("coarch: error: cannot connect to Ray (127.0.0.1:")
    assert lines[1].startswith("coarch: hint: check --ray-address")
    assert len(lines) == 2


def test_without_ray_installed_ray_is_one_line_and_exit_2(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "t", SMALL_FILES[:1])
    code = (
        "import sys; sys.modules['ray'] = None\n"  # what an absent package looks like
        "from coarch.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "index", "--ray", "--index", str(tmp_path / "idx"), str(tree)],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "cache"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("coarch: error: --ray needs Ray, which is not installed")
    assert lines[1] == (
        "coarch: hint: install the extra: pip install 'coarch[ray]' (or pip install 'ray[data]')"
    )
    assert not (tmp_path / "idx").exists()  # refused before anything was written


def test_coarch_never_imports_ray_unless_asked(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "t", SMALL_FILES[:1])
    code = (
        "import sys, coarch, coarch.cli\n"
        "rc = coarch.cli.main(['index', '-q', '--index', sys.argv[2], sys.argv[1]])\n"
        "assert rc == 0, rc\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tree), str(tmp_path / "idx")],
        capture_output=True,
        text=True,
        env=_env(tmp_path / "cache"),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

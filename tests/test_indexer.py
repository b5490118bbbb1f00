"""Indexing end to end with the real model: a copy of part of the standard library, incremental
updates, kill -9 at several points then resume, Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from indexing_helpers import (
    SMALL_FILES,
    STDLIB_FILES,
    index_rows,
    index_vectors,
    model_input_at,
    stdlib_tree,
    vector_of,
)

import coarch
from coarch import _core
from coarch import vectors as faiss_file
from coarch.cli import main
from coarch.errors import ConfigError, IndexLockedError
from coarch.index import Index
from coarch.indexer import IndexSummary
from coarch.locking import IndexLock
from coarch.memory import max_file_size_ceiling
from coarch.progress import IndexProgress
from coarch.store import Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, IndexSummary]:
    """The standard-library slice indexed once; tests copy it before changing anything."""
    base = tmp_path_factory.mktemp("built")
    tree = stdlib_tree(base / "tree")
    idx = base / "idx"
    with Index(tree, index_dir=idx) as index:
        summary = index.build()
    return tree, idx, summary


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small slice indexed without interruption: what every resumed run must equal."""
    base = tmp_path_factory.mktemp("small")
    tree = stdlib_tree(base / "tree", SMALL_FILES)
    idx = base / "idx"
    with Index(tree, index_dir=idx) as index:
        index.build()
    return tree, idx


def copy_of(built: tuple[Path, Path, IndexSummary], dest: Path) -> tuple[Path, Path]:
    tree, idx, _ = built
    shutil.copytree(tree, dest / "tree", copy_function=shutil.copy2)
    shutil.copytree(idx, dest / "idx")
    return dest / "tree", dest / "idx"


def assert_consistent(idx: Path) -> None:
    """Every chunk once, with a vector; FTS and FAISS cover exactly the chunks."""
    rows = index_rows(idx)
    assert len(rows) == len(set(rows))
    with Store(idx, readonly=True) as store:
        counts = store.counts()
        assert counts["chunks_without_vector"] == 0
        fts = store.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
        assert fts == counts["chunks"] == len(rows)
        assert faiss_file.freshness(store, idx) is None
        assert faiss_file.load(idx).ntotal == counts["chunks"]
    assert not list(idx.glob(".vectors-*"))  # no temp file of a killed writer left


def test_indexes_a_real_tree(
    built: tuple[Path, Path, IndexSummary], embedder: coarch.Embedder
) -> None:
    tree, idx, summary = built
    assert summary.files_total == summary.files_indexed == len(STDLIB_FILES)
    assert summary.chunks_total == summary.chunks_embedded + summary.chunks_reused > 100
    assert not summary.interrupted and summary.faiss.startswith("written")
    assert_consistent(idx)
    rows = index_rows(idx)
    assert {r[0] for r in rows} == {f"lib/{f}" for f in STDLIB_FILES}
    assert any(r[0] == "lib/json/decoder.py" and r[3] == "py_scanstring" for r in rows)
    with Store(idx, readonly=True) as store:
        # Stored vectors are the model's vectors of the stored text (header included) and of
        # its names, as the model reads them: identifiers split into words.
        chunk_id, digest = store.conn.execute(
            "SELECT c.id, c.text_hash FROM chunks c JOIN files f ON f.id = c.file_id"
            " WHERE f.path = 'lib/bisect.py' ORDER BY c.id LIMIT 1"
        ).fetchone()
        (row,) = store.chunks_by_ids([chunk_id])
        expected = vector_of(embedder, model_input_at(row.path, row))
        stored = index_vectors(idx)[digest]
        assert float(np.dot(expected, stored)) > 0.999
        # The nearest chunks of a question are the right file's.
        query = embedder.encode(["split a command line into words the way a Unix shell does"])
        _, ids = faiss_file.load(idx).search(query, 5)
        paths = [r.path for r in store.chunks_by_ids(ids[0])]
        assert "lib/shlex.py" in paths
        status = Index(tree, index_dir=idx).status()
        assert status["files"] == len(STDLIB_FILES) and status["chunks"] == len(rows)
        assert status["pending"] == {"new": 0, "changed": 0, "deleted": 0}
        assert status["last_run"]["state"] == "ok" and status["faiss"]["state"] == "fresh"


def test_unchanged_repository_embeds_nothing(
    built: tuple[Path, Path, IndexSummary], tmp_path: Path
) -> None:
    tree, idx = copy_of(built, tmp_path)
    before = index_rows(idx)
    started = time.monotonic()
    summary = Index(tree, index_dir=idx).build()
    assert summary.files_unchanged == len(STDLIB_FILES)
    assert summary.chunks_embedded == summary.files_indexed == 0
    assert summary.faiss == "fresh"
    assert time.monotonic() - started < 3
    assert index_rows(idx) == before


def test_modify_delete_rename_touch_add(
    built: tuple[Path, Path, IndexSummary], tmp_path: Path
) -> None:
    tree, idx = copy_of(built, tmp_path)
    lib = tree / "lib"
    old_vectors = index_vectors(idx)
    old_rows = index_rows(idx)
    colorsys_rows = [r for r in old_rows if r[0] == "lib/colorsys.py"]
    # modify one function of decoder.py
    decoder = lib / "json" / "decoder.py"
    decoder.write_text(
        decoder.read_text().replace(
            "def _decode_uXXXX(s, pos):", "def _decode_uXXXX(s, pos):\n    # changed: checked twice"
        )
    )
    (lib / "bisect.py").unlink()
    (lib / "colorsys.py").rename(lib / "colors.py")
    os.utime(lib / "keyword.py", ns=(time.time_ns(), time.time_ns()))
    (lib / "fresh.py").write_text("def brand_new_helper():\n    return 'fresh'\n")

    summary = Index(tree, index_dir=idx).build()
    assert summary.files_indexed == 2  # decoder.py, fresh.py
    assert summary.files_copied == 1  # colors.py re-uses colorsys.py's vectors
    assert summary.files_removed == 2  # bisect.py, colorsys.py
    assert summary.files_touched == 1  # keyword.py
    assert 2 <= summary.chunks_embedded <= 4  # the changed function's chunk(s) + fresh.py
    assert_consistent(idx)

    rows = index_rows(idx)
    paths = {r[0] for r in rows}
    assert "lib/bisect.py" not in paths and "lib/colorsys.py" not in paths
    assert "lib/fresh.py" in paths
    colors = [r for r in rows if r[0] == "lib/colors.py"]
    assert [r[1:4] for r in colors] == [r[1:4] for r in colorsys_rows]
    new_vectors = index_vectors(idx)
    for new, old in zip(colors, colorsys_rows):
        np.testing.assert_array_equal(new_vectors[new[4]], old_vectors[old[4]])
    with Store(idx, readonly=True) as store:
        hits = store.conn.execute(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'insort_left'"
        ).fetchone()[0]
        assert hits == 0  # bisect.py's words left the keyword index with it
        assert store.counts()["vectors"] == len({r[4] for r in rows})  # no orphan vectors
    # Chunks of the modified file that did not change kept their text (and so their vectors;
    # those after the change moved down a line).
    old_decoder = {r[4] for r in old_rows if r[0] == "lib/json/decoder.py"}
    new_decoder = {r[4] for r in rows if r[0] == "lib/json/decoder.py"}
    assert len(old_decoder & new_decoder) >= len(old_decoder) - 2


def test_renamed_file_vectors_keep_an_honest_cache_key(
    tmp_path: Path, embedder: coarch.Embedder
) -> None:
    """A renamed file re-uses its vectors, keyed by the hash of the text they are the vectors
    of (the header with the old path), never by the new text's hash; once the file changes,
    its chunks are embedded under their own path."""
    tree, idx = tmp_path / "tree", tmp_path / "idx"
    (tree / "net").mkdir(parents=True)
    (tree / "net" / "upload.py").write_text(
        "def retry_upload(client, blob, attempts=3):\n"
        "    for _ in range(attempts):\n        if client.put(blob):\n            return True\n"
        "    return False\n\n\n"
        "class UploadQueue:\n    def __init__(self):\n        self.items = []\n"
    )
    (tree / "other.py").write_text("def unrelated():\n    return 42\n")
    small = {"checkpoint_every": 0, "target_tokens": 16}  # one chunk per definition
    Index(tree, index_dir=idx, precision="fp32", **small).build()
    moved = tree / "legacy" / "attic" / "old_stuff.py"
    moved.parent.mkdir(parents=True)
    (tree / "net" / "upload.py").rename(moved)

    summary = Index(tree, index_dir=idx, **small).build()
    assert summary.files_copied == 1 and summary.chunks_embedded == 0
    assert_consistent(idx)
    with Store(idx, readonly=True) as store:
        rows = store.chunks_of("legacy/attic/old_stuff.py")
        cached = store.get_vectors([r.text_hash for r in rows])
        new_keys = [model_input_at("legacy/attic/old_stuff.py", r).key for r in rows]
        assert rows and not store.cached_hashes(new_keys)  # no vector filed under a lie
    assert any(r.symbols for r in rows)
    for r in rows:
        embedded = model_input_at("net/upload.py", r)
        assert r.text_hash == embedded.key
        stored = np.frombuffer(cached[r.text_hash], dtype="<f4")
        assert float(np.dot(vector_of(embedder, embedded), stored)) > 0.9999

    # Changed: every chunk is hashed and embedded under the path it has now.
    moved.write_text(moved.read_text() + "\n\ndef added_later():\n    return 'new'\n")
    summary = Index(tree, index_dir=idx, **small).build()
    assert_consistent(idx)
    with Store(idx, readonly=True) as store:
        rows = store.chunks_of("legacy/attic/old_stuff.py")
        cached = store.get_vectors([r.text_hash for r in rows])
    assert len(rows) >= 3 and summary.chunks_embedded == len(rows)
    for r in rows:
        embedded = model_input_at("legacy/attic/old_stuff.py", r)
        assert r.text_hash == embedded.key
        stored = np.frombuffer(cached[r.text_hash], dtype="<f4")
        assert float(np.dot(vector_of(embedder, embedded), stored)) > 0.9999


def test_model_change_and_full_force_a_rebuild(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py", "tty.py"))
    idx = tmp_path / "idx"
    first = Index(tree, index_dir=idx).build()
    with Store(idx) as store, store.transaction():
        store.set_meta("model_id", "some-other-model-0123")
    again = Index(tree, index_dir=idx).build()
    assert again.rebuild_reason and "model changed" in again.rebuild_reason
    assert again.chunks_embedded == first.chunks_embedded == again.chunks_total
    full = Index(tree, index_dir=idx, full=True).build()
    assert full.rebuild_reason == "--full" and full.chunks_embedded == full.chunks_total
    assert_consistent(idx)


def test_precision_is_recorded_and_never_mixed(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py", "tty.py"))
    idx = tmp_path / "idx"
    first = Index(tree, index_dir=idx, precision="fp32").build()
    with Index(tree, index_dir=idx) as index:
        assert index.status()["precision"] == "fp32"
    same = Index(tree, index_dir=idx, precision="fp32").build()
    assert same.rebuild_reason is None and same.chunks_embedded == 0
    changed = Index(tree, index_dir=idx, precision="bf16").build()
    assert changed.rebuild_reason == "precision changed (fp32 -> bf16)"
    assert changed.chunks_embedded == first.chunks_embedded == changed.chunks_total
    with Index(tree, index_dir=idx) as index:
        status = index.status()
    assert status["precision"] == "bf16" and status["precision_reason"] == "bf16 was asked for"
    kept = Index(tree, index_dir=idx).build()  # no precision asked for: the index keeps bf16
    assert kept.rebuild_reason is None and kept.chunks_embedded == 0
    assert_consistent(idx)


def test_a_new_index_records_autos_choice_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COARCH_PRECISION", raising=False)
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py"))
    idx = tmp_path / "idx"
    Index(tree, index_dir=idx).build()
    native, reason = _core.bf16_native()
    with Index(tree, index_dir=idx) as index:
        status = index.status()
    assert status["precision"] == ("bf16" if native else "fp32")
    assert status["precision_reason"] == reason  # what the run-time check found, not "asked for"


def test_an_index_from_before_precisions_keeps_its_fp32_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COARCH_PRECISION", raising=False)
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py"))
    idx = tmp_path / "idx"
    Index(tree, index_dir=idx, precision="fp32").build()
    with Store(idx) as store, store.transaction():  # as written before precisions existed
        store.conn.execute("DELETE FROM meta WHERE key IN ('precision', 'precision_reason')")
    again = Index(tree, index_dir=idx).build()  # the default (auto) must not rebuild it
    assert again.rebuild_reason is None and again.chunks_embedded == 0
    with Index(tree, index_dir=idx) as index:
        assert index.status()["precision"] == "fp32"


def test_changed_chunking_rechunks_every_file_and_reuses_vectors(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py", "tty.py"))
    idx = tmp_path / "idx"
    first = Index(tree, index_dir=idx).build()
    before = index_rows(idx)
    with Store(idx) as store, store.transaction():
        store.set_meta("chunker", "v0 an older chunker")
    again = Index(tree, index_dir=idx).build()
    assert again.files_indexed == 3 and again.files_unchanged == 0
    assert again.chunks_embedded == 0 and again.chunks_reused == first.chunks_total
    assert index_rows(idx) == before
    assert_consistent(idx)


def test_file_deleted_during_the_run(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py", "this.py", "tty.py"))
    idx = tmp_path / "idx"
    victim = tree / "lib" / "tty.py"

    def progress(p: IndexProgress) -> None:
        if p.phase == "scanning" and p.files_total and victim.exists():
            victim.unlink()  # listed, then gone before it is read

    summary = Index(tree, index_dir=idx).build(progress=progress)
    assert any("deleted during the run" in line and "tty.py" in line for line in summary.skipped)
    assert {r[0] for r in index_rows(idx)} == {"lib/keyword.py", "lib/this.py"}
    assert_consistent(idx)


def test_a_size_cap_over_what_the_memory_limit_holds_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py",))
    idx = tmp_path / "idx"
    # A fresh process (RSS under 180 MB before the model) keeps 300 MB for itself.
    assert max_file_size_ceiling(800, 150) == (800 - 300) * 2**20 // 12
    assert max_file_size_ceiling(800, 600) == (800 - 720) * 2**20 // 12
    with pytest.raises(ConfigError, match=r"--max-file-size 2000\.0 MB is over the ceiling of"):
        Index(tree, index_dir=idx, max_file_size=2 * 10**9, memory_limit_mb=4000)
    code = main(
        ["index", str(tree), "--index", str(idx), "--max-file-size", "2G", "--memory-limit", "4000"]
    )
    err = capsys.readouterr().err
    assert code == 2 and not idx.exists()
    error, hint = err.splitlines()
    found = re.fullmatch(
        r"coarch: error: --max-file-size 2000\.0 MB is over the ceiling of (\d+)\.\d MB that"
        r" the memory limit \(4000 MB, explicit\) allows: a file takes about 12 bytes of memory"
        r" per byte while it is chunked",
        error,
    )
    # The ceiling counts what this process holds: about 300 MB fresh, over 1.5 GB late in the
    # whole suite.
    assert found and 50 < int(found.group(1)) < 400, error
    assert hint == (
        f"coarch: hint: use --max-file-size {found.group(1)}M or less, or raise --memory-limit"
    )
    # A raised cap within the ceiling is accepted.
    summary = Index(tree, index_dir=idx, max_file_size=2 * 10**6, memory_limit_mb=8000).build()
    assert summary.files_indexed == 1


def test_second_indexer_is_refused(tmp_path: Path) -> None:
    tree = stdlib_tree(tmp_path / "tree", ("keyword.py",))
    idx = tmp_path / "idx"
    with IndexLock(idx), pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
        Index(tree, index_dir=idx).build()


# ---- kill -9 and Ctrl-C --------------------------------------------------------------------------


def _child_build(tree: Path, idx: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from coarch.index import Index\n"
        "Index(sys.argv[1], index_dir=sys.argv[2], embed_batch=8, embed_pool=16,"
        " checkpoint_every=0)"
        ".build()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tree), str(idx)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _query(idx: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{idx / 'index.sqlite'}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.Error:
        return 0


def _wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 600
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


KILL_POINTS: dict[str, Callable[[Path, int], bool]] = {
    # lock taken: scanning or loading the model, nothing committed yet
    "start": lambda idx, n: (idx / "lock").is_file() and (idx / "lock").stat().st_size > 0,
    # some vectors committed, maybe no file yet
    "first_vectors": lambda idx, n: _query(idx, "SELECT count(*) FROM vectors") > 0,
    # about half of the files committed
    "half": lambda idx, n: _query(idx, "SELECT count(*) FROM files") >= n // 2,
    # every file committed: writing the FAISS file or the final bookkeeping
    "end": lambda idx, n: _query(idx, "SELECT count(*) FROM files") >= n,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_equals_an_uninterrupted_run(
    small_reference: tuple[Path, Path], tmp_path: Path, point: str
) -> None:
    ref_tree, ref_idx = small_reference
    tree = tmp_path / "tree"
    shutil.copytree(ref_tree, tree, copy_function=shutil.copy2)
    idx = tmp_path / "idx"
    proc = _child_build(tree, idx)
    reached = _wait_for(lambda: KILL_POINTS[point](idx, len(SMALL_FILES)), proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached or proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    committed = set(index_vectors(idx, chunks_only=False))  # the cache, half-done files too

    summary = Index(tree, index_dir=idx).build()
    reference = index_rows(ref_idx)
    assert index_rows(idx) == reference
    # Nothing committed before the kill was embedded again.
    all_hashes = {r[4] for r in reference}
    assert summary.chunks_embedded == len(all_hashes - committed)
    ref_vectors, vectors = index_vectors(ref_idx), index_vectors(idx)
    # The same vectors up to rounding: batches differ between the two runs, and in bf16 (the
    # default where the CPU runs it natively) a product's rounding depends on its shape.
    for h in all_hashes:
        assert float(np.dot(vectors[h], ref_vectors[h])) >= 0.9999, h
    assert_consistent(idx)


@pytest.mark.slow
def test_ctrl_c_commits_and_exits_130(
    built: tuple[Path, Path, IndexSummary], tmp_path: Path
) -> None:
    src_tree, ref_idx, _ = built
    tree = tmp_path / "tree"
    shutil.copytree(src_tree, tree, copy_function=shutil.copy2)
    idx = tmp_path / "idx"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            str(tree),
            "--index",
            str(idx),
            "--checkpoint-every",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert _wait_for(lambda: _query(idx, "SELECT count(*) FROM vectors") > 0, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted: finishing the batch in hand" in stderr
    assert "coarch: interrupted; " in stderr and " files committed" in stderr
    # The hint repeats --index: without it the command would open another, empty index.
    assert (
        f"coarch: hint: run `coarch index {tree.resolve()} --index {idx}` again to resume" in stderr
    )
    committed_files = _query(idx, "SELECT count(*) FROM files")
    assert committed_files < len(STDLIB_FILES)
    with Store(idx, readonly=True) as store:
        assert store.counts()["vectors"] > 0  # the work done is kept
        assert store.counts()["chunks_without_vector"] == 0
        assert store.get_meta("last_run_state") == "interrupted"
    committed = set(index_vectors(idx, chunks_only=False))
    summary = Index(tree, index_dir=idx).build()
    assert summary.files_unchanged == committed_files
    assert summary.chunks_embedded == len({r[4] for r in index_rows(ref_idx)} - committed)
    assert index_rows(idx) == index_rows(ref_idx)
    assert_consistent(idx)

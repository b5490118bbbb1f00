"""What `coarch.Index` guarantees about the index on disk: nothing is lost to a bad model or
option, a failed or killed rebuild, a damaged file, and nothing is written into a folder of
someone else's files. Real model, real files, real processes (kill -9).

"Intact" is asserted as the issue states it: chunk counts and top-5 results equal those of an
uninterrupted index of the same tree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from indexing_helpers import SMALL_FILES, index_rows, stdlib_tree

from coarch import vectors as faiss_file
from coarch.cli import main
from coarch.errors import IndexLockedError
from coarch.index import Index
from coarch.locking import IndexLock
from coarch.models import default_model_path
from coarch.search import Searcher
from coarch.store import Store

REPO = Path(__file__).resolve().parent.parent
QUERIES = (
    "decode a JSON document",
    "insort_left",
    "convert rgb colours to hls",
    "keyword list",
    "scanner",
)
# fp32: the same vectors whatever the machine (bf16 rounding depends on the batch).
OPTIONS = {"precision": "fp32"}


def rebuild_dir(idx: Path) -> Path:
    """Where a rebuild of `idx` is built (coarch.location.rebuild_dir)."""
    return idx.with_name(idx.name + ".rebuild")


def snapshot(idx: Path) -> tuple[int, list[list[tuple[str, int, int]]]]:
    """(chunk count, top-5 hits of each query in hybrid and semantic modes)."""
    with Store(idx, readonly=True) as store:
        chunks = store.chunk_count()
    tops = []
    with Searcher(idx) as searcher:
        for query in QUERIES:
            for mode in ("hybrid", "semantic"):
                hits = searcher.search(query, k=5, mode=mode)
                assert all(-1.01 <= h.score <= 6.01 for h in hits), hits  # not 7e37
                tops.append([(h.path, h.start_line, h.end_line) for h in hits])
    return chunks, tops


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, tuple[int, list[list[tuple[str, int, int]]]]]:
    """The small slice indexed once, uninterrupted; tests work on copies."""
    base = tmp_path_factory.mktemp("reference")
    tree = stdlib_tree(base / "tree", SMALL_FILES)
    idx = base / "idx"
    with Index(tree, index_dir=idx, **OPTIONS) as index:
        index.build()
    return tree, idx, snapshot(idx)


@pytest.fixture
def copy(reference: tuple[Path, Path, object], tmp_path: Path) -> tuple[Path, Path]:
    tree, idx, _ = reference
    shutil.copytree(tree, tmp_path / "tree", copy_function=shutil.copy2)
    shutil.copytree(idx, tmp_path / "idx")
    return tmp_path / "tree", tmp_path / "idx"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("coarch: error:")]


def broken_model(dest: Path, damage: str) -> Path:
    """A copy of the default model with a truncated weights file or a corrupt config."""
    source = default_model_path()
    dest.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (dest / item.name).symlink_to(item)
    if damage == "truncated weights":
        (dest / "model.safetensors").unlink()
        data = (source / "model.safetensors").read_bytes()
        (dest / "model.safetensors").write_bytes(data[: len(data) // 3])
    else:
        (dest / "config.json").unlink()
        (dest / "config.json").write_text('{"hidden_size": 384, "num_attention_')
    return dest


# ---- 1. nothing is touched before the settings are checked ---------------------------------


@pytest.mark.parametrize("damage", ["truncated weights", "corrupt config"])
def test_a_bad_model_leaves_the_index_intact(
    capsys: pytest.CaptureFixture[str],
    reference: tuple[Path, Path, object],
    copy: tuple[Path, Path],
    tmp_path: Path,
    damage: str,
) -> None:
    tree, idx = copy
    model = broken_model(tmp_path / "model", damage)
    code, _, err = run(capsys, "index", str(tree), "--index", str(idx), "--model", str(model))
    assert code == 2 and len(error_lines(err)) == 1, err
    assert snapshot(idx) == reference[2]
    assert not rebuild_dir(idx).exists()


@pytest.mark.parametrize(
    "extra", [("--memory-limit", "1", "--full"), ("--precision", "bf16", "--memory-limit", "1")]
)
def test_a_refused_memory_limit_leaves_the_index_intact(
    capsys: pytest.CaptureFixture[str],
    reference: tuple[Path, Path, object],
    copy: tuple[Path, Path],
    extra: tuple[str, ...],
) -> None:
    tree, idx = copy
    code, _, err = run(capsys, "index", str(tree), "--index", str(idx), *extra)
    assert code == 2 and len(error_lines(err)) == 1, err
    assert "memory" in error_lines(err)[0].lower()
    assert snapshot(idx) == reference[2]
    with Store(idx, readonly=True) as store:
        assert store.precision() == "fp32"


def test_an_unchanged_run_does_not_load_the_model(copy: tuple[Path, Path]) -> None:
    tree, idx = copy
    with Index(tree, index_dir=idx, memory_limit_mb=1) as index:  # too small for the model
        summary = index.build()
    assert summary.files_indexed == 0 and summary.rebuild_reason is None


# ---- 1. a rebuild is built beside the index and swapped in ---------------------------------


def _child_full_rebuild(tree: Path, idx: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys\n"
        "from coarch.index import Index\n"
        "Index(sys.argv[1], index_dir=sys.argv[2], embed_batch=8, embed_pool=16,"
        " checkpoint_every=0, precision='fp32').build(full=True)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tree), str(idx)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _committed_files(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_during_a_rebuild_keeps_the_old_index_then_the_rebuild_goes_on(
    reference: tuple[Path, Path, tuple[int, list[list[tuple[str, int, int]]]]],
    copy: tuple[Path, Path],
) -> None:
    tree, idx = copy
    ref_rows = index_rows(reference[1])
    proc = _child_full_rebuild(tree, idx)
    new_db = rebuild_dir(idx) / "index.sqlite"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if _committed_files(new_db) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    with Searcher(idx) as searcher:  # searching while the rebuild runs
        assert searcher.search("insort_left", k=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(idx) == reference[2]  # the old index, whole and searchable
    assert index_rows(idx) == ref_rows

    with Index(tree, index_dir=idx, **OPTIONS) as index:
        summary = index.build()
    assert summary.rebuild_reason == "--full (resumed)"
    assert summary.files_unchanged >= 2  # what the killed rebuild committed was kept
    assert summary.chunks_total == reference[2][0]
    assert index_rows(idx) == ref_rows
    chunks, tops = snapshot(idx)
    assert chunks == reference[2][0] and tops == reference[2][1]
    assert not rebuild_dir(idx).exists()
    with Store(idx, readonly=True) as store:
        assert faiss_file.freshness(store, idx) is None
        assert store.get_meta("rebuild_reason") is None


def test_a_searcher_keeps_answering_across_a_rebuild_and_follows_the_swap(
    reference: tuple[Path, Path, tuple[int, list[list[tuple[str, int, int]]]]],
    copy: tuple[Path, Path],
) -> None:
    tree, idx = copy
    before = (idx / "index.sqlite").stat().st_ino
    with Searcher(idx) as searcher:
        first = searcher.search("insort_left", k=5)

        def during(progress: object) -> None:
            # The old index answers while the new one is built, and a second writer is refused.
            assert searcher.search("insort_left", k=5) == first
            with pytest.raises(IndexLockedError):
                IndexLock(idx).acquire()

        with Index(tree, index_dir=idx, **OPTIONS) as index:
            summary = index.build(progress=during, full=True)
        assert summary.rebuild_reason == "--full"
        assert (idx / "index.sqlite").stat().st_ino != before  # a new file was swapped in
        after = searcher.search("insort_left", k=5)
        assert searcher.store.path.stat().st_ino == searcher._db_identity[1]  # reopened
        assert [(h.path, h.start_line) for h in after] == [(h.path, h.start_line) for h in first]
    assert snapshot(idx) == reference[2]
    assert not rebuild_dir(idx).exists()


def test_folders_exchanged_under_their_locks_still_refuse_a_second_writer(tmp_path: Path) -> None:
    from coarch.location import exchange_folders

    a, b = tmp_path / "a", tmp_path / "b"
    with IndexLock(a), IndexLock(b):
        (a / "mark").write_text("a")
        exchange_folders(a, b)
        assert (b / "mark").read_text() == "a" and not (a / "mark").exists()
        for folder in (a, b):
            with pytest.raises(IndexLockedError):
                IndexLock(folder).acquire()


# ---- 2. a damaged vectors.faiss ------------------------------------------------------------


def test_a_damaged_faiss_body_is_detected_searched_around_and_rewritten(
    capsys: pytest.CaptureFixture[str],
    reference: tuple[Path, Path, tuple[int, list[list[tuple[str, int, int]]]]],
    copy: tuple[Path, Path],
) -> None:
    tree, idx = copy
    path = idx / "vectors.faiss"
    good = path.read_bytes()
    damaged = bytearray(good)
    body = slice(200, len(good) - 200)  # the headers stay intact
    noise = np.random.default_rng(7).integers(0, 256, body.stop - body.start, dtype=np.uint8)
    damaged[body] = noise.tobytes()
    path.write_bytes(bytes(damaged))

    code, out, _ = run(capsys, "status", "--index", str(idx), "--json")
    assert code == 0 and json.loads(out)["faiss"]["state"] == "corrupt"
    code, out, err = run(
        capsys,
        "search",
        "--index",
        str(idx),
        "--mode",
        "semantic",
        "--json",
        "-k",
        "5",
        "decode a JSON document",
    )
    assert code == 0
    assert "vectors.faiss is damaged: using the vectors in SQLite" in err
    assert all(json.loads(line)["score"] <= 1.0001 for line in out.splitlines())
    assert snapshot(idx) == reference[2]  # answers from SQLite equal the intact index's

    code, out, err = run(capsys, "index", str(tree), "--index", str(idx), "-v")
    assert code == 0 and "0 chunks embedded" in out
    assert "corrupt)" in err and "writing vectors.faiss" in err
    assert path.read_bytes() == good
    code, out, _ = run(capsys, "status", "--index", str(idx), "--json")
    assert json.loads(out)["faiss"]["state"] == "fresh"


# ---- 3. a damaged index.sqlite -------------------------------------------------------------


def _damage_chunk_pages(db: Path) -> None:
    """Random bytes over every page of the chunks table (which status and search both read),
    as a disk or a stray write might leave it; the header and meta stay readable."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'chunks'")]
    rng = np.random.default_rng(11)
    with open(db, "r+b") as fh:
        for page in pages:
            fh.seek((page - 1) * page_size)
            fh.write(rng.integers(0, 256, page_size, dtype=np.uint8).tobytes())
    assert len(pages) >= 10


def test_a_damaged_database_is_reported_and_full_moves_it_aside(
    capsys: pytest.CaptureFixture[str],
    reference: tuple[Path, Path, tuple[int, list[list[tuple[str, int, int]]]]],
    copy: tuple[Path, Path],
) -> None:
    tree, idx = copy
    with Store(idx) as store, store.transaction():  # as a run killed midway leaves it
        store.set_meta("last_run_state", "running")
    _damage_chunk_pages(idx / "index.sqlite")

    for argv in (
        ("status", "--index", str(idx)),
        ("search", "--index", str(idx), "insort_left"),
        ("index", str(tree), "--index", str(idx)),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        (line,) = error_lines(err)
        assert "index database" in line and ("damaged" in line or "unreadable" in line)
        assert "coarch: hint: `coarch index --full" in err

    code, _, err = run(
        capsys, "index", str(tree), "--index", str(idx), "--full", "--precision", "fp32"
    )
    assert code == 0, err
    kept = [p for p in idx.glob("index.sqlite.corrupt-*") if not p.name.endswith("-wal")]
    assert len(kept) == 1 and kept[0].name in err
    assert snapshot(idx) == reference[2]
    code, out, _ = run(capsys, "status", "--index", str(idx), "--json")
    assert code == 0 and json.loads(out)["chunks"] == reference[2][0]


# ---- 4. a folder of someone else's files ---------------------------------------------------


def test_a_foreign_database_and_faiss_file_are_not_touched(
    capsys: pytest.CaptureFixture[str], reference: tuple[Path, Path, object], tmp_path: Path
) -> None:
    tree = reference[0]
    folder = tmp_path / "theirs"
    folder.mkdir()
    with sqlite3.connect(folder / "index.sqlite") as conn:
        conn.execute("CREATE TABLE people(name TEXT)")
        conn.execute("INSERT INTO people VALUES ('ada')")
    (folder / "vectors.faiss").write_bytes(b"their vectors" * 100)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = run(capsys, "index", str(tree), "--index", str(folder))
    assert code == 2
    assert error_lines(err) == [
        f"coarch: error: refusing to write into {folder}: index.sqlite is not a coarch index"
    ]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_folder_of_other_files_is_refused(
    capsys: pytest.CaptureFixture[str], reference: tuple[Path, Path, object], tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "index", str(reference[0]), "--index", str(folder))
    assert code == 2
    expected = (
        f"coarch: error: refusing to write into {folder}: it holds files coarch did"
        " not create (notes.txt)"
    )
    assert error_lines(err) == [expected]
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_an_index_from_before_the_marker_is_still_coarchs(copy: tuple[Path, Path]) -> None:
    tree, idx = copy
    with Store(idx) as store, store.transaction():
        store.set_meta("app", None)  # as written before the marker existed
    with Index(tree, index_dir=idx, **OPTIONS) as index:
        assert index.build().files_unchanged == len(SMALL_FILES)

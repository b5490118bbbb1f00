"""The store (SQLite source of truth) and the FAISS file derived from it."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest

from coarch import vectors as faiss_file
from coarch.errors import CorruptIndexError, IndexNotFoundError
from coarch.identifiers import query_terms
from coarch.store import NewChunk, Store, fts_rules, schema, text_hash
from coarch.store import fts as fts_rows

DIM = 8


def unit(seed: int) -> bytes:
    v = np.random.default_rng(seed).standard_normal(DIM).astype("<f4")
    return (v / np.linalg.norm(v)).astype("<f4").tobytes()


def seed_of(digest: str) -> int:
    """A vector seed from a text hash: the same in every run (hash() of a str is salted per
    process) and distinct per text (hash() % 1000 gave two of 300 texts the same vector now and
    then, and the nearest-neighbour test found the twin)."""
    return int(digest[:16], 16)


def chunk(text: str, symbol: str | None = None, start: int = 1) -> NewChunk:
    symbols = (symbol,) if symbol else ()
    return NewChunk(start, start + text.count("\n"), "python", symbols, text, text_hash(text))


def put(store: Store, path: str, chunks: list[NewChunk], content: str = "h") -> None:
    with store.transaction():
        store.put_vectors((c.text_hash, unit(seed_of(c.text_hash))) for c in chunks)
        store.put_file(path, 10, 1, content, "python", chunks)


def fts(store: Store, query: str) -> list[int]:
    return [
        r[0]
        for r in store.conn.execute(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (query_terms(query),)
        )
    ]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "idx")
    with s.transaction():
        s.set_meta("dim", DIM)
    yield s
    s.close()


def test_schema_wal_and_meta(store: Store) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = store.meta()
    assert meta["schema_version"] == "1" and meta["generation"] == "0"
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
    assert {"meta", "files", "chunks", "vectors", "chunks_fts"} <= tables


def test_put_replace_remove_keep_fts_in_step(store: Store) -> None:
    put(
        store,
        "src/client.py",
        [
            chunk("def parseConfig(path):\n    return path", "parseConfig"),
            chunk("class HttpClient:\n    pass", "HttpClient", 4),
        ],
    )
    ids = fts(store, "parse_config")
    assert len(ids) == 1
    (row,) = store.chunks_by_ids(ids)
    assert (row.path, row.start_line, row.end_line, row.symbol) == (
        "src/client.py",
        1,
        2,
        "parseConfig",
    )
    assert fts(store, "http client") and fts(store, "client")  # path terms too
    gen = store.generation()
    # Replacing the file's chunks removes the old FTS rows: no stale keyword hits.
    put(store, "src/client.py", [chunk("def load_settings():\n    pass", "load_settings")], "h2")
    assert fts(store, "parseConfig") == [] and len(fts(store, "settings")) == 1
    assert store.generation() == gen + 1
    assert store.counts()["chunks"] == 1
    with store.transaction():
        store.remove_file("src/client.py")
    assert fts(store, "settings") == [] and store.counts()["files"] == 0
    # Vectors are a cache keyed by text hash: they outlive chunks until dropped.
    assert store.counts()["vectors"] == 3
    with store.transaction():
        assert store.drop_orphan_vectors() == 3


def test_fts_rebuilt_when_its_term_rules_change(store: Store) -> None:
    """An index whose keyword rows were derived under other rules (an older coarch, another
    Unicode version) gets them rebuilt by the next writer: keyword search finds every chunk by
    today's terms, and deleting a file then leaves no stale rows."""
    put(
        store,
        "src/client.py",
        [
            chunk("def parseConfig(path):\n    return path", "parseConfig"),
            chunk("class HttpClient:\n    pass", "HttpClient", 4),
        ],
    )
    put(store, "src/other.py", [chunk("retry_upload = None", "retry_upload")], "h2")
    assert store.meta()["fts_rules"] == fts_rules()
    ids = [r[0] for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")]
    # The rows as other rules would have derived them: other terms, recorded as such.
    with store.transaction():
        store.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all')")
        store.conn.executemany(
            "INSERT INTO chunks_fts(rowid, path_terms, symbol_terms, body_terms)"
            " VALUES (?, 'oldpath', 'oldsymbol', 'oldbody')",
            [(i,) for i in ids],
        )
        store.set_meta("fts_rules", "terms 0, unicode 1.1.0")
    store.close()

    with Store(store.index_dir) as writer:
        assert writer.get_meta("fts_rules") == fts_rules()
        assert fts(writer, "oldbody") == []
        assert (fts(writer, "parse_config"), fts(writer, "retry_upload")) == ([ids[0]], [ids[2]])
        assert ids[1] in fts(writer, "HttpClient")
        assert sorted(fts(writer, "src")) == ids  # path terms too
        with writer.transaction():
            writer.remove_file("src/client.py")
            writer.remove_file("src/other.py")
        for word in ("src", "parse", "config", "http", "client", "retry", "oldbody"):
            assert fts(writer, word) == [], word
        assert writer.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 0


def test_fts_table_made_again_under_the_stemmer(store: Store) -> None:
    """An index whose keyword table was made without the stemmer (an older coarch) gets it made
    again, stemmed, by the next writer: "parsing retries" then finds `parse_retry`, and deleting
    the file leaves no row behind."""
    put(store, "src/a.py", [chunk("def parse_retry(path):\n    return path", "parse_retry")])
    with store.transaction():
        store.conn.execute("DROP TABLE chunks_fts")
        unstemmed = schema.FTS_TABLE.replace(schema.FTS_TOKENIZER, "unicode61 tokenchars '_'")
        store.conn.execute(unstemmed)
        stored = (
            "SELECT c.id, f.path, c.symbol, c.text FROM chunks c JOIN files f ON f.id = c.file_id"
        )
        fts_rows.insert(store.conn, store.conn.execute(stored).fetchall())
        store.set_meta("fts_rules", "terms 1, unicode 1.1.0")
    assert fts(store, "parse_retry") != [] and fts(store, "parsing retries") == []
    store.close()

    with Store(store.index_dir) as writer:
        sql = writer.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'")
        assert "porter" in sql.fetchone()[0]
        assert len(fts(writer, "parsing retries")) == 1
        with writer.transaction():
            writer.remove_file("src/a.py")
        assert writer.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 0


def test_fts_rules_unrecorded_rebuilds_once(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """An index made before the rules were recorded is rebuilt on its first writer open, then
    left alone: the recorded value is this process's."""
    put(store, "a.py", [chunk("alpha_beta = 1")])
    with store.transaction():
        store.set_meta("fts_rules", None)
    store.close()
    caplog.set_level(logging.INFO, logger="coarch.store")
    with Store(store.index_dir) as writer:
        assert writer.get_meta("fts_rules") == fts_rules()
        assert len(fts(writer, "beta")) == 1
    assert "keyword index rebuilt (unrecorded -> terms " in caplog.text
    caplog.clear()
    with Store(store.index_dir) as again:
        assert len(fts(again, "alpha_beta")) == 1
    assert "rebuilt" not in caplog.text


def test_symbols_are_stored_as_a_list(store: Store) -> None:
    """Names holding commas survive storage whole; one plain name stays plain in the column;
    rows written by chunker 1 (names joined with ", ") are still read and deleted cleanly."""
    lists = [
        ("Map<K, V>", "put"),
        ("Map<K, V>",),
        ("[T]",),
        ("parse_config",),
        (),
        ("HttpClient", "retry_upload"),
    ]
    put(
        store,
        "a.rs",
        [
            NewChunk(i + 1, i + 1, "rust", names, f"x{i} = {i}", text_hash(str(i)))
            for i, names in enumerate(lists)
        ],
    )
    ids = [r[0] for r in store.conn.execute("SELECT id FROM chunks ORDER BY id")]
    assert [r.symbols for r in store.chunks_by_ids(ids)] == lists
    assert [r.symbols for r in store.chunks_of("a.rs")] == lists
    raw = [r[0] for r in store.conn.execute("SELECT symbol FROM chunks ORDER BY id")]
    assert raw[3:5] == ["parse_config", None] and raw[0] == '["Map<K, V>", "put"]'
    assert store.chunks_by_ids(ids[:1])[0].symbol == "Map<K, V>, put"
    assert len(fts(store, "put")) == 1
    with store.transaction():
        store.conn.execute(
            "UPDATE chunks SET symbol = 'HttpClient, retry_upload' WHERE id = ?", (ids[5],)
        )  # as chunker 1 wrote it: the same keyword terms
    assert store.chunks_by_ids(ids[5:])[0].symbols == ("HttpClient", "retry_upload")
    with store.transaction():
        store.remove_file("a.rs")
    for word in ("map", "put", "parse_config", "x0", "a", "HttpClient", "retry"):
        assert fts(store, word) == [], word


def test_chunk_ids_are_never_reused(store: Store) -> None:
    put(store, "a.py", [chunk("a = 1"), chunk("b = 2", start=2)])
    first = store.max_chunk_id()
    with store.transaction():
        store.remove_file("a.py")
    put(store, "a.py", [chunk("a = 1")])
    assert store.max_chunk_id() == first + 1


def test_rollback_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.put_file("a.py", 1, 1, "h", "python", [chunk("x = 1")])
        raise RuntimeError("crash in the middle")
    assert store.counts()["files"] == 0 and store.counts()["chunks"] == 0
    assert fts(store, "x") == []


def test_failed_commit_rolls_back_and_later_writes_are_kept(store: Store) -> None:
    """A COMMIT that fails (here a deferred foreign key, checked only at COMMIT) must not leave
    the connection inside the transaction: the next write (a run's "failed" record) would join
    it and be lost with it."""
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.conn.execute("PRAGMA defer_foreign_keys = ON")
        store.conn.execute(
            "INSERT INTO chunks(file_id, start_line, end_line, text, text_hash)"
            " VALUES (4242, 1, 1, 'x', 'h')"
        )
        store.set_meta("doomed", "1")
    assert not store.conn.in_transaction
    with store.transaction():
        store.set_meta("last_run_state", "failed")
    with Store(store.index_dir, readonly=True) as reader:
        assert reader.get_meta("last_run_state") == "failed"
        assert reader.get_meta("doomed") is None and reader.chunk_count() == 0


def test_skipped_files_are_remembered(store: Store) -> None:
    with store.transaction():
        store.put_skipped("img.png", 100, 5, "abc", "binary")
    assert store.file_states()["img.png"].skipped == "binary"
    assert store.counts()["files"] == 0 and store.counts()["skipped_files"] == 1


def test_readonly_view_sees_commits_only(store: Store) -> None:
    put(store, "a.py", [chunk("alpha = 1")])
    reader = Store(store.index_dir, readonly=True)
    try:
        store.conn.execute("BEGIN IMMEDIATE")
        store.put_file("b.py", 1, 1, "h", "python", [chunk("beta = 2")])
        assert reader.counts()["files"] == 1  # uncommitted work is invisible
        store.conn.execute("COMMIT")
        assert reader.counts()["files"] == 2
        with pytest.raises(sqlite3.OperationalError):
            reader.conn.execute("DELETE FROM files")
    finally:
        reader.close()


def test_missing_and_corrupt_databases(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        Store(tmp_path / "none", readonly=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.sqlite").write_bytes(b"this is not a database" * 200)
    for readonly in (False, True):
        with pytest.raises(CorruptIndexError, match="unreadable") as info:
            Store(bad, readonly=readonly)
        assert "--full" in (info.value.hint or "")


# ---- FAISS file ----------------------------------------------------------------------------------


def fill(store: Store, n: int) -> None:
    put(store, "f.py", [chunk(f"value_{i} = {i}", start=i + 1) for i in range(n)])


def test_streamed_flat_file_matches_faiss_write_index(store: Store, tmp_path: Path) -> None:
    fill(store, 5)
    result = faiss_file.sync(store, store.index_dir, DIM)
    assert (result.action, result.kind, result.chunks) == ("written", "flat", 5)
    reference = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    for ids, vecs in store.iter_chunk_vectors():
        reference.add_with_ids(vecs, ids)
    faiss.write_index(reference, str(tmp_path / "ref.faiss"))
    ours = faiss_file.faiss_path(store.index_dir).read_bytes()
    assert ours == (tmp_path / "ref.faiss").read_bytes()


def test_sync_is_incremental_and_search_returns_chunk_ids(store: Store) -> None:
    fill(store, 20)
    assert faiss_file.sync(store, store.index_dir, DIM).action == "written"
    assert faiss_file.freshness(store, store.index_dir) is None
    assert faiss_file.sync(store, store.index_dir, DIM).action == "fresh"
    index = faiss_file.load(store.index_dir)
    assert index.ntotal == 20
    (row,) = store.chunks_by_ids([store.max_chunk_id()])
    vec = np.frombuffer(
        store.get_vectors([text_hash(row.text)])[text_hash(row.text)], dtype="<f4"
    ).reshape(1, DIM)
    scores, ids = index.search(vec, 1)
    assert ids[0][0] == row.id and scores[0][0] == pytest.approx(1.0, abs=1e-5)
    # A commit makes the file stale; readers still get the committed state, from SQLite.
    put(store, "g.py", [chunk("extra = 1")])
    assert faiss_file.freshness(store, store.index_dir) == "stale"
    assert faiss_file.open_for_search(store, store.index_dir).ntotal == 21
    assert faiss_file.sync(store, store.index_dir, DIM).action == "written"
    assert faiss_file.load(store.index_dir).ntotal == 21


@pytest.mark.parametrize("damage", ["garbage", "truncate", "delete"])
def test_corrupt_or_missing_faiss_file_is_rebuilt(store: Store, damage: str) -> None:
    fill(store, 10)
    faiss_file.sync(store, store.index_dir, DIM)
    path = faiss_file.faiss_path(store.index_dir)
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.unlink()
    assert faiss_file.freshness(store, store.index_dir) in ("corrupt", "missing")
    assert faiss_file.open_for_search(store, store.index_dir).ntotal == 10
    assert faiss_file.sync(store, store.index_dir, DIM).action == "written"
    assert faiss_file.load(store.index_dir).ntotal == 10
    assert not list(store.index_dir.glob(".vectors-*"))  # no temp file left behind


def test_ivf_above_the_threshold(store: Store) -> None:
    fill(store, 300)
    result = faiss_file.sync(store, store.index_dir, DIM, threshold=100)
    assert result.kind == "ivf"
    index = faiss_file.load(store.index_dir)
    assert index.ntotal == 300
    ids, vecs = next(store.iter_chunk_vectors())
    index.nprobe = index.nlist
    _, found = index.search(vecs[:3], 1)
    assert list(found[:, 0]) == list(ids[:3])

"""coarch search: a real tree indexed with the real model, FAISS and SQLite, then searched.

The tree is small (a few dozen chunks) so the whole module runs in seconds; it is indexed once
per module. Tests that change an index work on their own copy of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from indexing_helpers import model_input_at, vector_of

import coarch
from coarch.chunk_vectors import ChunkInput
from coarch.cli import main
from coarch.embedder import get_embedder
from coarch.errors import IndexNotFoundError, ModelMismatchError, UsageError
from coarch.hit import Hit
from coarch.index import Index
from coarch.search import Searcher
from coarch.store import NewChunk, Store, text_hash

TREE: dict[str, str] = {
    "net/http_client.py": '''
        """A tiny HTTP/1.1 client over a plain socket."""

        import socket


        class HttpClient:
            """Sends requests over one connection and reads the responses."""

            def __init__(self, host, port=80, timeout=10.0):
                self.host = host
                self.port = port
                self.timeout = timeout
                self.sock = None

            def connect(self):
                self.sock = socket.create_connection((self.host, self.port), self.timeout)
                return self.sock

            def send(self, request):
                data = request.encode("ascii")
                self.sock.sendall(data)
                return self.sock.recv(65536)

            def get(self, target, headers=None):
                lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}"]
                for name, value in (headers or {}).items():
                    lines.append(f"{name}: {value}")
                raw = self.send("\\r\\n".join(lines) + "\\r\\n\\r\\n")
                return Response.parse(raw)

            def follow_redirects(self, response, limit=10):
                hops = 0
                while response.status in (301, 302, 303, 307, 308) and hops < limit:
                    location = response.headers["Location"]
                    response = self.get(location)
                    hops += 1
                return response

            def close(self):
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None


        class Response:
            def __init__(self, status, headers, body):
                self.status = status
                self.headers = headers
                self.body = body

            @classmethod
            def parse(cls, raw):
                head, _, body = raw.partition(b"\\r\\n\\r\\n")
                status_line, *header_lines = head.decode("latin-1").split("\\r\\n")
                status = int(status_line.split()[1])
                headers = dict(line.split(": ", 1) for line in header_lines)
                return cls(status, headers, body)
        ''',
    "net/wire.py": """
        def send(sock, payload):
            sock.sendall(len(payload).to_bytes(4, "big") + payload)
        """,
    "config/loader.py": """
        import configparser


        def parse_config(path):
            parser = configparser.ConfigParser()
            parser.read(path, encoding="utf-8")
            return {section: dict(parser[section]) for section in parser.sections()}
        """,
    "app/main.py": """
        from config.loader import parse_config


        def run(paths):
            settings = [parse_config(p) for p in paths]
            # parse_config again for the defaults: parse_config, parse_config, parse_config
            defaults = parse_config("defaults.ini")
            return settings, defaults
        """,
    "web/slug.js": """
        // Turn a page title into something safe to put in a URL.
        function slugify(title) {
          return title
            .toLowerCase()
            .normalize("NFKD")
            .replace(/[^a-z0-9]+/g, "-")
            .replace(/^-+|-+$/g, "");
        }

        module.exports = { slugify };
        """,
    "mathx/fib.go": """
        package mathx

        // Fibonacci returns the n-th number of the sequence 0, 1, 1, 2, 3, 5, 8, ...
        func Fibonacci(n int) int {
            a, b := 0, 1
            for i := 0; i < n; i++ {
                a, b = b, a+b
            }
            return a
        }
        """,
    "jobs/retry.rs": """
        use std::thread::sleep;
        use std::time::Duration;

        /// Runs `op` until it succeeds, sleeping twice as long after each failure.
        pub fn retry_with_backoff<T, E>(mut op: impl FnMut() -> Result<T, E>, tries: u32) -> Result<T, E> {
            let mut delay = Duration::from_millis(100);
            let mut attempt = 0;
            loop {
                match op() {
                    Ok(value) => return Ok(value),
                    Err(err) if attempt + 1 >= tries => return Err(err),
                    Err(_) => {
                        sleep(delay);
                        delay *= 2;
                        attempt += 1;
                    }
                }
            }
        }
        """,
    "i18n/grüße.py": '''
        def begrüßung(name):
            """Grüß Gott! 日本語の挨拶も返す。"""
            return f"Grüß Gott, {name}! こんにちは"
        ''',
    "tests/test_loader.py": """
        from config.loader import parse_config


        def test_parse_config(tmp_path):
            ini = tmp_path / "a.ini"
            ini.write_text("[db]\\nhost = x\\n")
            assert parse_config(ini) == {"db": {"host": "x"}}
        """,
}

HIT_FIELDS = {"path", "start_line", "end_line", "score", "language", "symbol", "snippet"}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def line_of(rel: str, needle: str) -> int:
    """1-based line of the first line of TREE[rel] containing `needle`."""
    lines = textwrap.dedent(TREE[rel]).lstrip("\n").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def covers(hit: Hit, rel: str, line: int) -> bool:
    return hit.path == rel and hit.start_line <= line <= hit.end_line


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(root, index_dir) of TREE, indexed once for the module."""
    base = tmp_path_factory.mktemp("search")
    root, index_dir = base / "repo", base / "index"
    write_tree(root, TREE)
    with Index(root, index_dir=index_dir) as index:
        summary = index.build()
    assert summary.chunks_total >= len(TREE)
    yield root, index_dir


@pytest.fixture()
def index(indexed: tuple[Path, Path]) -> Iterator[Index]:
    root, index_dir = indexed
    with Index(root, index_dir=index_dir) as opened:
        yield opened


@pytest.fixture()
def index_copy(indexed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the module's index, for tests that write to it."""
    root, index_dir = indexed
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return root, copy


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---- by description and by name ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "rel", "needle"),
    [
        ("where are HTTP redirects followed", "net/http_client.py", "def follow_redirects"),
        ("make a URL-safe slug from a page title", "web/slug.js", "function slugify"),
        ("numbers of the fibonacci sequence", "mathx/fib.go", "func Fibonacci"),
        ("retry a failing operation with exponential backoff", "jobs/retry.rs", "fn retry_with"),
        (
            "turn the sections of a configparser file into dictionaries",
            "config/loader.py",
            "def parse_config",
        ),
    ],
)
@pytest.mark.parametrize("mode", ["hybrid", "semantic"])
def test_finds_definition_by_description(
    index: Index, query: str, rel: str, needle: str, mode: str
) -> None:
    hits = index.search(query, k=3, mode=mode)
    assert hits, query
    assert covers(hits[0], rel, line_of(rel, needle)), (query, hits[0])


@pytest.mark.parametrize(
    ("query", "rel", "needle"),
    [
        ("parse_config", "config/loader.py", "def parse_config"),
        ("HttpClient", "net/http_client.py", "class HttpClient"),
        ("HttpClient.send", "net/http_client.py", "def send"),
        ("send", "net/wire.py", "def send"),  # a top-level definition before a method
        ("follow_redirects()", "net/http_client.py", "def follow_redirects"),
        ("slugify", "web/slug.js", "function slugify"),
        ("Fibonacci", "mathx/fib.go", "func Fibonacci"),
        ("retry_with_backoff", "jobs/retry.rs", "fn retry_with_backoff"),
        ("parseConfig", "config/loader.py", "def parse_config"),  # no such name: split words
    ],
)
def test_identifier_query_puts_definition_first(
    index: Index, query: str, rel: str, needle: str
) -> None:
    hits = index.search(query, k=5)
    assert covers(hits[0], rel, line_of(rel, needle)), (query, hits[0])


# Generic definitions whose names hold commas (`LruCache<K, V>.lookup`, `Table<K, V>::fetch`),
# and a file that uses them heavily (what keyword search alone prefers).
GENERIC_TREE = {
    "cache/lru.rs": """
        use std::collections::HashMap;
        use std::hash::Hash;

        /// A bounded cache that forgets its oldest entries first.
        pub struct LruCache<K, V> {
            entries: HashMap<K, (V, u64)>,
            capacity: usize,
            clock: u64,
        }

        impl<K: Hash + Eq + Clone, V: Clone> LruCache<K, V> {
            /// A cache holding at most `capacity` entries.
            pub fn new(capacity: usize) -> Self {
                LruCache { entries: HashMap::with_capacity(capacity), capacity, clock: 0 }
            }

            /// The value stored for `key`, marking it as recently used.
            pub fn lookup(&mut self, key: &K) -> Option<V> {
                self.clock += 1;
                let now = self.clock;
                match self.entries.get_mut(key) {
                    Some((value, used)) => {
                        *used = now;
                        Some(value.clone())
                    }
                    None => None,
                }
            }

            /// Stores `value` under `key`, evicting the least recently used entry when full.
            pub fn store(&mut self, key: K, value: V) {
                self.clock += 1;
                if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
                    let oldest = self
                        .entries
                        .iter()
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(k, _)| k.clone());
                    if let Some(oldest) = oldest {
                        self.entries.remove(&oldest);
                    }
                }
                self.entries.insert(key, (value, self.clock));
            }

            /// How many entries the cache holds now.
            pub fn len(&self) -> usize {
                self.entries.len()
            }
        }
        """,
    "store/table.cpp": """
        #include <map>
        #include <string>

        template <typename K, typename V>
        class Table {
         public:
          V fetch(const K& key) const;
          void put(const K& key, const V& value);

         private:
          std::map<K, V> rows_;
        };

        // Looks a key up; a missing key gives a default-constructed value.
        template <typename K, typename V>
        V Table<K, V>::fetch(const K& key) const {
          auto it = rows_.find(key);
          if (it == rows_.end()) {
            return V();
          }
          return it->second;
        }

        template <typename K, typename V>
        void Table<K, V>::put(const K& key, const V& value) {
          rows_[key] = value;
        }
        """,
    "app/usage.py": """
        def warm(cache, table, keys):
            # cache.lookup and table.fetch for every key: lookup, fetch, lookup, fetch
            for key in keys:
                if cache.lookup(key) is None:
                    cache.store(key, table.fetch(key))
            return [cache.lookup(k) for k in keys] + [table.fetch(k) for k in keys]
        """,
}


@pytest.fixture(scope="module")
def generic_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    base = tmp_path_factory.mktemp("generic")
    write_tree(base / "repo", GENERIC_TREE)
    # Merging up to 192 tokens puts class Table and its first method in one chunk: one row
    # holding two names, one of them with a comma.
    with Index(
        base / "repo", index_dir=base / "index", checkpoint_every=0, target_tokens=192
    ) as index:
        index.build()
        yield index


@pytest.mark.parametrize(
    ("query", "rel", "needle"),
    [
        ("LruCache.lookup", "cache/lru.rs", "pub fn lookup"),
        ("LruCache::store", "cache/lru.rs", "pub fn store"),
        ("lookup", "cache/lru.rs", "pub fn lookup"),
        ("Table::fetch", "store/table.cpp", "V Table<K, V>::fetch"),
        ("Table.put", "store/table.cpp", "void Table<K, V>::put"),
        ("put", "store/table.cpp", "void Table<K, V>::put"),
    ],
)
def test_generic_definition_names_with_commas(
    generic_index: Index, query: str, rel: str, needle: str
) -> None:
    lines = textwrap.dedent(GENERIC_TREE[rel]).lstrip("\n").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if needle in text)
    hits = generic_index.search(query, k=5)
    assert covers(hits[0], rel, line), (query, hits[0])
    assert hits[0].score > 1  # ranked as a definition, not by luck


def test_generic_symbols_are_kept_whole(generic_index: Index) -> None:
    """Names holding commas are stored as a list and read back whole; the readable symbol
    joins them with ", "."""
    with Store(generic_index.index_dir, readonly=True) as store:
        rows = [store.chunks_of(p) for p in ("cache/lru.rs", "store/table.cpp")]
    symbols = {s for file_rows in rows for r in file_rows for s in r.symbols}
    assert {"LruCache<K, V>.lookup", "Table<K, V>::put"} <= symbols
    first = rows[1][0]
    assert first.symbols == ("Table", "Table<K, V>::fetch")
    assert first.symbol == "Table, Table<K, V>::fetch"
    hit = generic_index.search("Table::fetch", k=1)[0]
    assert hit.symbol == "Table, Table<K, V>::fetch"


def test_identifier_definition_outranks_heavy_usage(index: Index) -> None:
    # app/main.py says parse_config five times; keyword search alone prefers it.
    keyword = index.search("parse_config", k=5, mode="keyword")
    assert {h.path for h in keyword} >= {"app/main.py", "config/loader.py"}
    hybrid = index.search("parse_config", k=5)
    assert hybrid[0].path == "config/loader.py"
    assert hybrid[0].score > hybrid[1].score
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_keyword_mode_matches_split_identifiers(index: Index) -> None:
    hits = index.search("redirects follow", k=3, mode="keyword")
    assert covers(hits[0], "net/http_client.py", line_of("net/http_client.py", "follow_redirects"))
    assert index.search("qwertyuiopasdf", mode="keyword") == []


def test_semantic_scores_are_cosines(index: Index) -> None:
    hits = index.search("http client", k=20, mode="semantic")
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 + 1e-5 for s in scores)


def test_hits_are_complete_chunks(index: Index, indexed: tuple[Path, Path]) -> None:
    root, _ = indexed
    for hit in index.search("configuration", k=50):
        lines = (root / hit.path).read_text(encoding="utf-8").splitlines()
        assert 1 <= hit.start_line <= hit.end_line <= len(lines)
        assert hit.snippet.splitlines()[0].strip() in lines[hit.start_line - 1]
        assert hit.language is not None


def test_k_limits_and_all_modes_agree_on_the_api(index: Index) -> None:
    for mode in ("hybrid", "semantic", "keyword"):
        hits = index.search("parse config", k=2, mode=mode)
        assert 1 <= len(hits) <= 2
        assert all(isinstance(h, Hit) for h in hits)
    assert len(index.search("function", k=1000)) <= 1000


def test_bad_arguments(index: Index) -> None:
    with pytest.raises(UsageError, match="unknown search mode 'fuzzy'"):
        index.search("x", mode="fuzzy")
    with pytest.raises(UsageError, match="k must be a positive integer"):
        index.search("x", k=0)
    assert index.search("   ") == []


# ---- filters --------------------------------------------------------------------------------------


def test_lang_filter(index: Index) -> None:
    hits = index.search("parse config", k=5, lang="javascript")
    assert hits and {h.language for h in hits} == {"javascript"}
    assert {h.language for h in index.search("loop", k=10, lang=["go", "rs"])} <= {"go", "rust"}
    assert index.search("anything", lang="cobol") == []


def test_path_filter_include_and_exclude(index: Index) -> None:
    everywhere = index.search("parse_config", k=10)
    assert "tests/test_loader.py" in {h.path for h in everywhere}
    without_tests = index.search("parse_config", k=10, path="!tests/")
    assert without_tests and all(not h.path.startswith("tests/") for h in without_tests)
    only_py = index.search("parse_config", k=10, path=["*.py", "!app/"])
    assert only_py and all(
        h.path.endswith(".py") and not h.path.startswith("app/") for h in only_py
    )
    assert index.search("parse_config", path="nothing/here/") == []


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_filters_still_return_k_hits(index: Index, mode: str) -> None:
    # Other files rank above the HTTP client's chunks for this query, yet a filter that keeps
    # only that file must still fill k from it, however deep its chunks rank overall.
    query = "parse config"
    top = index.search(query, k=3, mode=mode)
    assert top and top[0].path != "net/http_client.py"
    everything = index.search(query, k=100, mode=mode, path="net/")
    assert len(everything) >= 2
    hits = index.search(query, k=2, mode=mode, path="net/")
    assert len(hits) == 2 and all(h.path == "net/http_client.py" for h in hits)


# ---- CLI ------------------------------------------------------------------------------------------


def test_cli_json_lines_schema(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    code, out, err = run_cli(
        ["search", "--index", str(index_dir), "--json", "-k", "4", "http", "redirects"], capsys
    )
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    assert 1 <= len(rows) <= 4
    for row in rows:
        assert set(row) == HIT_FIELDS
        assert isinstance(row["path"], str) and isinstance(row["snippet"], str)
        assert isinstance(row["start_line"], int) and isinstance(row["end_line"], int)
        assert isinstance(row["score"], float)
        assert row["language"] is None or isinstance(row["language"], str)
        assert row["symbol"] is None or isinstance(row["symbol"], str)
    assert rows[0]["path"] == "net/http_client.py"


def test_cli_human_output(indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, index_dir = indexed
    code, out, _ = run_cli(["search", "--index", str(index_dir), "-k", "1", "parse_config"], capsys)
    assert code == 0
    head, *snippet = out.rstrip("\n").splitlines()
    path_lines, score, symbol = head.split("  ")
    assert path_lines.startswith("config/loader.py:") and symbol == "parse_config"
    float(score)
    assert 1 <= len(snippet) <= 3 and "def parse_config(path):" in snippet[0]
    assert "\x1b[" not in out  # captured stdout is no terminal


def test_cli_color(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, index_dir = indexed
    argv = ["search", "--index", str(index_dir), "-k", "1", "slugify"]
    assert run_cli([*argv, "--color=always"], capsys)[1].count("\x1b[") >= 4
    assert "\x1b[" not in run_cli([*argv, "--color=never"], capsys)[1]
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in run_cli([*argv, "--color=auto"], capsys)[1]


def test_cli_filters_and_mode(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    code, out, _ = run_cli(
        [
            "search",
            "--index",
            str(index_dir),
            "--json",
            "--mode",
            "keyword",
            "--lang",
            "py",
            "--path",
            "!tests/",
            "--path",
            "!app/",
            "parse_config",
        ],
        capsys,
    )
    assert code == 0
    paths = [json.loads(line)["path"] for line in out.splitlines()]
    assert paths[0] == "config/loader.py"
    assert all(p.endswith(".py") and not p.startswith(("tests/", "app/")) for p in paths)


def test_cli_no_hits_exits_1(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    code, out, err = run_cli(
        ["search", "--index", str(index_dir), "--mode", "keyword", "zzqqxxunfindable"], capsys
    )
    assert (code, out, err) == (1, "", "")


def test_cli_no_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    monkeypatch.delenv("COARCH_INDEX_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = run_cli(["search", "anything"], capsys)
    assert code == 2 and out == ""
    real = os.path.realpath(repo)
    assert err == f"coarch: error: no index for {real}: run `coarch index {real}` first\n"
    code, _, err = run_cli(["search", "--index", str(tmp_path / "none"), "x"], capsys)
    assert code == 2 and err.startswith("coarch: error: no index in ")


def test_cli_inside_indexed_repository_uses_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COARCH_INDEX_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    write_tree(repo, {"pkg/mod.py": TREE["config/loader.py"]})
    with Index(repo) as index:
        index.build()
    monkeypatch.chdir(repo / "pkg")
    code, out, _ = run_cli(["search", "--json", "parse_config"], capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["path"] == "pkg/mod.py"


def test_cli_usage_errors(indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, index_dir = indexed
    code, _, err = run_cli(["search", "--index", str(index_dir), "-k", "0", "x"], capsys)
    assert code == 2 and err.startswith("coarch: error: argument -k: 0 must be at least 1")
    code, _, err = run_cli(["search", "--index", str(index_dir), "--mode", "fuzzy", "x"], capsys)
    assert code == 2 and "invalid choice: 'fuzzy'" in err


def test_cli_invalid_glob_is_a_usage_error(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    for glob in ("[", "!src/[ab", "[z-a]"):
        code, out, err = run_cli(["search", "--index", str(index_dir), "--path", glob, "x"], capsys)
        bad = glob.removeprefix("!")
        assert (code, out) == (2, "")
        first, hint = err.splitlines()
        assert first == f"coarch: error: invalid --path glob {bad!r}"
        assert hint.startswith("coarch: hint: globs follow .gitignore rules: close every `[`")
    with Index(index_dir=index_dir) as api, pytest.raises(UsageError, match="invalid --path"):
        api.search("x", path="[")


def test_cli_unknown_language_lists_the_known_ones(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from coarch.languages import known_languages

    _, index_dir = indexed
    code, out, err = run_cli(
        ["search", "--index", str(index_dir), "--lang", "py,nonsense", "x"], capsys
    )
    assert (code, out) == (2, "")
    first, hint = err.splitlines()
    assert first == "coarch: error: unknown language 'nonsense'"
    assert hint == (
        "coarch: hint: use a language, an alias or an extension (py, ts, kt); known"
        " languages: " + ", ".join(known_languages())
    )
    # Names, extensions and file names keep working.
    for lang in ("python", "PY", ".rs", "Makefile", "cobol"):
        assert run_cli(["search", "--index", str(index_dir), "--lang", lang, "-q", "x"], capsys)[
            0
        ] in (0, 1)


def test_cli_k_above_the_maximum_warns_and_quiet_hides_it(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    argv = ["search", "--index", str(index_dir), "--json", "-k", "5000", "function"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and out
    assert err == "coarch: warning: at most 1000 hits are returned, not 5000\n"
    code, quiet_out, err = run_cli([*argv, "-q"], capsys)
    assert (code, quiet_out, err) == (0, out, "")
    # -q hides warnings, never errors.
    code, _, err = run_cli([*argv, "-q", "--lang", "nonsense"], capsys)
    assert code == 2 and err.startswith("coarch: error: unknown language 'nonsense'\n")


def test_cli_lines_takes_zero_or_more(
    indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, index_dir = indexed
    argv = ["search", "--index", str(index_dir), "-k", "1", "parse_config"]
    code, out, err = run_cli([*argv, "--lines", "-1"], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines()[0] == "coarch: error: argument --lines: -1 must be 0 or more"
    code, out, _ = run_cli([*argv, "--lines", "0"], capsys)
    assert code == 0 and len(out.splitlines()) == 1


def test_cli_control_characters_in_paths_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, index_dir = tmp_path / "repo", tmp_path / "index"
    names = {"odd\nname.py": "line_break_name", "esc\x1b[31mred.py": "escape_name"}
    for name, function in names.items():
        write_tree(root, {name: f"def {function}():\n    return 1\n"})
    with Index(root, index_dir=index_dir) as index:
        index.build()
    for name, function in names.items():
        argv = ["search", "--index", str(index_dir), "--mode", "keyword", "-k", "1", function]
        code, out, _ = run_cli(argv, capsys)
        assert code == 0
        head, *snippet = out.rstrip("\n").split("\n")
        shown = name.replace("\n", "\\n").replace("\x1b", "\\x1b")
        assert head.startswith(f"{shown}:1-2  ") and head.endswith(f"  {function}")
        assert snippet == [f"  1  def {function}():", "  2      return 1"]
        code, out, _ = run_cli([*argv, "--json"], capsys)
        assert json.loads(out)["path"] == name  # JSON stays exact


def test_format_hit_escapes_symbols_and_snippet_controls() -> None:
    from coarch.cli_output import format_hit

    hit = Hit("a.py", 1, 1, 0.5, "python", "evil\x1b]0;title\x07", "x = '\x1b[2J'\u202e")
    assert format_hit(hit, "x", False, 1) == (
        "a.py:1-1  0.500  evil\\x1b]0;title\\x07\n  1  x = '\\x1b[2J'\\u202e\n\n"
    )


def test_cli_closed_stdout_ends_quietly(indexed: tuple[Path, Path]) -> None:
    _, index_dir = indexed
    for extra in ("--json", ""):
        proc = subprocess.run(
            f"{sys.executable} -m coarch search --index {index_dir} {extra} function >&-",
            shell=True,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (2, "")


def test_cli_subprocess_pipe_closed(indexed: tuple[Path, Path]) -> None:
    _, index_dir = indexed
    proc = subprocess.run(
        f"{sys.executable} -m coarch search --index {index_dir} -k 50 function | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert ":" in proc.stdout


# ---- edge cases -----------------------------------------------------------------------------------


def test_empty_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "repo").mkdir()
    with Index(tmp_path / "repo", index_dir=tmp_path / "index") as index:
        index.build()
        for mode in ("hybrid", "semantic", "keyword"):
            assert index.search("anything at all", mode=mode) == []
            assert index.search("parse_config", mode=mode) == []
    code, out, _ = run_cli(["search", "--index", str(tmp_path / "index"), "x"], capsys)
    assert (code, out) == (1, "")


def test_query_longer_than_the_model_limit(index: Index) -> None:
    query = "follow the HTTP redirect location header " * 400  # ~2,800 tokens
    for mode in ("hybrid", "semantic", "keyword"):
        hits = index.search(query, k=3, mode=mode)
        assert hits and hits[0].path == "net/http_client.py", mode


@pytest.mark.parametrize("mode", ["hybrid", "semantic", "keyword"])
def test_non_ascii_queries(index: Index, mode: str) -> None:
    hits = index.search("begrüßung", k=3, mode=mode)
    assert hits[0].path == "i18n/grüße.py"
    assert index.search("日本語の挨拶", k=3, mode=mode)[0].path == "i18n/grüße.py"
    # Emoji, right-to-left text, combining marks: no error, whatever comes back.
    index.search("🎉 مرحبا e\u0301te\u0301", k=3, mode=mode)


def test_fts_syntax_in_query_is_plain_text(index: Index) -> None:
    for query in ['parse_config"', "NEAR(parse config)", "parse AND", "body_terms:parse", "*"]:
        index.search(query, mode="keyword")
    assert index.search('"parse_config" OR', mode="keyword")


def test_model_loads_once_per_process(indexed: tuple[Path, Path]) -> None:
    _root, index_dir = indexed
    with Searcher(index_dir) as one, Searcher(index_dir) as two:
        one.search("x", mode="semantic")
        two.search("y", mode="semantic")
        meta = one.store.meta()
    first = get_embedder(Path(meta["model_path"]), meta["model_id"], int(meta["max_seq_length"]))
    again = get_embedder(Path(meta["model_path"]), meta["model_id"], int(meta["max_seq_length"]))
    assert first is again


def test_queries_are_embedded_in_the_index_precision(
    indexed: tuple[Path, Path], tmp_path: Path
) -> None:
    # A bf16 index searched with fp32 query vectors would rank by slightly different geometry;
    # the searcher takes the precision recorded in the index, per index in one process.
    root, _ = indexed
    fp32_dir, bf16_dir = tmp_path / "fp32", tmp_path / "bf16"
    for folder, precision in ((fp32_dir, "fp32"), (bf16_dir, "bf16")):
        with Index(root, index_dir=folder, precision=precision) as index:
            index.build()
    with Searcher(fp32_dir) as fp32, Searcher(bf16_dir) as bf16:
        assert bf16.search("where are HTTP redirects followed", mode="semantic")
        assert fp32.search("where are HTTP redirects followed", mode="semantic")
        assert bf16._embedder().precision == "bf16"
        assert fp32._embedder().precision == "fp32"


def test_model_mismatch(index_copy: tuple[Path, Path]) -> None:
    _, index_dir = index_copy
    with Store(index_dir) as store, store.transaction():
        store.set_meta("model_id", "some-other-model-0123456789abcdef")
    with Searcher(index_dir) as searcher:
        assert searcher.search("parse_config", mode="keyword")  # needs no model
        with pytest.raises(ModelMismatchError, match="built with model some-other-model"):
            searcher.search("parse_config", mode="semantic")


def test_index_search_without_index(tmp_path: Path) -> None:
    with (
        Index(tmp_path, index_dir=tmp_path / "none") as index,
        pytest.raises(IndexNotFoundError, match="no index for"),
    ):
        index.search("x")


# ---- reading while writing ------------------------------------------------------------------------


def add_chunk(store: Store, embedder: coarch.Embedder, rel: str, source: str) -> None:
    """Commits one file with one chunk and its vector, without touching the FAISS file (as an
    indexer's checkpoint does)."""
    header = f"path: {rel}\n"
    digest = text_hash(header + source)
    vector = embedder.encode([header + source])[0].astype("<f4").tobytes()
    store.put_vectors([(digest, vector)])
    chunk = NewChunk(1, source.count("\n") + 1, "python", (), source, digest)
    store.put_file(rel, len(source), time.time_ns(), digest, "python", [chunk])


def test_reads_see_last_committed_state(
    index_copy: tuple[Path, Path], embedder: coarch.Embedder
) -> None:
    _, index_dir = index_copy
    source = "def tokenize_sql_statement(text):\n    return text.split(';')\n"
    query = "split an SQL script into statements"
    with Searcher(index_dir) as searcher, Store(index_dir) as writer:
        before = [h.path for h in searcher.search(query, k=3, mode="semantic")]
        with writer.transaction():
            add_chunk(writer, embedder, "sql/tokenize.py", source)
            # Uncommitted: invisible to the reader, and the reader is not blocked.
            assert [h.path for h in searcher.search(query, k=3, mode="semantic")] == before
            assert searcher.search("tokenize_sql_statement", mode="keyword") == []
        # Committed, but the FAISS file does not cover it yet: found from SQLite's vectors.
        for mode in ("semantic", "hybrid", "keyword"):
            hits = searcher.search(
                query if mode == "semantic" else "tokenize_sql_statement", k=3, mode=mode
            )
            assert hits[0].path == "sql/tokenize.py", mode
        # A file deleted after the FAISS file was written is never returned.
        with writer.transaction():
            writer.remove_file("net/http_client.py")
        for mode in ("semantic", "hybrid", "keyword"):
            hits = searcher.search("HTTP redirects", k=50, mode=mode)
            assert "net/http_client.py" not in {h.path for h in hits}


def test_missing_faiss_file_falls_back_to_sqlite(index_copy: tuple[Path, Path]) -> None:
    _, index_dir = index_copy
    (index_dir / "vectors.faiss").unlink()
    with Searcher(index_dir) as searcher:
        hits = searcher.search("where are HTTP redirects followed", k=3, mode="semantic")
        assert hits[0].path == "net/http_client.py"
        filtered = searcher.search("HTTP redirects", k=3, mode="semantic", lang="go")
        # Go only: the file's two chunks (its package line, its function), nothing else.
        assert [h.path for h in filtered] == ["mathx/fib.go", "mathx/fib.go"]


def test_a_vectors_file_renamed_in_before_its_checksum_is_committed_is_not_called_damaged(
    index_copy: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """vectors.sync renames its new file in place, then commits its checksum. A reader that
    searches between the two sees the old checksum beside the new file: it keeps the file it
    has open (still the one that checksum describes), warns of nothing, and takes the new file
    once its checksum is committed."""
    from coarch import vectors

    _, index_dir = index_copy
    newer = tmp_path / "newer"
    shutil.copytree(index_dir, newer)
    with Store(newer) as writer:  # the writer's new file: IVF, so other bytes than the flat one
        dim = int(writer.get_meta("dim") or 0)
        assert vectors.sync(writer, newer, dim, threshold=1, force=True).kind == "ivf"
        new_meta = {k: v for k, v in writer.meta().items() if k.startswith("faiss_")}
    query = "where are HTTP redirects followed"
    with Searcher(index_dir) as searcher:
        before = [(h.path, h.start_line) for h in searcher.search(query, k=3, mode="semantic")]
        os.replace(newer / "vectors.faiss", index_dir / "vectors.faiss")  # step 1: the rename
        with caplog.at_level("WARNING", logger="coarch"):
            between = [(h.path, h.start_line) for h in searcher.search(query, k=3, mode="semantic")]
            with Store(index_dir) as writer, writer.transaction():  # step 2: the commit
                for key, value in new_meta.items():
                    writer.set_meta(key, value)
            after = [(h.path, h.start_line) for h in searcher.search(query, k=3, mode="semantic")]
            assert vectors.freshness(searcher.store, index_dir) is None
    assert before[0][0] == "net/http_client.py"
    assert between == before and after == before
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def copy_python_files(dest: Path, count: int) -> int:
    """Copies `count` mid-sized modules of the standard library into `dest`."""
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    picked = 0
    for path in sorted((stdlib / "email").rglob("*.py")) + sorted((stdlib / "json").rglob("*.py")):
        if picked == count:
            break
        if 2_000 < path.stat().st_size < 40_000:
            target = dest / path.relative_to(stdlib)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            picked += 1
    return picked


def committed_chunks(index_dir: Path) -> int:
    """Chunks committed so far, read the way any reader would (0 before the schema exists)."""
    try:
        conn = sqlite3.connect(f"file:{index_dir / 'index.sqlite'}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_search_while_index_runs_in_another_process(tmp_path: Path) -> None:
    """A real `coarch index` run, caught after its first checkpoint: searched while it is
    frozen mid-run (SIGSTOP: lock held, maybe a transaction open) and while it runs on, then
    killed (its own tests cover resuming). Stopping it keeps the test short and deterministic
    however fast the machine embeds."""
    root, index_dir = tmp_path / "repo", tmp_path / "index"
    assert copy_python_files(root, 20) == 20
    env = {**os.environ, "COARCH_CHECKPOINT_FREQUENCY": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            str(root),
            "--index",
            str(index_dir),
            "-q",
            "--threads",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while committed_chunks(index_dir) == 0:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with Searcher(index_dir) as searcher:
                committed = searcher.store.chunk_count()
                for mode in ("hybrid", "semantic", "keyword"):
                    hits = searcher.search("parse an email message header", k=5, mode=mode)
                    assert hits, mode
                    assert all((root / h.path).is_file() for h in hits)
                assert proc.poll() is None  # still mid-run
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        # Running again: later searches see at least what was committed before.
        with Searcher(index_dir) as searcher:
            for _ in range(3):
                assert len(searcher.search("email header", k=5)) == 5
                assert searcher.store.chunk_count() >= committed
                time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


def test_hit_is_frozen_dataclass() -> None:
    hit = Hit("a.py", 1, 2, 0.5, "python", None, "x")
    assert hit.to_dict() == {
        "path": "a.py",
        "start_line": 1,
        "end_line": 2,
        "score": 0.5,
        "language": "python",
        "symbol": None,
        "snippet": "x",
    }
    with pytest.raises(AttributeError):
        hit.score = 1.0  # type: ignore[misc]
    assert np.isfinite(hit.score)


# ---- what the model reads, and --explain -----------------------------------------------------


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_chunks_and_queries_are_embedded_with_identifiers_as_words(index: Index) -> None:
    from coarch.chunking import chunk_header
    from coarch.identifiers import model_text

    with Searcher(index.index_dir) as searcher:
        embedder = searcher._embedder()
        row = next(
            r
            for r in searcher.store.chunks_by_ids(range(1, 200))
            if r.symbols and "HttpClient" in r.symbols[0]
        )
        stored = searcher.store.get_vectors(
            [
                searcher.store.conn.execute(
                    "SELECT text_hash FROM chunks WHERE id = ?", (row.id,)
                ).fetchone()[0]
            ]
        )
        vector = np.frombuffer(next(iter(stored.values())), dtype="<f4")
        as_words = vector_of(embedder, model_input_at(row.path, row))
        raw = chunk_header(row.path, row.symbol) + row.text
        raw_names = " ".join(s.rsplit(".", 1)[-1] for s in row.symbols)
        as_written = vector_of(embedder, ChunkInput(raw, raw_names))
        assert _cosine(vector, as_words) > 0.999
        assert _cosine(vector, as_words) - _cosine(vector, as_written) > 0.005
        # The query goes through the same form: its score is the cosine with that form.
        query = "HttpClient followRedirects"
        hit = next(
            h
            for h in searcher.search(query, k=50, mode="semantic")
            if (h.path, h.start_line) == (row.path, row.start_line)
        )
        q_words, q_written = embedder.encode([model_text(query), query])
        assert hit.score == pytest.approx(float(vector @ q_words), abs=1e-4)
        assert abs(hit.score - float(vector @ q_written)) > 1e-3


def test_explain_tells_ranks_scores_and_rules(index: Index) -> None:
    plain = index.search("where are HTTP redirects followed", k=5)
    hits = index.search("where are HTTP redirects followed", k=5, explain=True)
    assert [(h.path, h.start_line, h.score) for h in hits] == [
        (h.path, h.start_line, h.score) for h in plain
    ]
    assert all(h.explain is None for h in plain)
    for hit in hits:
        assert hit.explain is not None
        assert set(hit.explain) == {"semantic", "keyword", "fused", "rules", "definition_tier"}
        for retriever in ("semantic", "keyword"):
            got = hit.explain[retriever]
            assert got is None or (got["rank"] >= 1 and isinstance(got["score"], float))
        assert 0 < hit.explain["fused"] <= 1
        assert hit.explain["definition_tier"] is None
    top = hits[0].explain
    assert top is not None and top["semantic"]["rank"] <= 3
    semantic = index.search("where are HTTP redirects followed", k=3, mode="semantic", explain=True)
    assert [h.explain for h in semantic] == [
        {"semantic": {"rank": i, "score": pytest.approx(h.score, abs=1e-5)}}
        for i, h in enumerate(semantic, 1)
    ]
    ident = index.search("parse_config", k=2, explain=True)
    assert ident[0].explain is not None and ident[0].explain["definition_tier"] == 0


def test_cli_explain(indexed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, index_dir = indexed
    code, out, err = run_cli(
        [
            "search",
            "--index",
            str(index_dir),
            "-k",
            "2",
            "--explain",
            "where",
            "are",
            "redirects",
            "followed",
        ],
        capsys,
    )
    assert code == 0 and err == ""
    why = [line for line in out.splitlines() if line.startswith("    why: ")]
    assert len(why) == 2 and "semantic #" in why[0] and "fused " in why[0]
    code, out, _ = run_cli(
        ["search", "--index", str(index_dir), "-k", "2", "--explain", "--json", "redirects"], capsys
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and all(set(r) == HIT_FIELDS | {"explain"} for r in rows)
    assert {"semantic", "keyword", "fused", "rules"} <= set(rows[0]["explain"])


def test_searches_in_several_threads_answer_as_one_thread_does(
    indexed: tuple[Path, Path],
) -> None:
    # Every Searcher of the process embeds its queries in the one query thread while its own
    # thread ranks keywords: concurrent searches must not mix up their vectors.
    from concurrent.futures import ThreadPoolExecutor

    _root, index_dir = indexed
    queries = ["send a request over the socket", "parse_config", "HttpClient.send", "slugify"]

    def answers(query: str) -> list[tuple[str, int, int]]:
        with Searcher(index_dir) as searcher:
            return [(h.path, h.start_line, h.end_line) for h in searcher.search(query, k=5)]

    alone = {q: answers(q) for q in queries}
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(answers, queries * 3))
    assert together == [alone[q] for q in queries * 3]
    assert all(alone.values())


def test_a_forked_child_searches_with_its_own_query_thread(indexed: tuple[Path, Path]) -> None:
    # The parent's query thread is not copied by fork: the child starts its own, not waits
    # forever on the inherited executor.
    import multiprocessing

    _root, index_dir = indexed
    with Searcher(index_dir) as searcher:
        expected = [(h.path, h.start_line) for h in searcher.search("parse the config file")]
    queue: multiprocessing.Queue[list[tuple[str, int]]] = multiprocessing.get_context(
        "fork"
    ).Queue()
    child = multiprocessing.get_context("fork").Process(
        target=_search_into, args=(index_dir, "parse the config file", queue)
    )
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's search did not finish")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expected


def _search_into(index_dir: Path, query: str, queue: object) -> None:
    with Searcher(index_dir) as searcher:
        queue.put([(h.path, h.start_line) for h in searcher.search(query)])  # type: ignore[attr-defined]


def test_only_chunks_whose_symbol_relates_can_define_a_qualified_name() -> None:
    from coarch.definitions import could_define

    assert could_define("HttpClient.send", ("HttpClient.send",))
    assert could_define("HttpClient.send", ("HttpClient",))  # encloses a small member
    assert could_define("HttpClient.send", ("net.HttpClient.send.retry",))
    assert could_define("http_client.send", ("HttpClient.send",))  # case and _ ignored
    assert not could_define("HttpClient.send", ("Mailer.send",))
    assert not could_define("HttpClient.send", ())
    assert could_define("send", ())  # a bare name may be defined in any chunk's text

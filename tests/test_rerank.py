"""coarch.rerank: the code-aware rules over hybrid search's fused candidates, alone and in a real
search of a small tree (real model, FAISS and SQLite)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from coarch.index import Index
from coarch.rerank import (
    FILE_LIFT,
    SECONDARY_FACTOR,
    Candidate,
    asked_roles,
    rerank,
    secondary_role,
)


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("src/retry.py", None),
        ("tests/test_retry.py", "test"),
        ("pkg/test_retry.py", "test"),
        ("retry_test.go", "test"),
        ("web/retry.spec.ts", "test"),
        ("web/retry.test.js", "test"),
        ("src/main/java/RetryTest.java", "test"),
        ("examples/retry_demo.py", "example"),
        ("docs/retry.py", "doc"),
        ("README.md", "doc"),
        ("vendor/github.com/x/retry.go", "vendored"),
        ("third_party/retry.c", "vendored"),
        ("node_modules/retry/index.js", "vendored"),
        ("contest/latest.py", None),
        ("attestation.py", None),
    ],
)
def test_secondary_role(path: str, role: str | None) -> None:
    assert secondary_role(path) == role


def test_asked_roles() -> None:
    assert asked_roles("retry an upload") == frozenset()
    assert asked_roles("test for the retry loop") == {"test"}
    assert asked_roles("Example of a custom handler in the docs") == {"example", "doc"}


def cand(
    cid: int,
    path: str,
    start: int,
    end: int,
    score: float,
    symbols: tuple[str, ...] = (),
    language: str | None = None,
) -> Candidate:
    return Candidate(cid, path, start, end, symbols, score, language)


def test_secondary_code_goes_below_source_unless_asked() -> None:
    def run(query: str) -> list[int]:
        got = rerank(
            query, [cand(1, "tests/test_retry.py", 1, 9, 0.9), cand(2, "src/retry.py", 1, 9, 0.8)]
        )
        return [c.id for c in got]

    assert run("retry an upload with backoff") == [2, 1]
    assert run("test of the upload retry") == [1, 2]
    demoted = rerank("retry", [cand(1, "tests/test_retry.py", 1, 9, 0.9)])[0]
    assert demoted.score == pytest.approx(0.9 * SECONDARY_FACTOR)
    assert demoted.rules == {"secondary:test": pytest.approx(0.9 * SECONDARY_FACTOR - 0.9)}


def test_a_files_definitions_come_before_its_chunks_that_define_nothing() -> None:
    # In languages whose definitions the chunker names, a module's imports (no symbol) that
    # outscore its function trade places with it; the other file keeps its place.
    for language in ("python", "javascript", "c", "java"):
        got = rerank(
            "flatten a nested list",
            [
                cand(1, "a.py", 1, 3, 0.9, (), language),
                cand(2, "o.py", 1, 9, 0.8, ("other",), language),
                cand(3, "a.py", 5, 20, 0.6, ("flatten_deep",), language),
            ],
        )
        assert [c.id for c in got] == [3, 2, 1], language
        assert got[0].score == pytest.approx(0.9) and got[2].score == pytest.approx(0.6)
        assert got[0].rules == {"definitions_first": pytest.approx(0.3)}
        assert got[2].rules == {"definitions_first": pytest.approx(-0.3)}
    # A file found only through a chunk that defines nothing is not pushed down.
    alone = rerank(
        "q",
        [cand(1, "a.py", 1, 3, 0.9, (), "python"), cand(2, "b.py", 5, 20, 0.6, ("f",), "python")],
    )
    assert [c.id for c in alone] == [1, 2] and not alone[0].rules
    # Where chunks never carry a symbol (no grammar, or the language unknown) nothing changes.
    for language in ("plaintext", None):
        got = rerank(
            "q",
            [
                cand(1, "a.cfg", 1, 3, 0.9, (), language),
                cand(2, "a.cfg", 5, 20, 0.6, ("x",), language),
            ],
        )
        assert [c.id for c in got] == [1, 2] and not got[0].rules


def test_a_file_with_several_strong_chunks_is_lifted_when_asked() -> None:
    def run(lift: float) -> list[Candidate]:
        return rerank(
            "q",
            [
                cand(1, "a.py", 1, 5, 0.50),
                cand(2, "b.py", 1, 5, 0.48),
                cand(3, "b.py", 20, 25, 0.40),
            ],
            file_lift=lift,
        )

    got = run(0.1)
    assert [c.id for c in got] == [2, 1, 3]
    assert got[0].score == pytest.approx(0.48 + 0.1 * 0.40)
    assert got[0].rules["file_lift"] == pytest.approx(0.1 * 0.40)
    assert "file_lift" not in got[1].rules  # alone in its file: unchanged
    # Off by default (it lost on the evaluation): the fused order stays.
    assert FILE_LIFT == 0.0
    assert [c.id for c in run(FILE_LIFT)] == [1, 2, 3]


def test_pieces_of_one_definition_are_shown_once() -> None:
    long_def = ("Parser.parse",)
    got = rerank(
        "q",
        [
            cand(1, "p.py", 10, 40, 0.9, long_def),
            cand(2, "p.py", 41, 70, 0.8, long_def),  # the next piece of the same function
            cand(3, "q.py", 1, 9, 0.7),
            cand(4, "p.py", 80, 90, 0.6, long_def),  # not adjacent: another place
            cand(5, "p.py", 71, 79, 0.5, ("Parser.other",)),
        ],
    )
    assert [c.id for c in got] == [1, 3, 4, 5]


# One function, once as the source and once copied into the tests' helpers; 30 unrelated
# modules give the retrievers' lists their usual depth.
FUNCTION = '''
def send_with_retries(client, blob, attempts=5):
    """Sends a blob, retrying failed uploads with exponential backoff."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            return client.put(blob)
        except ConnectionError:
            time.sleep(delay)
            delay *= 2
    raise RuntimeError("upload failed")
'''


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    base = tmp_path_factory.mktemp("rerank")
    root = base / "repo"
    files = {"vault/transfer.py": FUNCTION.lstrip(), "tests/helpers.py": FUNCTION.lstrip()}
    for i in range(30):
        files[f"misc/m{i}.py"] = f"def helper_{i}(items):\n    return sorted(items)[{i}:]\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    with Index(root, index_dir=base / "index") as opened:
        opened.build()
        yield opened


def test_search_puts_source_above_its_test_copy(index: Index) -> None:
    hits = index.search("retry failed uploads with exponential backoff", k=2, explain=True)
    assert [h.path for h in hits] == ["vault/transfer.py", "tests/helpers.py"]
    assert hits[1].explain is not None and "secondary:test" in hits[1].explain["rules"]
    asked = index.search("test helper that retries failed uploads", k=2)
    assert asked[0].path == "tests/helpers.py"


def test_search_shows_one_long_definition_once(tmp_path: Path) -> None:
    # A long function whose lines 141..175 alone match the query: they span several pieces.
    lines = [f"    total_{i} = total_{i - 1} + {i}" if i else "    total_0 = 0" for i in range(300)]
    for i in range(140, 175):
        lines[i] = f"    crc_{i} = zlib.crc32(chunk_{i})  # verify the checksum of each chunk"
    root = tmp_path / "repo"
    root.mkdir()
    source = "def summarise(chunks):\n" + "\n".join(lines) + "\n    return total_299\n"
    (root / "records.py").write_text(source, encoding="utf-8")
    (root / "other.py").write_text("def unrelated():\n    return 1\n", encoding="utf-8")
    with Index(root, index_dir=tmp_path / "index") as index:
        index.build()
        hits = index.search("verify the checksum of each chunk", k=5)
        semantic = index.search("verify the checksum of each chunk", k=5, mode="semantic")
    # The retriever alone finds touching pieces of the function...
    touching = sorted((h.start_line, h.end_line) for h in semantic if h.path == "records.py")
    assert any(b[0] <= a[1] + 1 for a, b in itertools.pairwise(touching))
    # ... hybrid search shows the best of them, and no piece touching it.
    assert hits[0].path == "records.py" and hits[0].start_line <= 175
    pieces = sorted((h.start_line, h.end_line) for h in hits if h.path == "records.py")
    for (_, end), (start, _) in itertools.pairwise(pieces):
        assert start > end + 1, pieces

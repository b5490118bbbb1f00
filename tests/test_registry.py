"""Every index coarch knows on this machine (coarch.registry), `search --all` over them, and
`coarch index` of several folders in one run (PATH... and --from FILE)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from indexing_helpers import SMALL_FILES, stdlib_tree

import coarch
from coarch.cli import main
from coarch.location import default_index_dir
from coarch.registry import known_indexes, registry_path, search_all


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("COARCH_INDEX_DIR", raising=False)
    return tmp_path / "cache"


@pytest.fixture()
def two_indexes(tmp_path: Path, cache: Path) -> tuple[Path, Path, Path]:
    """A tree indexed in its default place, another in a folder of its own choosing."""
    one = stdlib_tree(tmp_path / "one", ("bisect.py",))
    two = stdlib_tree(tmp_path / "two", ("colorsys.py",))
    elsewhere = tmp_path / "elsewhere"
    assert main(["index", "-q", str(one)]) == 0
    assert main(["index", "-q", "--index", str(elsewhere), str(two)]) == 0
    return one, two, elsewhere


def test_known_indexes_are_the_default_ones_and_those_listed(
    two_indexes: tuple[Path, Path, Path], cache: Path
) -> None:
    one, _, elsewhere = two_indexes
    assert known_indexes() == sorted([default_index_dir(one), elsewhere])
    # Only the index outside the cache folder needs the list.
    assert registry_path() == cache.parent / "state" / "coarch" / "indexes.txt"
    assert registry_path().read_text().splitlines() == [str(elsewhere)]
    shutil.rmtree(elsewhere)
    assert known_indexes() == [default_index_dir(one)]


def test_search_all_merges_the_hits_of_every_index(two_indexes: tuple[Path, Path, Path]) -> None:
    one, two, _ = two_indexes
    hits = search_all("insort binary search into a sorted list", k=20, mode="semantic")
    roots = {Path(h.path).parents[1] for h in hits}  # <root>/lib/<file>
    assert roots == {one, two}
    assert hits[0].path == str(one / "lib/bisect.py")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hybrid = search_all("rgb_to_hsv", k=3)
    assert hybrid[0].path == str(two / "lib/colorsys.py")
    assert coarch.search_all is search_all


def test_cli_search_all(
    two_indexes: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one, two, _ = two_indexes
    assert (
        main(["search", "--all", "--lines", "0", "-k", "20", "convert", "colours", "insort"]) == 0
    )
    out = capsys.readouterr().out
    assert str(one / "lib/bisect.py") + ":" in out and str(two / "lib/colorsys.py") + ":" in out
    assert main(["search", "--all", "--index", str(one), "x"]) == 2
    assert (
        "coarch: error: --all searches every index with its own model: drop --index"
        in capsys.readouterr().err
    )


def test_cli_search_all_without_any_index(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--all", "anything"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "coarch: error: no index on this machine",
        "coarch: hint: run `coarch index PATH` first",
    ]


def test_index_several_folders_and_from_file(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trees = [stdlib_tree(tmp_path / name, (f,)) for name, f in zip(("a", "b", "c"), SMALL_FILES)]
    listing = tmp_path / "repos.txt"
    listing.write_text(f"# the rest\n{trees[1]}\n\n{trees[2]}\n")
    assert main(["index", "--json", str(trees[0]), "--from", str(listing)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    for tree in trees:
        assert (default_index_dir(tree) / "index.sqlite").is_file()
    assert set(known_indexes()) == {default_index_dir(t) for t in trees}


def test_index_several_folders_into_one_index_is_refused(
    tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(["index", "--index", str(tmp_path / "idx"), str(a), str(b)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "coarch: error: --index names one index folder, but 2 folders were given",
        "coarch: hint: drop --index: each folder gets its own index",
    ]
    assert main(["index", "--from", str(tmp_path / "missing.txt")]) == 2
    assert "coarch: error: cannot read --from" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()

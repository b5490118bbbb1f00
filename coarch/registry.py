"""Every index coarch knows on this machine, and one search over all of them.

The indexes in their default place (one folder per repository under the user cache folder) are
found by looking there; those built elsewhere (`--index DIR`, $COARCH_INDEX_DIR) are listed in
`<user state folder>/coarch/indexes.txt` ($XDG_STATE_HOME, else ~/.local/state), one folder per
line, which every completed build elsewhere adds itself to: state, not cache, so that clearing
the cache does not forget them. Folders that no longer hold an index are dropped from the list
when it is next written.

    >>> hits = coarch.search_all("where do we retry failed uploads")
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from coarch.errors import CorruptIndexError, IndexNotFoundError, ModelError, ModelMismatchError
from coarch.location import DB_FILE, REBUILD_SUFFIX, cache_root

if TYPE_CHECKING:
    from coarch.hit import Hit

log = logging.getLogger(__name__)

REGISTRY_FILE = "indexes.txt"


def registry_path() -> Path:
    return Path(platformdirs.user_state_dir("coarch", appauthor=False)) / REGISTRY_FILE


def _holds_index(folder: Path) -> bool:
    return (folder / DB_FILE).is_file() and not folder.name.endswith(REBUILD_SUFFIX)


def _listed() -> list[Path]:
    try:
        text = registry_path().read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    return [Path(line) for line in text.splitlines() if line.strip()]


def remember(index_dir: Path) -> None:
    """Adds `index_dir` to the list (and drops the folders that no longer hold an index). The
    list is rewritten whole, atomically, under a lock: concurrent builds each keep their line.
    A list that cannot be written costs only `--all` finding this index; it is logged, not
    raised. An index in its default place is found without the list."""
    if index_dir.absolute().parent == cache_root().absolute():
        return
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(REGISTRY_FILE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = {str(p): p for p in _listed() if _holds_index(p)}
            entries[str(index_dir.absolute())] = index_dir.absolute()
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".indexes-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write("".join(f"{p}\n" for p in sorted(entries)))
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not record %s in %s: %s", index_dir, path, exc.strerror or exc)


def known_indexes() -> list[Path]:
    """Index folders on this machine: the default ones under the cache folder and those in
    the list, each once, sorted; only folders that hold an index."""
    found: dict[str, Path] = {}
    root = cache_root()
    candidates = list(_listed())
    if root.is_dir():
        candidates += [p for p in root.iterdir() if p.is_dir()]
    for folder in candidates:
        if _holds_index(folder):
            found.setdefault(os.path.realpath(folder), folder)
    return sorted(found.values())


def search_all(
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    lang: str | Sequence[str] | None = None,
    path: str | Sequence[str] | None = None,
    indexes: Sequence[Path] | None = None,
) -> list[Hit]:
    """The `k` best hits for `query` across every known index (or `indexes`), best first; each
    hit's `path` is absolute (its index's root joined with the path in it). An index that
    cannot be searched (damaged, or built with a model that is gone) is skipped with a
    warning. Scores are compared across indexes where they mean the same thing: cosine in
    `semantic` mode; in `hybrid` and `keyword` modes each index's scores are relative to its
    own best, so the lists are interleaved by rank (each index's first, then each one's
    second...), by score within a rank."""
    from coarch.search import Searcher

    ranked: list[tuple[int, float, Hit]] = []
    for folder in known_indexes() if indexes is None else indexes:
        try:
            with Searcher(folder) as searcher:
                root = Path(searcher.store.get_meta("root") or folder)
                hits = searcher.search(query, k=k, mode=mode, lang=lang, path=path)
        except (CorruptIndexError, IndexNotFoundError, ModelError, ModelMismatchError) as exc:
            log.warning("skipping the index in %s: %s", folder, exc)
            continue
        for rank, hit in enumerate(hits):
            ranked.append((rank, -hit.score, dataclasses.replace(hit, path=str(root / hit.path))))
    if mode == "semantic":
        ranked.sort(key=lambda r: (r[1], r[0]))
    else:
        ranked.sort(key=lambda r: (r[0], r[1]))
    return [hit for _, _, hit in ranked[:k]]

"""The public `coarch.Index`: build and inspect the index of one repository.

    >>> with coarch.Index("/path/to/repo") as index:
    ...     summary = index.build()
    ...     index.status()["chunks"]
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coarch import vectors as faiss_file
from coarch.discovery import check_root
from coarch.errors import CorruptIndexError, IndexNotFoundError
from coarch.freshness import Freshness, discovery_options, ensure_fresh, pending_changes
from coarch.indexer import Indexer, IndexOptions, IndexSummary
from coarch.location import DB_FILE, find_indexed_root, resolve_index_dir
from coarch.locking import IndexLock, holder
from coarch.progress import ProgressCallback
from coarch.store import Store, remove_index_files

if TYPE_CHECKING:
    from coarch.embedder import Embedder
    from coarch.search import Hit, Searcher

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

log = logging.getLogger(__name__)


class Index:
    """The index of the repository or folder at `path`.

    `path` None: the nearest folder from the current directory upwards that has an index
    (else the current directory). `index_dir` (else $COARCH_INDEX_DIR, else a folder under the
    user cache folder keyed by the repository's real path) is where the index lives. The other
    keywords are the settings of `build` (see IndexOptions)."""

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 index_dir: str | os.PathLike[str] | None = None, **options: Any) -> None:
        self.options = IndexOptions(**options)
        if path is not None:
            self.root = Path(os.path.realpath(Path(path).expanduser()))
        else:
            found = None
            if index_dir is None and not os.environ.get("COARCH_INDEX_DIR"):
                found = find_indexed_root(Path.cwd())
            self.root = found or Path(os.path.realpath(Path.cwd()))
        self.index_dir = resolve_index_dir(self.root, index_dir)
        if path is None and (self.index_dir / DB_FILE).is_file():
            with Store(self.index_dir, readonly=True) as store:
                recorded = store.get_meta("root")
            if recorded:
                self.root = Path(recorded)
        self._store: Store | None = None
        self._searcher: Searcher | None = None
        # How fresh the index was at the last search (set by search).
        self.freshness = Freshness("unknown", reason="no search yet")

    # ---- building ----------------------------------------------------------------------------

    def build(self, progress: ProgressCallback | None = None, *, full: bool | None = None,
              stop: threading.Event | None = None, settings: IndexOptions | None = None,
              embedder: Embedder | None = None) -> IndexSummary:
        """Indexes the folder (incrementally unless `full`). Raises UsageError for a bad path,
        IndexLockedError when another process is indexing into the same index,
        IndexingInterrupted (exit code 130) after Ctrl-C or once `stop` is set, having
        committed the work in hand. `settings` replaces the Index's own for this run;
        `embedder`, a loaded model, is used when it is the index's model and precision."""
        root = check_root(self.root)
        options = settings or self.options
        if full is not None:
            options = IndexOptions(**{**options.__dict__, "full": full})
        self._close_store()
        lock = IndexLock(self.index_dir)
        with lock:
            store = self._open_for_writing()
            try:
                return Indexer(root, self.index_dir, store, options, progress, stop,
                               embedder).run()
            finally:
                store.close()

    def _open_for_writing(self) -> Store:
        """The store, or a fresh one in place of an unreadable file (the index is derived data:
        rebuilding it loses nothing but time)."""
        try:
            return Store(self.index_dir)
        except CorruptIndexError as exc:
            log.warning("%s; rebuilding the index from scratch", exc)
            remove_index_files(self.index_dir)
            return Store(self.index_dir)

    # ---- reading -----------------------------------------------------------------------------

    def open_store(self) -> Store:
        """A read-only view of the committed index (shared; closed by close())."""
        if self._store is None:
            if not (self.index_dir / DB_FILE).is_file():
                raise IndexNotFoundError(f"no index for {self.root}",
                                         hint=f"run `coarch index {self.root}` first")
            self._store = Store(self.index_dir, readonly=True)
        return self._store

    def status(self, *, pending: bool = True, memory: bool = False) -> dict[str, Any]:
        """Location, counts, model, last run, pending work, size on disk, FAISS state and, with
        `memory`, the MemoryManager's readings."""
        store = self.open_store()
        meta = store.meta()
        counts = store.counts()
        out: dict[str, Any] = {
            "root": meta.get("root", str(self.root)),
            "index_dir": str(self.index_dir),
            **counts,
            "model_id": meta.get("model_id"),
            "model_path": meta.get("model_path"),
            "dim": int(meta["dim"]) if meta.get("dim") else None,
            "max_seq_length": int(meta["max_seq_length"]) if meta.get("max_seq_length")
            else None,
            "precision": store.precision(),
            "precision_reason": meta.get("precision_reason"),
            "size_bytes": _folder_size(self.index_dir),
            "locked_by": holder(self.index_dir),
            "last_run": _last_run(meta),
            "faiss": {
                "state": faiss_file.freshness(store, self.index_dir) or "fresh",
                "kind": meta.get("faiss_kind"),
                "chunks": int(meta.get("faiss_chunk_count", "0") or 0),
            },
        }
        if out["last_run"]["state"] == "running" and out["locked_by"] is None:
            out["last_run"]["state"] = "stopped before finishing (killed?)"
        if pending:
            out["pending"] = self._pending(store)
        if memory:
            out["memory"] = memory_readings(self.options)
        return out

    def _pending(self, store: Store) -> dict[str, int] | None:
        """Files new, changed (by size or mtime) or deleted since the index was built."""
        options = discovery_options(store, self.index_dir, self.options.max_file_size,
                                    self.options.use_git)
        pending = pending_changes(Path(store.get_meta("root") or self.root), store, options)
        if pending is None:  # the folder is gone: nothing to compare with
            return None
        return {"new": pending.new, "changed": pending.changed, "deleted": pending.deleted}

    # ---- searching (coarch.search) -----------------------------------------------------------

    def search(self, query: str, k: int = 10, mode: str = "hybrid",
               lang: str | Sequence[str] | None = None,
               path: str | Sequence[str] | None = None, *, refresh: bool = True,
               refresh_max_files: int | None = None) -> list[Hit]:
        """The `k` best chunks for `query`, best first, as `coarch.Hit`s. `mode` is "hybrid"
        (default), "semantic" or "keyword"; `lang` keeps those languages, `path` keeps paths
        matching its globs (.gitignore rules, "!glob" excludes). Reads the last committed state,
        so it works while another process indexes. See coarch.search.

        With `refresh`, files changed since the index was built are re-indexed first when
        they are at most `refresh_max_files` (default: $COARCH_REFRESH_MAX_FILES, else 20);
        `self.freshness` then says how fresh the answer is (see coarch.freshness)."""
        from coarch.search import Searcher

        if not (self.index_dir / DB_FILE).is_file():
            raise IndexNotFoundError(f"no index for {self.root}",
                                     hint=f"run `coarch index {self.root}` first")
        self.freshness = (ensure_fresh(self, refresh_max_files) if refresh
                          else Freshness("unknown", reason="not checked"))
        if self._searcher is None:
            self._searcher = Searcher(self.index_dir, model=self.options.model)
        return self._searcher.search(query, k=k, mode=mode, lang=lang, path=path)

    # ---- lifetime ----------------------------------------------------------------------------

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def close(self) -> None:
        self._close_store()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index(root={str(self.root)!r}, index_dir={str(self.index_dir)!r})"


def memory_readings(options: IndexOptions) -> dict[str, Any] | None:
    """The MemoryManager's readings for these settings, or None without the memory module."""
    from coarch.indexer import _memory_manager

    manager = _memory_manager(options)
    if manager is None:
        return None
    stats = dict(manager.stats())
    pressure = stats.get("pressure")
    if pressure is not None and hasattr(pressure, "name"):
        stats["pressure"] = pressure.name.lower()
    return stats


def _last_run(meta: dict[str, str]) -> dict[str, Any]:
    def num(key: str) -> float | None:
        try:
            return float(meta[key])
        except (KeyError, ValueError):
            return None

    started = num("last_run_started")
    return {
        "state": meta.get("last_run_state", "never"),
        "started": started,
        "started_iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
        if started else None,
        "seconds": num("last_run_seconds"),
        "files_indexed": int(num("last_run_files_indexed") or 0),
        "chunks_embedded": int(num("last_run_chunks_embedded") or 0),
    }


def _folder_size(folder: Path) -> int:
    total = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total

"""The public `coarch.Index`: build and inspect the index of one repository.

>>> with coarch.Index("/path/to/repo") as index:
...     summary = index.build()
...     index.status()["chunks"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coarch import vectors as faiss_file
from coarch.discovery import check_root
from coarch.errors import CoarchError, CorruptIndexError, IndexNotFoundError
from coarch.freshness import (
    ChangeGate,
    Freshness,
    discovery_options,
    ensure_fresh,
    pending_changes,
)
from coarch.indexer import Indexer, IndexOptions, IndexSummary
from coarch.location import (
    DB_FILE,
    INDEX_DIR_ENV,
    check_index_folder,
    exchange_folders,
    find_indexed_root,
    rebuild_dir,
    resolve_index_dir,
)
from coarch.locking import IndexLock, holder
from coarch.progress import ProgressCallback, pressure_name
from coarch.registry import remember
from coarch.run_plan import LoadedModel, RunPlan, load_model, plan_run
from coarch.store import Store, corruption_reported, move_aside

if TYPE_CHECKING:
    from coarch.embedder import Embedder
    from coarch.hit import Hit
    from coarch.search import Searcher

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

log = logging.getLogger(__name__)

REBUILD_KEY = "rebuild_reason"  # meta of a rebuild folder until its rebuild completes


class Index:
    """The index of the repository or folder at `path`.

    `path` None: the nearest folder from the current directory upwards that has an index
    (else the current directory). `index_dir` (else $COARCH_INDEX_DIR, else a folder under the
    user cache folder keyed by the repository's real path) is where the index lives. The other
    keywords are the settings of `build` (see IndexOptions)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.options = IndexOptions(**options)
        if path is not None:
            self.root = Path(os.path.realpath(Path(path).expanduser()))
        else:
            found = None
            if index_dir is None and not os.environ.get(INDEX_DIR_ENV):
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
        self._gate: ChangeGate | None = None  # set by follow_changes
        self._follow_failed = False
        self._searched = False  # a refreshing search was made: the next one follows changes

    # ---- building ----------------------------------------------------------------------------

    def build(
        self,
        progress: ProgressCallback | None = None,
        *,
        full: bool | None = None,
        stop: threading.Event | None = None,
        settings: IndexOptions | None = None,
        embedder: Embedder | None = None,
    ) -> IndexSummary:
        """Indexes the folder (incrementally unless `full`). Raises UsageError for a bad path or
        an index folder holding files coarch did not create, IndexLockedError when another
        process is indexing into the same index, CorruptIndexError for a damaged index (which
        `full` rebuilds), IndexingInterrupted (exit code 130) after Ctrl-C or once `stop` is set,
        having committed the work in hand. Model, memory and precision settings are checked
        before anything is written; a rebuild is built beside the index and swapped in when
        complete, so a failed or killed rebuild leaves the index as it was. `settings` replaces
        the Index's own for this run; `embedder`, a loaded model, is used when it is the model
        and precision the run needs. A completed build is recorded in the list of indexes
        `coarch.search_all` searches (coarch.registry)."""
        summary = self._build(progress, full, stop, settings, embedder)
        remember(self.index_dir)
        return summary

    def _build(
        self,
        progress: ProgressCallback | None,
        full: bool | None,
        stop: threading.Event | None,
        settings: IndexOptions | None,
        embedder: Embedder | None,
    ) -> IndexSummary:
        root = check_root(self.root)
        options = settings or self.options
        if full is not None:
            options = IndexOptions(**{**options.__dict__, "full": full})
        self._close_store()
        check_index_folder(self.index_dir)
        with corruption_reported(self.index_dir), IndexLock(self.index_dir):
            store = self._open_for_writing(options.full)
            try:
                plan = plan_run(store, options)
                lent = _lent_model(embedder, plan)
                resumed = self._leftover_rebuild(plan)
                if plan.rebuild is None and resumed is None:
                    return self._run(
                        self.index_dir, store, root, options, plan, lent, progress, stop
                    )
                if resumed is not None and plan.rebuild is None:
                    plan = dataclasses.replace(plan, rebuild=f"{resumed} (resumed)")
                # A bad model fails here, before anything is written.
                model = lent or load_model(plan, options)
                if _is_empty(store):  # nothing to keep: rebuild in place
                    shutil.rmtree(rebuild_dir(self.index_dir), ignore_errors=True)
                    with store.transaction():
                        store.reset(keep_vectors=False)
                        for key in ("model_id", "dim", "max_seq_length", "precision"):
                            store.set_meta(key, None)
                    return self._run(
                        self.index_dir, store, root, options, plan, model, progress, stop
                    )
            except BaseException:
                store.close()
                raise
            store.close()  # the old index stays as it is until the swap
            return self._rebuild_beside(root, options, plan, model, progress, stop)

    def _run(
        self,
        folder: Path,
        store: Store,
        root: Path,
        options: IndexOptions,
        plan: RunPlan,
        model: LoadedModel | None,
        progress: ProgressCallback | None,
        stop: threading.Event | None,
    ) -> IndexSummary:
        """One Indexer run into `store` in `folder` (the index's own, or its rebuild folder);
        the summary names the index's folder either way."""
        return Indexer(
            root,
            folder,
            store,
            options,
            progress,
            plan=plan,
            model=model,
            exclude=self._excluded(),
            shown_dir=self.index_dir,
            stop=stop,
        ).run()

    def _excluded(self) -> tuple[str, ...]:
        return (str(self.index_dir), str(rebuild_dir(self.index_dir)))

    def _open_for_writing(self, full: bool) -> Store:
        """The store, checked. A file SQLite cannot open at all is moved aside and replaced by
        a fresh store (the index is derived data: rebuilding loses nothing but time). A file
        that opens but is damaged (PRAGMA quick_check, run after a run that did not finish
        cleanly, and before --full) raises CorruptIndexError, or with `full` is moved aside."""
        try:
            store = Store(self.index_dir)
        except CorruptIndexError as exc:
            kept = move_aside(self.index_dir)
            log.warning(
                "%s; rebuilding the index from scratch (the damaged file is kept as %s)", exc, kept
            )
            return Store(self.index_dir)
        state = store.get_meta("last_run_state")
        if not full and state in (None, "ok"):
            return store
        problem = store.quick_check()
        if problem is None:
            return store
        store.close()
        if not full:
            raise CorruptIndexError(
                f"index database {store.path} is damaged: {problem}",
                hint=f"`coarch index --full {self.root}` rebuilds it",
            )
        kept = move_aside(self.index_dir)
        log.warning(
            "index database %s is damaged (%s); rebuilding the index from scratch"
            " (the damaged file is kept as %s)",
            store.path,
            problem,
            kept,
        )
        return Store(self.index_dir)

    def _leftover_rebuild(self, plan: RunPlan) -> str | None:
        """The reason of an unfinished rebuild (killed or interrupted) that this run can go on
        with: same model and precision. Any other leftover is removed."""
        folder = rebuild_dir(self.index_dir)
        if not folder.exists():
            return None
        check_index_folder(folder)  # never remove files coarch did not write
        reason = None
        with contextlib.suppress(CoarchError), Store(folder, readonly=True) as old:
            meta = old.meta()
            if (
                meta.get(REBUILD_KEY)
                and meta.get("model_id") == plan.model_id
                and meta.get("precision") == plan.precision
            ):
                reason = meta[REBUILD_KEY]
        if reason is None:
            log.info("removing %s (an unfinished rebuild of another model or precision)", folder)
            shutil.rmtree(folder)
        return reason

    def _rebuild_beside(
        self,
        root: Path,
        options: IndexOptions,
        plan: RunPlan,
        model: LoadedModel,
        progress: ProgressCallback | None,
        stop: threading.Event | None,
    ) -> IndexSummary:
        """Builds the whole index in the sibling rebuild folder, then swaps the two folders
        (atomically where the OS can) and removes the old one. The caller holds the index's
        lock; the rebuild folder's lock is held too, so that after the swap a second writer is
        still refused. Readers holding the old files keep reading them."""
        folder = rebuild_dir(self.index_dir)
        with IndexLock(folder):
            store = Store(folder)
            try:
                with store.transaction():
                    store.set_meta(REBUILD_KEY, plan.rebuild)
                summary = self._run(folder, store, root, options, plan, model, progress, stop)
                with store.transaction():
                    store.set_meta(REBUILD_KEY, None)  # complete: no longer a leftover
            finally:
                store.close()
            exchange_folders(folder, self.index_dir)
            log.info("rebuilt index swapped in; removing the old one")
            shutil.rmtree(folder, ignore_errors=True)
        return summary

    # ---- reading -----------------------------------------------------------------------------

    def open_store(self) -> Store:
        """A read-only view of the committed index (shared; closed by close())."""
        if self._store is None:
            if not (self.index_dir / DB_FILE).is_file():
                raise IndexNotFoundError(
                    f"no index for {self.root}", hint=f"run `coarch index {self.root}` first"
                )
            self._store = Store(self.index_dir, readonly=True)
        return self._store

    def status(self, *, pending: bool = True, memory: bool = False) -> dict[str, Any]:
        """Location, counts, model, last run, pending work, size on disk, FAISS state and, with
        `memory`, the MemoryManager's readings."""
        with corruption_reported(self.index_dir):
            return self._status(self.open_store(), pending=pending, memory=memory)

    def _status(self, store: Store, *, pending: bool, memory: bool) -> dict[str, Any]:
        meta = store.meta()
        if meta.get("last_run_state") not in (None, "ok"):  # the run before may have died
            problem = store.quick_check()
            if problem is not None:
                raise CorruptIndexError(
                    f"index database {store.path} is damaged: {problem}",
                    hint=f"`coarch index --full {meta.get('root') or 'PATH'}` rebuilds it",
                )
        counts = store.counts()
        out: dict[str, Any] = {
            "root": meta.get("root", str(self.root)),
            "index_dir": str(self.index_dir),
            **counts,
            "model_id": meta.get("model_id"),
            "model_path": meta.get("model_path"),
            "dim": int(meta["dim"]) if meta.get("dim") else None,
            "max_seq_length": int(meta["max_seq_length"]) if meta.get("max_seq_length") else None,
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
        options = discovery_options(
            store, self.index_dir, self.options.max_file_size, self.options.use_git
        )
        pending = pending_changes(Path(store.get_meta("root") or self.root), store, options)
        if pending is None:  # the folder is gone: nothing to compare with
            return None
        return {"new": pending.new, "changed": pending.changed, "deleted": pending.deleted}

    # ---- searching (coarch.search) -----------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "hybrid",
        lang: str | Sequence[str] | None = None,
        path: str | Sequence[str] | None = None,
        explain: bool = False,
        *,
        refresh: bool = True,
        refresh_max_files: int | None = None,
    ) -> list[Hit]:
        """The `k` best chunks for `query`, best first, as `coarch.Hit`s. `mode` is "hybrid"
        (default), "semantic" or "keyword"; `lang` keeps those languages, `path` keeps paths
        matching its globs (.gitignore rules, "!glob" excludes); `explain` fills Hit.explain.
        Reads the last committed state, so it works while another process indexes. See
        coarch.search.

        With `refresh`, files changed since the index was built are re-indexed first when
        they are at most `refresh_max_files` (default: $COARCH_REFRESH_MAX_FILES, else 20);
        `self.freshness` then says how fresh the answer is (see coarch.freshness). From its
        second such search on, the Index follows changes (follow_changes) until close()."""
        from coarch.search import Searcher

        if not (self.index_dir / DB_FILE).is_file():
            raise IndexNotFoundError(
                f"no index for {self.root}", hint=f"run `coarch index {self.root}` first"
            )
        if refresh:
            # One search (a `coarch search` process) never pays for the watches.
            if self._searched:
                self.follow_changes()
            self._searched = True
        self.freshness = (
            ensure_fresh(self, refresh_max_files, self._gate)
            if refresh
            else Freshness("unknown", reason="not checked")
        )
        if self._searcher is None:
            self._searcher = Searcher(self.index_dir, model=self.options.model)
        return self._searcher.search(query, k=k, mode=mode, lang=lang, path=path, explain=explain)

    def follow_changes(self) -> bool:
        """Lets later searches of this (long-lived) Index skip listing the files while file
        notifications show nothing changed since a check found the index fresh (see
        coarch.freshness). False where notifications are unavailable: searches then list the
        files every time, as without it. Watches are held until close()."""
        if self._gate is None and not self._follow_failed:
            from coarch.notify import ChangeNotifier

            notifier = ChangeNotifier(self.root, self._excluded())
            if notifier.start():
                self._gate = ChangeGate(notifier)
            else:
                self._follow_failed = True
        return self._gate is not None

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
        if self._gate is not None:
            self._gate.close()
            self._gate = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index(root={str(self.root)!r}, index_dir={str(self.index_dir)!r})"


def _lent_model(embedder: Embedder | None, plan: RunPlan) -> LoadedModel | None:
    """A loaded model lent by a long-lived caller (coarch watch, the MCP server), when it is the
    model and precision the run needs: it saves the model load (about 1 s)."""
    if (
        embedder is None
        or embedder.model_id != plan.model_id
        or embedder.precision != plan.precision
    ):
        return None
    return LoadedModel(embedder, embedder.memory)


def memory_readings(options: IndexOptions) -> dict[str, Any]:
    """The MemoryManager's readings for these settings."""
    from coarch.memory import manager_for

    stats = dict(manager_for(options.memory_limit_mb, options.profile).stats())
    stats["pressure"] = pressure_name(stats.get("pressure"))
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
        if started
        else None,
        "seconds": num("last_run_seconds"),
        "files_indexed": int(num("last_run_files_indexed") or 0),
        "chunks_embedded": int(num("last_run_chunks_embedded") or 0),
    }


def _is_empty(store: Store) -> bool:
    counts = store.counts()
    return not (counts["files"] or counts["skipped_files"] or counts["vectors"])


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

"""`coarch watch`: keep one index fresh while files change.

File-system notifications (the `watchfiles` library: inotify, FSEvents, ReadDirectoryChangesW)
are grouped into batches: a batch is yielded once no change came for `step_ms`, or after
`debounce_ms` at most, so a branch switch that rewrites thousands of files becomes one or a few
incremental runs instead of thousands. Which changes count is coarch.discovery's decision (git's
file list or the .gitignore rules, as `coarch index` sees them): after each batch the watcher
compares sizes and mtimes with the store (coarch.freshness) and runs an incremental build only
when something the index covers changed; changes to ignored files cost that comparison.

A batch leaves the FAISS file behind the store (searches scan the few chunks it lacks from
SQLite): rewriting it is most of a small batch's cost on a large index, so it is written once
changes pause (RETRY_MS), or with a batch when the last write is VECTORS_MAX_AGE old.

Memory stays bounded over hours: one Embedder (and its MemoryManager) is loaded once and lent
to every run, and each run opens and closes its own store. When another process holds the
index lock the batch is kept and retried on the next batch or timeout.

Stopping: the first Ctrl-C or SIGTERM stops the watch, and a run in progress after committing
the batch in hand (the run is in a worker thread, so the signal is never the indexer's to
swallow: one that came after the run's last check would otherwise be lost with the run
finished); then `run` raises IndexingInterrupted or IndexingTerminated (exit 130 or 143, as
`coarch index`). A second signal stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coarch.discovery import check_root
from coarch.errors import IndexingInterrupted, IndexingTerminated, IndexLockedError
from coarch.freshness import discovery_options, pending_changes
from coarch.index import Index
from coarch.location import DB_FILE
from coarch.store import Store

if TYPE_CHECKING:
    from types import FrameType

    from watchfiles import Change

    from coarch.embedder import Embedder
    from coarch.indexer import IndexSummary

log = logging.getLogger(__name__)

# A batch is handed over once no change came for STEP_MS, and after DEBOUNCE_MS at most: git
# rewrites a branch's files in bursts with short gaps; an editor saves one file at a time.
DEFAULT_STEP_MS = 200
DEFAULT_DEBOUNCE_MS = 2000
# How often (ms) the watcher wakes without changes, to retry a batch the lock held back (and
# to write the vectors file once changes pause).
RETRY_MS = 2000
# A batch leaves the FAISS file behind (rewriting it took 2.3 of a one-file batch's 2.5 s on a
# 50,000-chunk index: every vector read back from SQLite); it is written once no change came
# for RETRY_MS, or with a batch when the last write is older than this (seconds).
VECTORS_MAX_AGE = 60.0


@dataclass(frozen=True)
class WatchUpdate:
    """One batch: the notifications it held, the files the index saw change, and what the run
    did (None when nothing the index covers had changed or the lock was held)."""

    notifications: int
    files_changed: int
    files_indexed: int
    files_removed: int
    chunks_embedded: int
    seconds: float
    locked_by: int | None = None


class Watcher:
    """Watches `root` and keeps its index (`index_dir`, else the default) up to date.
    `options` are the settings of `coarch index` (IndexOptions' keywords)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None = None,
        options: dict[str, Any] | None = None,
        step_ms: int = DEFAULT_STEP_MS,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        on_update: Callable[[WatchUpdate], None] | None = None,
    ) -> None:
        self.root = check_root(root)
        self.index_dir_arg = index_dir
        self.options = options or {}
        self.step_ms = step_ms
        self.debounce_ms = max(debounce_ms, step_ms)
        self.on_update = on_update
        with Index(self.root, index_dir=index_dir, **self.options) as index:
            self.index_dir = index.index_dir
        self._embedder: Embedder | None = None
        self._dirty = False
        self._stop = threading.Event()  # run's: set to stop the watch and a run in progress
        self._vectors_written = float("-inf")  # monotonic time of the last FAISS write
        self._vectors_behind = False  # a batch left the FAISS file behind the store
        self._worker = _Worker()

    def run(
        self, stop: threading.Event | None = None, ready: threading.Event | None = None
    ) -> None:
        """Brings the index up to date, then follows changes until `stop` is set (returns) or,
        in the main thread, Ctrl-C or SIGTERM (raises IndexingInterrupted or
        IndexingTerminated once the run in hand is committed; see the module docstring).
        `ready` is set once the watch is in place."""
        self._stop = stop or threading.Event()
        with _stop_on_signals(self._stop) as signalled:
            self._follow(ready)
        if signalled:
            word = "terminated" if signalled[0] == signal.SIGTERM else "interrupted"
            error = IndexingTerminated if signalled[0] == signal.SIGTERM else IndexingInterrupted
            raise error(
                f"{word}; the index holds every change committed before the stop",
                hint=f"run `coarch watch {self.root}` again to go on",
            )

    def _follow(self, ready: threading.Event | None) -> None:
        import watchfiles

        self.update(notifications=0)
        if self._stop.is_set():
            return
        watch_filter = _Filter(self.index_dir)
        changes = watchfiles.watch(
            self.root,
            watch_filter=watch_filter,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self._stop,
            rust_timeout=RETRY_MS,
            yield_on_timeout=True,
            raise_interrupt=True,
        )
        if ready is not None:
            ready.set()
        # The notifications start with the first iteration: check once more at the first
        # batch or timeout, for what changed in between.
        self._dirty = True
        for batch in changes:
            if self._stop.is_set():
                return
            if batch or self._dirty or self._vectors_behind:
                self.update(notifications=len(batch))

    def update(self, notifications: int) -> WatchUpdate:
        """One incremental run if the files the index covers changed (see the module
        docstring)."""
        t0 = time.monotonic()
        with Index(self.root, index_dir=self.index_dir_arg, **self.options) as index:
            changed = self._changed_files(index)
            if changed == 0:
                self._dirty = False
                if self._vectors_behind:
                    self._catch_up_vectors(index)
                return self._report(WatchUpdate(notifications, 0, 0, 0, 0, time.monotonic() - t0))
            try:
                summary = self._build(
                    index, write_vectors=time.monotonic() - self._vectors_written >= VECTORS_MAX_AGE
                )
            except IndexLockedError as exc:
                self._dirty = True
                log.warning("%s; will retry", exc)
                return self._report(
                    WatchUpdate(
                        notifications, changed, 0, 0, 0, time.monotonic() - t0, exc.pid or -1
                    )
                )
            except IndexingInterrupted:
                if not self._stop.is_set():
                    raise
                return WatchUpdate(notifications, changed, 0, 0, 0, time.monotonic() - t0)
        self._dirty = False
        self._give_back_memory()
        update = WatchUpdate(
            notifications,
            changed,
            summary.files_indexed + summary.files_copied,
            summary.files_removed,
            summary.chunks_embedded,
            time.monotonic() - t0,
        )
        log.info(
            "%d files changed: %d indexed, %d removed, %d chunks embedded (%.2fs)",
            changed,
            update.files_indexed,
            update.files_removed,
            update.chunks_embedded,
            update.seconds,
        )
        return self._report(update)

    def _give_back_memory(self) -> None:
        """After a batch: Python's garbage collector, malloc_trim(0) and the CUDA cache
        release, through the embedder's MemoryManager. A watch lives for hours and each batch
        frees what it allocated; trimming returns those pages to the system instead of leaving
        them spread over the heap (measured in-process, 1,000 one-file batches: RSS grew 2.2 KB
        a batch without it, 1.3 KB with it, and stayed 5 MiB lower)."""
        if self._embedder is not None and self._embedder.memory is not None:
            self._embedder.memory.collect()

    def _catch_up_vectors(self, index: Index) -> None:
        """Writes the FAISS file a batch left behind (a run with nothing to index)."""
        try:
            self._build(index, write_vectors=True)
        except IndexLockedError as exc:
            log.info("%s; the vectors file is written later", exc)
        except IndexingInterrupted:
            if not self._stop.is_set():
                raise

    def _build(self, index: Index, write_vectors: bool) -> IndexSummary:
        """An incremental run of `index` in a worker thread, stopped by the watch's stop event;
        the calling (main) thread waits, free to take signals. Without `write_vectors`, the
        FAISS file is left behind (see VECTORS_MAX_AGE)."""
        embedder = self._embedder_for(index)
        settings = dataclasses.replace(index.options, write_vectors=write_vectors)
        started = time.monotonic()
        summary: IndexSummary = self._worker.call(
            functools.partial(index.build, embedder=embedder, stop=self._stop, settings=settings)
        )
        if write_vectors:
            self._vectors_written, self._vectors_behind = started, False
        else:
            self._vectors_behind = True
        return summary

    def _changed_files(self, index: Index) -> int:
        """Files new, changed or deleted by the index's own listing; every file counts as
        changed while there is no index yet."""
        if not (index.index_dir / DB_FILE).is_file():
            return 1
        with Store(index.index_dir, readonly=True) as store:
            options = discovery_options(
                store, index.index_dir, index.options.max_file_size, index.options.use_git
            )
            pending = pending_changes(self.root, store, options)
        return 0 if pending is None else pending.total

    def _embedder_for(self, index: Index) -> Embedder | None:
        """The watcher's one Embedder, loaded on the first run that needs one, in the index's
        precision and model; under the MemoryManager of the index settings."""
        if self._embedder is not None:
            return self._embedder
        if not (index.index_dir / DB_FILE).is_file():
            return None  # the first build picks the precision; later runs borrow its model
        from coarch.embedder import Embedder
        from coarch.memory import manager_for
        from coarch.models import resolve_model_path

        with Store(index.index_dir, readonly=True) as store:
            precision = store.precision()
        settings = index.options
        self._embedder = Embedder(
            resolve_model_path(settings.model),
            threads=settings.threads,
            memory=manager_for(settings.memory_limit_mb, settings.profile),
            precision=settings.precision or precision,
        )
        return self._embedder

    def _report(self, update: WatchUpdate) -> WatchUpdate:
        if self.on_update is not None:
            self.on_update(update)
        return update


class _Worker:
    """One daemon thread that runs the watcher's builds in turn while the caller waits, free
    to take signals. One for the watcher's life: a thread started for each build left about
    12 KB behind (per-thread state of the libraries), 40 MiB an hour at an edit a second. A
    daemon, so that a second signal (stop at once) does not wait for it at exit."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]]] = (
            queue.Queue()
        )
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], Any]) -> Any:
        """fn() in the worker thread: its result, or its exception raised here."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="coarch-watch-run", daemon=True)
            self._thread.start()
        done: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self._jobs.put((fn, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.put((True, fn()))
            except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
                done.put((False, exc))


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """In the main thread, the first SIGINT or SIGTERM sets `stop` (the list yielded then
    holds the signal) and a second raises KeyboardInterrupt; elsewhere, nothing."""
    signalled: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield signalled
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signalled:
            raise KeyboardInterrupt
        signalled.append(signum)
        stop.set()
        log.warning(
            "%s: committing the work in hand, then stopping (again to stop at once)",
            "terminated" if signum == signal.SIGTERM else "interrupted",
        )

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signalled
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Filter:
    """watchfiles' default filter (VCS folders, caches, editors' swap files) plus the index
    folder, which changes on every run."""

    def __init__(self, index_dir: Path) -> None:
        import watchfiles

        self._default = watchfiles.DefaultFilter()
        self._index_prefix = os.path.realpath(index_dir).rstrip("/") + "/"

    def __call__(self, change: Change, path: str) -> bool:
        if os.path.realpath(path).startswith(self._index_prefix):
            return False
        return bool(self._default(change, path))

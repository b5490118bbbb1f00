"""One indexing run: plan it (what changed since the last run, whether the index is rebuilt),
load the model, send the files to read through a pipeline (coarch.pipeline in this process,
coarch.distributed on a Ray cluster) that commits them at checkpoints, remove the deleted
files, bring the FAISS file up to date and record how the run ended.

A run stopped by Ctrl-C, SIGTERM or a caller's `stop` event commits the work in hand and raises
IndexingInterrupted (or IndexingTerminated); its message names the command that resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from coarch import vectors as faiss_file
from coarch.changes import Changes, compare
from coarch.discovery import (
    DEFAULT_MAX_FILE_SIZE,
    Candidate,
    Discovery,
    DiscoveryOptions,
    DiscoveryReport,
)
from coarch.errors import IndexingInterrupted, IndexingTerminated, disk_full_error
from coarch.location import resolve_index_dir
from coarch.memory import check_max_file_size, manager_for
from coarch.pipeline import Checkpoint, LocalPipeline, Remove, apply, checkpoint_seconds
from coarch.progress import (
    IndexProgress,
    ProgressCallback,
    Tally,
    current_rss,
    peak_rss,
    pressure_name,
)
from coarch.run_plan import LoadedModel, RunPlan, load_model, plan_run
from coarch.store import FileState, Store

if TYPE_CHECKING:
    from coarch.distributed import RayOptions
    from coarch.embedder import Embedder

log = logging.getLogger(__name__)

DEFAULT_EMBED_BATCH = 128  # texts per call into the embedder (Ctrl-C waits for one)
DEFAULT_EMBED_POOL = 1024  # texts gathered, then embedded sorted by length
# The discovery settings of the last run, so that a freshness check (coarch.freshness) lists
# the same files as the run did.
META_MAX_FILE_SIZE = "discovery_max_file_size"
META_USE_GIT = "discovery_use_git"


@dataclass(frozen=True)
class IndexOptions:
    """Settings of a run (the CLI's flags)."""

    model: str | os.PathLike[str] | None = None
    threads: int | None = None
    memory_limit_mb: int | None = None
    profile: str | None = None
    batch_tokens: int | None = None
    full: bool = False
    checkpoint_every: float | None = None
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    embed_batch: int = DEFAULT_EMBED_BATCH
    embed_pool: int = DEFAULT_EMBED_POOL
    target_tokens: int | None = None
    use_git: bool = True
    # fp32, bf16 or auto; None: $COARCH_PRECISION, else the index's own, else auto
    precision: str | None = None
    # read, chunk and embed on a Ray cluster (coarch.distributed); None: in this process
    ray: RayOptions | None = None
    # False: leave the FAISS file behind the store (a search scans the chunks it lacks from
    # SQLite); rewriting a flat file costs seconds at 50,000 chunks, which `coarch watch`
    # pays once changes pause instead of after every batch
    write_vectors: bool = True

    def __post_init__(self) -> None:
        check_max_file_size(self.max_file_size, self.memory_limit_mb, self.profile)


@dataclass
class IndexSummary:
    """What a run did; `lines()` renders it for people, `as_dict()` for --json."""

    root: str
    index_dir: str
    files_total: int = 0
    files_unchanged: int = 0
    files_indexed: int = 0  # new or modified files (re)chunked
    files_touched: int = 0  # mtime changed, content did not
    files_copied: int = 0  # renamed or copied: vectors re-used
    files_removed: int = 0
    files_skipped: int = 0  # by content checks in this run
    chunks_embedded: int = 0
    chunks_reused: int = 0  # vectors found in the cache
    chunks_total: int = 0  # in the index after the run
    seconds: float = 0.0
    embed_seconds: float = 0.0
    peak_rss: int = 0
    rebuild_reason: str | None = None
    faiss: str = ""
    interrupted: bool = False
    skipped: list[str] = field(default_factory=list)
    invalid_utf8: int = 0
    discovery_mode: str = ""
    workers: list[dict[str, Any]] = field(default_factory=list)  # Ray actors: peak RSS, limit

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["chunks_per_second"] = round(self.chunks_per_second, 1)
        return out

    def lines(self) -> list[str]:
        out = []
        if self.rebuild_reason:
            out.append(f"full rebuild: {self.rebuild_reason}")
        out.append(
            f"{self.files_total} files: {self.files_indexed} indexed, {self.files_unchanged}"
            f" unchanged, {self.files_touched} touched, {self.files_copied} renamed or copied,"
            f" {self.files_removed} removed"
        )
        out.append(
            f"{self.chunks_embedded} chunks embedded ({self.chunks_per_second:.0f}/s),"
            f" {self.chunks_reused} re-used; {self.chunks_total} chunks in the index"
        )
        if self.skipped:
            out.append("skipped: " + "; ".join(self.skipped))
        if self.invalid_utf8:
            out.append(f"{self.invalid_utf8} files not valid UTF-8 (bad bytes replaced)")
        out.append(f"took {self.seconds:.1f}s, peak RSS {self.peak_rss / 2**20:.0f} MiB")
        for w in self.workers:
            out.append(
                f"Ray worker {w['worker']}: {w['files']} files, {w['chunks_embedded']}"
                f" chunks embedded, peak RSS {w['peak_rss'] / 2**20:.0f} MiB"
                f" (limit {w['limit_mb']:.0f} MiB)"
            )
        return out


class Indexer:
    """Runs one build of `root` into `store` (kept in `index_dir`), following `plan`. The
    caller holds the index lock and has made `store` ready: a rebuild runs into a fresh store.
    `model` is the loaded model when the caller already has it; `exclude` lists more folders
    discovery leaves out (the index's own folders).

    The pipelines (coarch.pipeline, coarch.distributed) count into `summary` and `tally`, hand
    whole files to `checkpoint`, report through `progress` and stop when `stop_requested`."""

    def __init__(
        self,
        root: Path,
        index_dir: Path,
        store: Store,
        options: IndexOptions,
        progress: ProgressCallback | None = None,
        *,
        plan: RunPlan | None = None,
        model: LoadedModel | None = None,
        exclude: tuple[str, ...] = (),
        shown_dir: Path | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.root = root
        self.index_dir = index_dir
        self.store = store
        self.options = options
        self.plan = plan or plan_run(store, options)
        self.progress_cb = progress
        self.checkpoint = Checkpoint(store, checkpoint_seconds(options.checkpoint_every))
        self.report = DiscoveryReport()
        self.summary = IndexSummary(root=str(root), index_dir=str(shown_dir or index_dir))
        self.tally = Tally()
        self._exclude = (str(index_dir), *exclude)
        self._lent = model
        self._memory: Any = model.memory if model else None
        self._stop_flag = False
        # Set by another thread to stop the run as Ctrl-C does (a server's cancelled request).
        self._stop_event = stop
        self._stop_signal: int | None = None  # the signal that asked to stop, if any
        self._t0 = time.monotonic()
        self._peak_rss = 0

    @property
    def stop_requested(self) -> bool:
        return self._stop_flag or (self._stop_event is not None and self._stop_event.is_set())

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> IndexSummary:
        self._t0 = time.monotonic()
        with self._sigint_handler():
            try:
                self._run()
            except IndexingInterrupted:
                self.summary.interrupted = True
                self._finish_summary()
                self._record_run("interrupted")
                raise
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    self._record_run("failed")
                full = disk_full_error(exc, f"the index in {self.index_dir}")
                if full is not None:
                    raise full from exc
                raise
        self._finish_summary()
        return self.summary

    def _run(self) -> None:
        if self._lent is None:  # bad memory settings fail before any write
            self._memory = manager_for(self.options.memory_limit_mb, self.options.profile)
        rechunk = self._decide_rebuild()
        discovery, states, changes = self._plan_files(rechunk)
        self.check_stop()
        embedder = self._model_for(changes.to_read)
        self.check_stop()
        self._record_start(embedder, rechunk)
        if changes.to_read:
            assert embedder is not None
            self._index_files(discovery, changes.to_read, states, embedder)
        self._apply_deletions(changes.deleted)
        self._drop_orphan_vectors()
        self._sync_vectors()
        self._record_run("ok")

    def _decide_rebuild(self) -> bool:
        """Logs the plan's rebuild; True when the chunker changed since the last run, so that
        every file is chunked again (into the same store)."""
        plan, recorded = self.plan, self.store.get_meta("chunker")
        if plan.rebuild:
            self.summary.rebuild_reason = plan.rebuild
            log.info("full rebuild: %s", plan.rebuild)
        rechunk = recorded not in (None, plan.chunker_id)
        if rechunk:
            log.info(
                "chunking changed (%s -> %s): every file is chunked again",
                recorded,
                plan.chunker_id,
            )
        return rechunk

    def _plan_files(self, rechunk: bool) -> tuple[Discovery, dict[str, FileState], Changes]:
        """Lists the files and compares them with the store (coarch.changes)."""
        self.progress("scanning")
        opts = self.options
        discovery = Discovery(
            self.root,
            DiscoveryOptions(
                max_file_size=opts.max_file_size, use_git=opts.use_git, exclude=self._exclude
            ),
            self.report,
        )
        candidates = discovery.candidates()
        states = self.store.file_states()
        if rechunk:  # as forget_file_states() will record: every file looks changed
            states = {
                p: dataclasses.replace(st, mtime_ns=-1, content_hash="") for p, st in states.items()
            }
        changes = compare(candidates, states)
        self.summary.files_total = len(candidates)
        self.summary.files_unchanged = changes.unchanged
        if not candidates and not states:
            log.warning("nothing to index in %s: no files found", self.root)
        self.tally.files_to_read = len(changes.to_read)
        self.tally.bytes_total = sum(c.size for c in changes.to_read)
        log.info(
            "%d files, %d to read, %d gone from the index",
            len(candidates),
            len(changes.to_read),
            len(changes.deleted),
        )
        self.progress("scanning")
        return discovery, states, changes

    def _model_for(self, to_read: list[Candidate]) -> Embedder | None:
        """The model, loaded (and so checked) before the first write; a run with nothing to
        read does not load it."""
        if self._lent is not None:
            return self._lent.embedder
        return load_model(self.plan, self.options).embedder if to_read else None

    def _record_start(self, embedder: Embedder | None, rechunk: bool) -> None:
        store, opts = self.store, self.options
        with store.transaction():
            if embedder is not None:
                self._record_model(embedder)
            if rechunk:
                store.forget_file_states()  # durable: an interrupted run still re-chunks all
            store.set_meta("root", str(self.root))
            store.set_meta("chunker", self.plan.chunker_id)
            store.set_meta(META_MAX_FILE_SIZE, opts.max_file_size)
            store.set_meta(META_USE_GIT, int(opts.use_git))
            store.set_meta("last_run_started", f"{time.time():.3f}")
            store.set_meta("last_run_state", "running")

    def _record_model(self, embedder: Embedder) -> None:
        """The model's meta (inside the caller's transaction)."""
        store, plan = self.store, self.plan
        store.set_meta("model_id", plan.model_id)
        store.set_meta("model_path", str(plan.model_path))
        store.set_meta("dim", embedder.dim)
        store.set_meta("max_seq_length", embedder.max_seq_length)
        store.set_meta("precision", embedder.precision)
        store.set_meta("precision_reason", plan.precision_reason or embedder.precision_reason)

    def _index_files(
        self,
        discovery: Discovery,
        to_read: list[Candidate],
        states: dict[str, FileState],
        embedder: Embedder,
    ) -> None:
        if self.options.ray is not None:
            from coarch.distributed import RayPipeline

            RayPipeline(self.options.ray).run(self, to_read, states, embedder)
        else:
            LocalPipeline(self, embedder).run(discovery, to_read, states)

    def _apply_deletions(self, deleted: list[str]) -> None:
        if not deleted:
            return
        with self.store.transaction():
            for path in deleted:
                apply(self.store, Remove(path))
        self.summary.files_removed = len(deleted)

    def _drop_orphan_vectors(self) -> None:
        """Drops the cached vectors no chunk uses any more, after a run that changed chunks."""
        s = self.summary
        if not (s.files_indexed or s.files_removed or s.files_copied or s.files_skipped):
            return
        with self.store.transaction():
            dropped = self.store.drop_orphan_vectors()
        if dropped:
            log.debug("dropped %d cached vectors no chunk uses", dropped)

    def _sync_vectors(self) -> None:
        """Brings the FAISS file up to date with the store (coarch.vectors)."""
        dim = self.store.get_meta("dim")
        if not dim or not self.options.write_vectors:
            return
        stale = faiss_file.freshness(self.store, self.index_dir)
        if stale is not None:
            self.progress("writing vectors")
        result = faiss_file.sync(self.store, self.index_dir, int(dim), checked=(stale,))
        self.summary.faiss = (
            result.action if not result.reason else (f"{result.action} ({result.reason})")
        )

    # ---- interruption ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sigint_handler(self) -> Iterator[None]:
        """First Ctrl-C or SIGTERM: finish the batch in hand, commit, stop. Second: stop at
        once (KeyboardInterrupt, which the embedder raises between its batches)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self._stop_flag = True
            self._stop_signal = signum
            again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            log.warning(
                "%s: finishing the batch in hand and committing (%s again to stop at once)",
                _stop_word(signum),
                again,
            )

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def check_stop(self) -> None:
        if self.stop_requested:
            self.raise_interrupted()

    def raise_interrupted(self) -> None:
        error = IndexingTerminated if self._stop_signal == signal.SIGTERM else IndexingInterrupted
        raise error(
            f"{_stop_word(self._stop_signal)}; {self.checkpoint.files_committed} files committed",
            hint=f"run `{self.resume_command()}` again to resume where it stopped",
        )

    def resume_command(self) -> str:
        """The `coarch index` command line that continues this run in the same index: the
        options that pick the index or change what goes into it are repeated, shell-quoted."""
        opts = self.options
        words = ["coarch", "index", str(self.root)]
        if self.index_dir != resolve_index_dir(self.root):
            words += ["--index", str(self.index_dir)]
        if not opts.use_git:
            words.append("--no-git")
        if opts.model is not None:
            words += ["--model", os.fspath(opts.model)]
        if opts.precision is not None:
            words += ["--precision", opts.precision]
        if opts.max_file_size != DEFAULT_MAX_FILE_SIZE:
            words += ["--max-file-size", str(opts.max_file_size)]
        if opts.ray is not None:
            words.append("--ray")
            if opts.ray.address:
                words += ["--ray-address", opts.ray.address]
        return shlex.join(words)

    # ---- bookkeeping -------------------------------------------------------------------------

    def _record_run(self, state: str) -> None:
        with self.store.transaction():
            self.store.set_meta("last_run_state", state)
            self.store.set_meta("last_run_seconds", f"{time.monotonic() - self._t0:.2f}")
            self.store.set_meta("last_run_files_indexed", self.summary.files_indexed)
            self.store.set_meta("last_run_chunks_embedded", self.summary.chunks_embedded)

    def _finish_summary(self) -> None:
        s = self.summary
        s.seconds = time.monotonic() - self._t0
        s.chunks_total = self.store.chunk_count()
        s.skipped = self.report.lines()
        s.invalid_utf8 = self.report.invalid_utf8
        s.discovery_mode = self.report.mode
        self._peak_rss = max(self._peak_rss, current_rss(), peak_rss())
        s.peak_rss = self._peak_rss
        self.progress("done")

    def progress(self, phase: str, embedded: int | None = None) -> None:
        """Reports to the progress callback; `embedded` counts the chunks embedded so far
        when a call into the embedder is under way."""
        rss = current_rss()
        self._peak_rss = max(self._peak_rss, rss)
        if self.progress_cb is None:
            return
        pressure, batch = None, None
        if self._memory is not None:
            with contextlib.suppress(Exception):
                stats = self._memory.stats()
                pressure = pressure_name(stats.get("pressure"))
                batch = stats.get("batch_tokens")
        if embedded is None:
            embedded = self.summary.chunks_embedded
        self.progress_cb(
            IndexProgress(
                phase=phase,
                files_total=self.summary.files_total,
                files_to_read=self.tally.files_to_read,
                files_done=self.checkpoint.files_committed,
                chunks_embedded=embedded,
                chunks_reused=self.summary.chunks_reused,
                chunks_estimate=self.tally.chunks_estimate(),
                elapsed=time.monotonic() - self._t0,
                embed_seconds=self.summary.embed_seconds,
                rss_bytes=rss,
                pressure=pressure,
                batch_tokens=int(batch) if batch else None,
            )
        )


def _stop_word(signum: int | None) -> str:
    """How the messages name a stop: "terminated" for SIGTERM, else "interrupted"."""
    return "terminated" if signum == signal.SIGTERM else "interrupted"

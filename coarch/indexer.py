"""One indexing run: scan -> read and chunk (a thread) -> embed in batches -> commit checkpoints.

Memory stays bounded by construction: the reader thread hands files over through a bounded
queue, the main thread pulls only while fewer than `embed_pool` texts wait for the model, and
what is embedded is committed (then dropped) every `checkpoint_every` seconds. Neither the list
of all chunks nor all vectors is ever held; the per-file lists (paths, sizes) are small.

Crash safety: each checkpoint is one SQLite transaction holding the new vectors (the cache,
keyed by text hash) and the files whose every chunk has a vector, with their chunk and FTS
rows. After kill -9 the next run finds the committed files unchanged by size and mtime, and the
vectors of half-done files in the cache, so nothing committed is embedded again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from coarch import vectors as faiss_file
from coarch.chunking import CHUNKER_VERSION, Chunk, Chunker
from coarch.discovery import (
    DEFAULT_MAX_FILE_SIZE,
    Candidate,
    Discovery,
    DiscoveryOptions,
    DiscoveryReport,
    Skip,
    SkippedFile,
    SourceFile,
    human_size,
)
from coarch.embedder import PRECISION_ENV, resolve_precision
from coarch.errors import (
    ConfigError,
    IndexingInterrupted,
    IndexingTerminated,
    disk_full_error,
)
from coarch.identifiers import model_text
from coarch.location import resolve_index_dir
from coarch.models import model_id, resolve_model_path
from coarch.progress import (
    IndexProgress,
    ProgressCallback,
    current_rss,
    peak_rss,
    pressure_name,
)
from coarch.store import FileState, NewChunk, Store, text_hash

if TYPE_CHECKING:
    from coarch.distributed import RayOptions
    from coarch.embedder import Embedder

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "COARCH_CHECKPOINT_FREQUENCY"
DEFAULT_CHECKPOINT_SECONDS = 5.0
DEFAULT_EMBED_BATCH = 128        # texts per call into the embedder (Ctrl-C waits for one)
DEFAULT_EMBED_POOL = 1024        # texts gathered, then embedded sorted by length
MAX_PENDING_FILES = 2000         # commit early when this many files wait for a checkpoint
_QUEUE_FILES = 16                # files read and chunked ahead of the embedder
_CONTENT_SKIPS = frozenset({Skip.BINARY, Skip.MINIFIED})  # remembered while unchanged
# The discovery settings of the last run, so that a freshness check (coarch.freshness) lists
# the same files as the run did.
META_MAX_FILE_SIZE = "discovery_max_file_size"
META_USE_GIT = "discovery_use_git"
# Memory a file takes while it is read, chunked and waits for its vectors, per byte of it: peak
# RSS above a tiny tree's (254 MiB) was 8.2 bytes per byte for one 50 MB Python file, 11.2 for a
# 20 MB one (cut by lines: coarch.chunking.GRAMMAR_MAX_CHARS); 12 leaves some headroom.
FILE_MEMORY_PER_BYTE = 12
PROCESS_RESERVE_MB = 300         # the model, libtorch and the interpreter, before any file
MODEL_RESERVE_MB = 120           # the model's weights (86 MB) and one batch's scratch


def max_file_size_ceiling(limit_mb: float, rss_mb: float = 0.0) -> int:
    """The largest file size (bytes) whose files can be chunked within a memory limit (MiB),
    for a process holding `rss_mb` before the model is loaded."""
    reserve = max(PROCESS_RESERVE_MB, rss_mb + MODEL_RESERVE_MB)
    return max(0, int((limit_mb - reserve) * 2**20 / FILE_MEMORY_PER_BYTE))


def check_max_file_size(options: IndexOptions) -> None:
    """Refuses, before any work, a size cap whose files cannot be chunked within the memory
    limit: a file is held whole while it is chunked. The default cap is not checked: the
    reserve is generous for 1 MB files (ordinary trees peak at 308 MB under a 400 MB limit), and
    refusing it would refuse small limits that work."""
    cap = options.max_file_size
    if cap <= DEFAULT_MAX_FILE_SIZE:
        return
    memory = _memory_manager(options)
    if memory is None:
        return
    limit = float(memory.limit_mb)
    ceiling = max_file_size_ceiling(limit, float(memory.stats()["rss_mb"]))
    if cap <= ceiling:
        return
    # Shown rounded down, so the figure named is one that passes this check.
    ceiling -= ceiling % 100_000
    hint = (f"use --max-file-size {ceiling // 1000**2}M or less, or raise --memory-limit"
            if ceiling >= DEFAULT_MAX_FILE_SIZE else "raise --memory-limit")
    raise ConfigError(
        f"--max-file-size {human_size(cap)} is over the ceiling of {human_size(ceiling)} that"
        f" the memory limit ({limit:.0f} MB, {memory.limit_source}) allows: a file takes about"
        f" {FILE_MEMORY_PER_BYTE} bytes of memory per byte while it is chunked", hint=hint)



def checkpoint_seconds(explicit: float | None) -> float:
    """Seconds between checkpoints: the explicit value, else $COARCH_CHECKPOINT_FREQUENCY,
    else 5."""
    if explicit is not None:
        value = float(explicit)
    else:
        raw = os.environ.get(CHECKPOINT_ENV)
        if not raw:
            return DEFAULT_CHECKPOINT_SECONDS
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{CHECKPOINT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"checkpoint interval must be >= 0 seconds, not {value}")
    return value


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
        check_max_file_size(self)


@dataclass
class IndexSummary:
    """What a run did; `lines()` renders it for people, `as_dict()` for --json."""

    root: str
    index_dir: str
    files_total: int = 0
    files_unchanged: int = 0
    files_indexed: int = 0          # new or modified files (re)chunked
    files_touched: int = 0          # mtime changed, content did not
    files_copied: int = 0           # renamed or copied: vectors re-used
    files_removed: int = 0
    files_skipped: int = 0          # by content checks in this run
    chunks_embedded: int = 0
    chunks_reused: int = 0          # vectors found in the cache
    chunks_total: int = 0           # in the index after the run
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
            f" {self.files_removed} removed")
        out.append(
            f"{self.chunks_embedded} chunks embedded ({self.chunks_per_second:.0f}/s),"
            f" {self.chunks_reused} re-used; {self.chunks_total} chunks in the index")
        if self.skipped:
            out.append("skipped: " + "; ".join(self.skipped))
        if self.invalid_utf8:
            out.append(f"{self.invalid_utf8} files not valid UTF-8 (bad bytes replaced)")
        out.append(f"took {self.seconds:.1f}s, peak RSS {self.peak_rss / 2**20:.0f} MiB")
        for w in self.workers:
            out.append(f"Ray worker {w['worker']}: {w['files']} files, {w['chunks_embedded']}"
                       f" chunks embedded, peak RSS {w['peak_rss'] / 2**20:.0f} MiB"
                       f" (limit {w['limit_mb']:.0f} MiB)")
        return out


# ---- work items handed from the reader thread to the main thread -----------------------------

@dataclass(slots=True)
class _Chunked:
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    language: str | None
    chunks: list[Chunk]


@dataclass(slots=True)
class _Copy:
    source: SourceFile
    from_path: str


@dataclass(slots=True)
class _Touched:
    path: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class _Failed:
    error: BaseException


_DONE = object()


@dataclass(slots=True)
class _Waiting:
    """A file whose chunks wait for vectors: `need` lists the (hash, tokens, embedded text) of
    those not found in the cache; `missing` the hashes still without a vector."""

    item: _Chunked
    rows: list[NewChunk]
    need: list[tuple[str, int, str]]
    missing: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, decided from the index's meta and the options before anything is
    written: the model, the precision, and whether (why) the index is rebuilt."""

    model_path: Path
    model_id: str
    chunker_id: str
    precision: str                   # fp32 or bf16, as resolved
    precision_request: str | None    # what goes to the Embedder (auto's reason stays its own)
    precision_reason: str | None     # the index's recorded reason, kept with its precision
    rebuild: str | None


def plan_run(store: Store, options: IndexOptions) -> RunPlan:
    """The plan of a run on `store`. Raises ModelNotFoundError for a missing model folder and
    ConfigError for a bad precision; reads, never writes."""
    model_path = resolve_model_path(options.model)
    wanted_model = model_id(model_path)
    meta = store.meta()
    # An index keeps its precision unless one is asked for (flag or environment); a new
    # index gets the default (auto). The request itself goes to the Embedder, so that the
    # reason recorded is auto's finding rather than "bf16 was asked for".
    held = store.precision()
    asked = options.precision or os.environ.get(PRECISION_ENV)
    kept = not asked and held is not None
    request = asked or held
    precision = resolve_precision(request)
    rebuild = None
    if options.full:
        rebuild = "--full"
    elif meta.get("model_id") and meta["model_id"] != wanted_model:
        rebuild = f"model changed ({meta['model_id']} -> {wanted_model})"
    elif held is not None and held != precision:
        # Vectors of two precisions are never mixed in one index: bf16 rows differ from
        # fp32 ones (cosine about 0.99995), enough to reorder close results.
        rebuild = f"precision changed ({held} -> {precision})"
    return RunPlan(model_path, wanted_model,
                   f"v{CHUNKER_VERSION} target={options.target_tokens or 'default'}",
                   precision, request, meta.get("precision_reason") if kept else None, rebuild)


@dataclass
class LoadedModel:
    """The run's Embedder and the MemoryManager it runs under (None without one)."""

    embedder: Embedder
    memory: Any


def load_model(plan: RunPlan, options: IndexOptions) -> LoadedModel:
    """Loads the plan's model under the options' memory limit: raises ModelError for a folder
    that cannot be used, MemoryLimitError for a limit too small for the model, ConfigError for
    bad memory settings."""
    from coarch.embedder import Embedder

    memory = _memory_manager(options)
    embedder = Embedder(plan.model_path, threads=options.threads, memory=memory,
                        precision=plan.precision_request)
    return LoadedModel(embedder, memory)


def new_chunker(embedder: Embedder, target_tokens: int | None = None) -> Chunker:
    """The chunker of a run (local or on a Ray worker): chunks are sized in tokens of the form
    the model reads, so that none is cut off."""

    def count_model_tokens(text: str) -> int:
        return embedder.count_tokens(model_text(text))

    return Chunker(count_model_tokens, embedder.max_seq_length, target_tokens=target_tokens)


def model_input(chunk: Chunk) -> str:
    """What the model reads for a chunk (its embedded text, identifiers split into words); its
    text_hash is the key of the chunk's vector."""
    return model_text(chunk.embed_text)


class Indexer:
    """Runs one build of `root` into `store` (kept in `index_dir`), following `plan`. The
    caller holds the index lock and has made `store` ready: a rebuild runs into a fresh store.
    `model` is the loaded model when the caller already has it; `exclude` lists more folders
    discovery leaves out (the index's own folders)."""

    def __init__(self, root: Path, index_dir: Path, store: Store, options: IndexOptions,
                 progress: ProgressCallback | None = None, *, plan: RunPlan | None = None,
                 model: LoadedModel | None = None, exclude: tuple[str, ...] = (),
                 shown_dir: Path | None = None,
                 stop: threading.Event | None = None) -> None:
        self.root = root
        self.index_dir = index_dir
        self.store = store
        self.options = options
        self.plan = plan or plan_run(store, options)
        self.progress_cb = progress
        self.checkpoint_every = checkpoint_seconds(options.checkpoint_every)
        self.report = DiscoveryReport()
        self.summary = IndexSummary(root=str(root), index_dir=str(shown_dir or index_dir))
        self._exclude = (str(index_dir), *exclude)
        self._embedder: Embedder | None = model.embedder if model else None
        self._memory: Any = model.memory if model else None
        self._main_chunker: Chunker | None = None
        self._stop_flag = False
        # Set by another thread to stop the run as Ctrl-C does (a server's cancelled request).
        self._stop_event = stop
        self._stop_signal: int | None = None   # the signal that asked to stop, if any
        self._t0 = time.monotonic()
        self._peak_rss = 0
        # progress counters
        self._files_to_read = 0
        self._files_done = 0
        self._bytes_total = 0
        self._bytes_done = 0
        self._chunks_seen = 0
        self._in_encode = 0

    @property
    def _stop_requested(self) -> bool:
        return self._stop_flag or (self._stop_event is not None and self._stop_event.is_set())

    @_stop_requested.setter
    def _stop_requested(self, value: bool) -> None:
        self._stop_flag = value

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
        store, opts, plan = self.store, self.options, self.plan
        if self._embedder is None:
            self._memory = _memory_manager(opts)  # bad memory settings fail before any write
        meta = store.meta()
        if plan.rebuild:
            self.summary.rebuild_reason = plan.rebuild
            log.info("full rebuild: %s", plan.rebuild)
        rechunk = meta.get("chunker") not in (None, plan.chunker_id)
        if rechunk:
            log.info("chunking changed (%s -> %s): every file is chunked again",
                     meta.get("chunker"), plan.chunker_id)

        self._progress("scanning")
        discovery = Discovery(self.root, DiscoveryOptions(
            max_file_size=opts.max_file_size, use_git=opts.use_git,
            exclude=self._exclude), self.report)
        candidates = discovery.candidates()
        states = store.file_states()
        if rechunk:  # as forget_file_states() will record: every file looks changed
            states = {p: dataclasses.replace(st, mtime_ns=-1, content_hash="")
                      for p, st in states.items()}
        self.summary.files_total = len(candidates)
        listed = {c.path for c in candidates}
        to_read: list[Candidate] = []
        for c in candidates:
            st = states.get(c.path)
            if st is not None and st.size == c.size and st.mtime_ns == c.mtime_ns:
                self.summary.files_unchanged += 1
            else:
                to_read.append(c)
        deleted = [p for p in states if p not in listed]
        if not candidates and not states:
            log.warning("nothing to index in %s: no files found", self.root)
        self._files_to_read = len(to_read)
        self._bytes_total = sum(c.size for c in to_read)
        log.info("%d files, %d to read, %d gone from the index", len(candidates), len(to_read),
                 len(deleted))
        self._progress("scanning")
        self._check_stop()
        # The model is loaded (and so checked) before the first write; a run with nothing to
        # read does not load it.
        embedder = self._embedder
        if to_read and embedder is None:
            embedder = self._embedder = load_model(plan, opts).embedder
        self._check_stop()
        with store.transaction():
            if embedder is not None:
                self._record_model(embedder)
            if rechunk:
                store.forget_file_states()  # durable: an interrupted run still re-chunks all
            store.set_meta("root", str(self.root))
            store.set_meta("chunker", plan.chunker_id)
            store.set_meta(META_MAX_FILE_SIZE, opts.max_file_size)
            store.set_meta(META_USE_GIT, int(opts.use_git))
            store.set_meta("last_run_started", f"{time.time():.3f}")
            store.set_meta("last_run_state", "running")

        if to_read:
            assert embedder is not None
            if opts.ray is not None:
                from coarch.distributed import RayPipeline

                RayPipeline(opts.ray).run(self, to_read, states, embedder)
            else:
                self._pipeline(discovery, to_read, states, embedder)
        if deleted:
            with store.transaction():
                for path in deleted:
                    store.remove_file(path)
            self.summary.files_removed = len(deleted)
        changed = (self.summary.files_indexed or self.summary.files_removed
                   or self.summary.files_copied or self.summary.files_skipped)
        if changed:
            with store.transaction():
                dropped = store.drop_orphan_vectors()
            if dropped:
                log.debug("dropped %d cached vectors no chunk uses", dropped)
        dim = store.get_meta("dim")
        if dim and opts.write_vectors:
            stale = faiss_file.freshness(store, self.index_dir)
            if stale is not None:
                self._progress("writing vectors")
            result = faiss_file.sync(store, self.index_dir, int(dim), checked=(stale,))
            self.summary.faiss = result.action if not result.reason else (
                f"{result.action} ({result.reason})")
        self._record_run("ok")

    def _record_model(self, embedder: Embedder) -> None:
        """The model's meta (inside the caller's transaction)."""
        store, plan = self.store, self.plan
        store.set_meta("model_id", plan.model_id)
        store.set_meta("model_path", str(plan.model_path))
        store.set_meta("dim", embedder.dim)
        store.set_meta("max_seq_length", embedder.max_seq_length)
        store.set_meta("precision", embedder.precision)
        store.set_meta("precision_reason", plan.precision_reason or embedder.precision_reason)

    def _new_chunker(self, embedder: Embedder) -> Chunker:
        return new_chunker(embedder, self.options.target_tokens)

    # ---- the pipeline ------------------------------------------------------------------------

    def _pipeline(self, discovery: Discovery, to_read: list[Candidate],
                  states: dict[str, FileState], embedder: Embedder) -> None:
        by_hash = {st.content_hash: path for path, st in states.items() if st.skipped is None}
        handoff: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_FILES)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._reader, name="coarch-reader",
            args=(discovery, to_read, states, by_hash, self._new_chunker(embedder), handoff,
                  stop),
            daemon=True)
        reader.start()
        try:
            self._consume(handoff, embedder)
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    handoff.get_nowait()
            reader.join(timeout=10)

    def _reader(self, discovery: Discovery, to_read: list[Candidate],
                states: dict[str, FileState], by_hash: dict[str, str], chunker: Chunker,
                handoff: queue.Queue[object], stop: threading.Event) -> None:
        """Thread: reads, checks and chunks files in order, handing each over."""

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for candidate in to_read:
                if stop.is_set():
                    return
                got = discovery.read(candidate)
                item: object
                if isinstance(got, SkippedFile):
                    item = got
                else:
                    old = states.get(got.path)
                    if old is not None and old.skipped is None and \
                            old.content_hash == got.content_hash:
                        item = _Touched(got.path, got.size, got.mtime_ns)
                    elif by_hash.get(got.content_hash, got.path) != got.path:
                        item = _Copy(got, by_hash[got.content_hash])
                    else:
                        item = self._chunk(chunker, got)
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001  (the main thread re-raises it)
            put(_Failed(exc))
            return
        put(_DONE)

    @staticmethod
    def _chunk(chunker: Chunker, src: SourceFile) -> _Chunked:
        return _Chunked(src.path, src.size, src.mtime_ns, src.content_hash, src.language,
                        chunker.chunk(src.path, src.text, src.language))

    def _consume(self, handoff: queue.Queue[object], embedder: Embedder) -> None:
        """Main thread: turns handed-over files into committed rows.

        Texts to embed are gathered into a pool of up to `embed_pool`, which is then embedded
        as one generation: sorted by token count and cut into calls of `embed_batch` texts, so
        that each model batch holds texts of about one length (little padding). Nothing more is
        pulled until the generation is done, which bounds what waits in memory. Ctrl-C is
        checked between calls: the call in hand is finished, then what is complete is
        committed."""
        store = self.store
        embed_batch = max(1, self.options.embed_batch)
        pool_size = max(embed_batch, self.options.embed_pool)
        pool: dict[str, tuple[int, str]] = {}   # hash -> (tokens, embedded text), to embed
        new_vectors: dict[str, bytes] = {}      # embedded since the last commit
        waiting: list[_Waiting] = []            # files some of whose vectors are missing
        ready: list[tuple[str, Any]] = []       # operations for the next commit
        last_commit = time.monotonic()
        reader_done = False

        def commit() -> None:
            nonlocal last_commit
            if ready or new_vectors:
                with store.transaction():
                    store.put_vectors(new_vectors.items())
                    for op, payload in ready:
                        self._apply(op, payload)
                self._files_done += len(ready)
                new_vectors.clear()
                ready.clear()
            last_commit = time.monotonic()

        def maybe_commit() -> None:
            due = time.monotonic() - last_commit >= self.checkpoint_every
            if (due and (ready or new_vectors)) or len(ready) >= MAX_PENDING_FILES:
                commit()
                self._progress("indexing")

        def embed(batch: list[tuple[str, tuple[int, str]]]) -> None:
            texts = [text for _, (_, text) in batch]
            t0 = time.monotonic()
            base = self.summary.chunks_embedded

            def on_batch(done: int, total: int) -> None:
                self._progress("indexing", embedded_override=base + done)

            vecs = embedder.encode(texts, batch_tokens=self.options.batch_tokens,
                                   progress=on_batch)
            self.summary.embed_seconds += time.monotonic() - t0
            self.summary.chunks_embedded += len(batch)
            rows = np.ascontiguousarray(vecs, dtype="<f4")
            done = set()
            for (h, _), row in zip(batch, rows):
                new_vectors[h] = row.tobytes()
                done.add(h)
            still: list[_Waiting] = []
            for w in waiting:
                w.missing -= done
                if w.missing:
                    still.append(w)
                else:
                    ready.append(("put", (w.item, w.rows)))
            waiting[:] = still

        def run_generation() -> None:
            items = sorted(pool.items(), key=lambda kv: -kv[1][0])
            pool.clear()
            for i in range(0, len(items), embed_batch):
                if self._stop_requested:
                    return
                embed(items[i: i + embed_batch])
                maybe_commit()

        try:
            while not self._stop_requested:
                if not reader_done and len(pool) < pool_size:
                    try:
                        got = handoff.get(timeout=0.05)
                    except queue.Empty:
                        if pool and handoff.qsize() == 0:
                            run_generation()  # the reader is behind: keep the model busy
                        continue
                    if got is _DONE:
                        reader_done = True
                    elif isinstance(got, _Failed):
                        raise got.error
                    else:
                        op = self._prepare(got, embedder, new_vectors)
                        if isinstance(op, _Waiting):
                            for h, tokens, text in op.need:
                                pool.setdefault(h, (tokens, text))
                            op.missing = {h for h, _, _ in op.need}
                            op.need = []
                            waiting.append(op)
                        elif op is not None:
                            ready.append(op)
                        self._progress("indexing")
                elif pool:
                    run_generation()
                else:  # reader done, nothing left to embed
                    break
                maybe_commit()
            commit()
            self._progress("indexing")
        except KeyboardInterrupt:
            # A second Ctrl-C, or one outside the main thread: keep what is consistent.
            with contextlib.suppress(Exception):
                commit()
            self._raise_interrupted()
        self._check_stop()

    def _prepare(self, got: object, embedder: Embedder,
                 new_vectors: dict[str, bytes]) -> _Waiting | tuple[str, Any] | None:
        """Turns a handed-over item into a commit operation or a file waiting for vectors."""
        if isinstance(got, SkippedFile):
            self._bytes_done += got.size
            if got.reason in _CONTENT_SKIPS and got.content_hash is not None:
                self.summary.files_skipped += 1
                return ("skip", got)
            return ("remove", got.path)
        if isinstance(got, _Touched):
            self._bytes_done += got.size
            self.summary.files_touched += 1
            return ("touch", got)
        if isinstance(got, _Copy):
            copied = self._copy_rows(got, new_vectors)
            if copied is not None:
                self._bytes_done += got.source.size
                self.summary.files_copied += 1
                self.summary.chunks_reused += len(copied[1])
                return ("copy", copied)
            # The source changed since the run started: chunk this one after all.
            if self._main_chunker is None:
                self._main_chunker = self._new_chunker(embedder)
            got = self._chunk(self._main_chunker, got.source)
        assert isinstance(got, _Chunked)
        self._bytes_done += got.size
        self._chunks_seen += len(got.chunks)
        self.summary.files_indexed += 1
        inputs = [model_input(c) for c in got.chunks]
        rows = [NewChunk(c.start_line, c.end_line, c.language, c.symbols, c.text,
                         text_hash(text)) for c, text in zip(got.chunks, inputs)]
        hashes = [r.text_hash for r in rows]
        cached = self.store.cached_hashes(h for h in hashes if h not in new_vectors)
        need = [(r.text_hash, c.tokens, text) for r, c, text in zip(rows, got.chunks, inputs)
                if r.text_hash not in cached and r.text_hash not in new_vectors]
        self.summary.chunks_reused += len(rows) - len({h for h, _, _ in need})
        got.chunks = []  # the rows and `need` hold what is still wanted
        if not need:
            return ("put", (got, rows))
        return _Waiting(got, rows, need)

    def _copy_rows(self, got: _Copy, new_vectors: dict[str, bytes]
                   ) -> tuple[_Chunked, list[NewChunk]] | None:
        """Rows for a renamed or copied file made from its twin's committed rows and vectors,
        or None when the twin no longer has that content.

        The rows keep the twin's text hashes: the vectors re-used are those of the text
        embedded under the twin's path, and the cache key says so (a hash of exactly what the
        model embedded). Embedding the renamed file again would cost as much as indexing it
        anew, which a moved folder makes common; the path line changes the vector (median
        cosine 0.92-0.97 to the new path's on stdlib chunks), so this is an approximation,
        and one that lasts only until the file changes: then its chunks are hashed under
        their own path, miss the cache and are embedded exactly."""
        src = got.source
        state = self.store.file_state(got.from_path)
        if state is None or state.content_hash != src.content_hash or state.skipped:
            return None
        rows = self.store.chunks_of(got.from_path)
        old_vectors = self.store.get_vectors([r.text_hash for r in rows])
        for r in rows:
            vector = old_vectors.get(r.text_hash)
            if vector is None:
                return None
            # Written again with the rows: a chunk's vector is committed with it, whatever
            # happens to the twin meanwhile.
            new_vectors.setdefault(r.text_hash, vector)
        item = _Chunked(src.path, src.size, src.mtime_ns, src.content_hash, src.language, [])
        return item, rows

    def _apply(self, op: str, payload: Any) -> None:
        store = self.store
        if op in ("put", "copy"):
            item, rows = payload
            store.put_file(item.path, item.size, item.mtime_ns, item.content_hash,
                           item.language, rows)
        elif op == "touch":
            store.update_stat(payload.path, payload.size, payload.mtime_ns)
        elif op == "skip":
            store.put_skipped(payload.path, payload.size, payload.mtime_ns,
                              payload.content_hash, payload.reason.name.lower())
        elif op == "remove":
            store.remove_file(payload)

    # ---- interruption ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sigint_handler(self) -> Iterator[None]:
        """First Ctrl-C or SIGTERM: finish the batch in hand, commit, stop. Second: stop at
        once (KeyboardInterrupt, which the embedder raises between its batches)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self._stop_signal = signum
            again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
            log.warning("%s: finishing the batch in hand and committing (%s again to stop at"
                        " once)", _stop_word(signum), again)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check_stop(self) -> None:
        if self._stop_requested:
            self._raise_interrupted()

    def _raise_interrupted(self) -> None:
        error = IndexingTerminated if self._stop_signal == signal.SIGTERM else IndexingInterrupted
        raise error(
            f"{_stop_word(self._stop_signal)}; {self._files_done} files committed",
            hint=f"run `{self.resume_command()}` again to resume where it stopped")

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
        self._progress("done")

    def _progress(self, phase: str, embedded_override: int | None = None) -> None:
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
        embedded = self.summary.chunks_embedded if embedded_override is None \
            else embedded_override
        if self._bytes_done and self._bytes_total:
            estimate = int(self._chunks_seen * self._bytes_total / self._bytes_done)
        else:
            estimate = self._chunks_seen
        self.progress_cb(IndexProgress(
            phase=phase, files_total=self.summary.files_total,
            files_to_read=self._files_to_read, files_done=self._files_done,
            chunks_embedded=embedded, chunks_reused=self.summary.chunks_reused,
            chunks_estimate=estimate, elapsed=time.monotonic() - self._t0,
            embed_seconds=self.summary.embed_seconds, rss_bytes=rss, pressure=pressure,
            batch_tokens=int(batch) if batch else None))


def _stop_word(signum: int | None) -> str:
    """How the messages name a stop: "terminated" for SIGTERM, else "interrupted"."""
    return "terminated" if signum == signal.SIGTERM else "interrupted"


def _memory_manager(options: IndexOptions) -> Any:
    """The MemoryManager for a run, or None when the memory module is not available."""
    try:
        from coarch.memory import MemoryManager
    except ImportError:
        log.debug("coarch.memory not available: no memory manager")
        return None
    kwargs: dict[str, Any] = {}
    if options.memory_limit_mb is not None:
        kwargs["limit_mb"] = options.memory_limit_mb
    if options.profile is not None:
        kwargs["profile"] = options.profile
    try:
        return MemoryManager(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None

"""The pipeline of a local indexing run: a reader thread reads, checks and chunks the files to
read; the main thread looks their chunks up in the vector cache, embeds what is missing and
commits whole files at checkpoints. The reader's decision (`decide`), `Preparer`, the store
operations and `Checkpoint` are shared with the Ray pipeline (coarch.distributed).

Memory stays bounded by construction: the reader thread hands files over through a bounded
queue, the main thread pulls only while fewer than `embed_pool` texts wait for the model, and
what is embedded is committed (then dropped) at every checkpoint. Neither the list of all
chunks nor all vectors is ever held; the per-file lists (paths, sizes) are small.

Crash safety: each checkpoint is one SQLite transaction holding the new vectors (the cache,
keyed by text hash) and the files whose every chunk has a vector, with their chunk and FTS
rows. After kill -9 the next run finds the committed files unchanged by size and mtime, and the
vectors of half-done files in the cache, so nothing committed is embedded again.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from coarch.chunk_vectors import ChunkInput, chunk_input, embed_chunks
from coarch.chunking import Chunk, Chunker
from coarch.discovery import Candidate, Discovery, Skip, SkippedFile, SourceFile
from coarch.errors import ConfigError
from coarch.identifiers import model_text
from coarch.settings import env_number
from coarch.store import FileState, NewChunk, Store

if TYPE_CHECKING:
    from coarch.embedder import Embedder
    from coarch.indexer import Indexer

CHECKPOINT_ENV = "COARCH_CHECKPOINT_FREQUENCY"
DEFAULT_CHECKPOINT_SECONDS = 5.0
MAX_PENDING_FILES = 2000  # commit early when this many files wait for a checkpoint
_QUEUE_FILES = 16  # files read and chunked ahead of the embedder
_CONTENT_SKIPS = frozenset({Skip.BINARY, Skip.MINIFIED})  # remembered while unchanged


def checkpoint_seconds(explicit: float | None) -> float:
    """Seconds between checkpoints: the explicit value, else $COARCH_CHECKPOINT_FREQUENCY,
    else 5."""
    value = (
        float(explicit)
        if explicit is not None
        else env_number(CHECKPOINT_ENV, DEFAULT_CHECKPOINT_SECONDS, float, "a number of seconds")
    )
    if value < 0:
        raise ConfigError(f"checkpoint interval must be >= 0 seconds, not {value}")
    return value


def new_chunker(embedder: Embedder, target_tokens: int | None = None) -> Chunker:
    """The chunker of a run (local or on a Ray worker): chunks are sized in tokens of the form
    the model reads, so that none is cut off."""

    def count_model_tokens(text: str) -> int:
        return embedder.count_tokens(model_text(text))

    def count_model_line_tokens(text: str) -> list[int]:
        # model_text keeps line breaks: the lines of its form are the forms of the lines.
        return embedder.count_line_tokens(model_text(text))

    return Chunker(
        count_model_tokens,
        embedder.max_seq_length,
        target_tokens=target_tokens,
        count_lines=count_model_line_tokens,
    )


# ---- store operations: what a checkpoint writes ---------------------------------------------


@dataclass(slots=True)
class ChunkedFile:
    """A file read and chunked (the reader hands it over; WriteFile writes it); `chunks` is
    emptied once its rows are made."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    language: str | None
    chunks: list[Chunk]


@dataclass(slots=True)
class WriteFile:
    """A file's rows (all of whose vectors are in the cache or the checkpoint), replacing what
    the index held for its path."""

    file: ChunkedFile
    rows: list[NewChunk]


@dataclass(slots=True)
class Touch:
    """A file whose content the index holds under its path: only its stat is new. The reader
    hands it over as it is."""

    path: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class MarkSkipped:
    """A file skipped for its content (binary, minified): remembered while it is unchanged."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    reason: str


@dataclass(slots=True)
class Remove:
    """A path whose file is gone, or no longer indexed."""

    path: str


StoreOp: TypeAlias = WriteFile | Touch | MarkSkipped | Remove


def apply(store: Store, op: StoreOp) -> None:
    """Writes one operation, inside the caller's transaction."""
    if isinstance(op, WriteFile):
        f = op.file
        store.put_file(f.path, f.size, f.mtime_ns, f.content_hash, f.language, op.rows)
    elif isinstance(op, Touch):
        store.update_stat(op.path, op.size, op.mtime_ns)
    elif isinstance(op, MarkSkipped):
        store.put_skipped(op.path, op.size, op.mtime_ns, op.content_hash, op.reason)
    else:
        store.remove_file(op.path)


class Checkpoint:
    """What waits for the next commit, and when that is due: `every` seconds after the last
    one while anything waits, or at once when MAX_PENDING_FILES files wait. A commit is one
    transaction: the vectors embedded since the last one, then the operations of whole files.
    `files_committed` counts those operations over the run."""

    def __init__(self, store: Store, every: float) -> None:
        self.store = store
        self.every = every
        self.vectors: dict[str, bytes] = {}  # text hash -> float32 bytes, to write
        self.ops: list[StoreOp] = []
        self.files_committed = 0
        self._last = time.monotonic()

    def begin(self) -> None:
        """Starts the clock as a pipeline starts, so that the listing and the model load do not
        count towards the first commit."""
        self._last = time.monotonic()

    def due(self) -> bool:
        waiting = bool(self.ops or self.vectors)
        return (waiting and time.monotonic() - self._last >= self.every) or len(
            self.ops
        ) >= MAX_PENDING_FILES

    def commit(self) -> None:
        if self.ops or self.vectors:
            with self.store.transaction():
                self.store.put_vectors(self.vectors.items())
                for op in self.ops:
                    apply(self.store, op)
            self.files_committed += len(self.ops)
            self.vectors.clear()
            self.ops.clear()
        self._last = time.monotonic()


# ---- what the reader hands over -------------------------------------------------------------


@dataclass(slots=True)
class CopiedFile:
    """A file whose content another committed file (`from_path`) holds: renamed or copied."""

    source: SourceFile
    from_path: str


WorkItem: TypeAlias = SkippedFile | Touch | CopiedFile | ChunkedFile


@dataclass(slots=True)
class _ReaderFailed:
    error: BaseException


class _ReaderDone:  # handed over after the last file
    pass


_Handed: TypeAlias = WorkItem | _ReaderFailed | _ReaderDone


def held_hash(state: FileState | None) -> str:
    """The content hash the index holds for a file; "" when it holds none (new, or skipped)."""
    return state.content_hash if state is not None and state.skipped is None else ""


def twins(states: Mapping[str, FileState]) -> dict[str, str]:
    """Content hash -> a committed path that holds it: where a renamed or copied file's rows
    can come from."""
    return {st.content_hash: path for path, st in states.items() if st.skipped is None}


def decide(
    got: SourceFile | SkippedFile, held: str, by_hash: Mapping[str, str], chunker: Chunker
) -> WorkItem:
    """What the reader makes of a file read: skipped as it is; a Touch when its content is the
    one the index holds for it (`held`, see held_hash); a CopiedFile when another committed file
    holds it (`by_hash`, see twins); else the file chunked."""
    if isinstance(got, SkippedFile):
        return got
    if held and held == got.content_hash:
        return Touch(got.path, got.size, got.mtime_ns)
    twin = by_hash.get(got.content_hash, got.path)
    if twin != got.path:
        return CopiedFile(got, twin)
    return chunk_file(chunker, got)


def chunk_file(chunker: Chunker, src: SourceFile) -> ChunkedFile:
    return ChunkedFile(
        src.path,
        src.size,
        src.mtime_ns,
        src.content_hash,
        src.language,
        chunker.chunk(src.path, src.text, src.language),
    )


def _read_files(
    discovery: Discovery,
    to_read: list[Candidate],
    states: Mapping[str, FileState],
    by_hash: Mapping[str, str],
    chunker: Chunker,
    handoff: queue.Queue[_Handed],
    stop: threading.Event,
) -> None:
    """Thread: reads, checks and chunks files in order, handing each over. Of the run's state it
    writes only the discovery report (read once the reader is done); its files go through
    `handoff`."""

    def put(item: _Handed) -> bool:
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
            item = decide(got, held_hash(states.get(got.path)), by_hash, chunker)
            if not put(item):
                return
    except BaseException as exc:  # noqa: BLE001  (the main thread re-raises it)
        put(_ReaderFailed(exc))
        return
    put(_ReaderDone())


# ---- from a handed-over file to a store operation -------------------------------------------


@dataclass(slots=True)
class Waiting:
    """A file whose chunks wait for vectors: `need` lists the (key, tokens, model input) of
    those not found in the cache; `missing` the keys still without a vector."""

    file: ChunkedFile
    rows: list[NewChunk]
    need: list[tuple[str, int, ChunkInput]]
    missing: set[str] = field(default_factory=set)


class Preparer:
    """Turns a handed-over file into a store operation, or a file waiting for vectors, and
    counts it into the run's summary and tally. Vectors are looked up in the store's cache and
    in the checkpoint's (embedded, not yet committed)."""

    def __init__(self, indexer: Indexer, embedder: Embedder) -> None:
        self.indexer = indexer
        self._embedder = embedder
        self._chunker: Chunker | None = None  # for copies whose twin changed meanwhile

    def __call__(self, got: WorkItem) -> Waiting | StoreOp:
        summary, tally = self.indexer.summary, self.indexer.tally
        if isinstance(got, SkippedFile):
            tally.bytes_done += got.size
            if got.reason in _CONTENT_SKIPS and got.content_hash is not None:
                summary.files_skipped += 1
                return MarkSkipped(
                    got.path, got.size, got.mtime_ns, got.content_hash, got.reason.name.lower()
                )
            return Remove(got.path)
        if isinstance(got, Touch):
            tally.bytes_done += got.size
            summary.files_touched += 1
            return got
        if isinstance(got, CopiedFile):
            copied = self._copy_rows(got)
            if copied is not None:
                tally.bytes_done += got.source.size
                summary.files_copied += 1
                summary.chunks_reused += len(copied.rows)
                return copied
            # The source changed since the run started: chunk this one after all.
            if self._chunker is None:
                self._chunker = new_chunker(self._embedder, self.indexer.options.target_tokens)
            got = chunk_file(self._chunker, got.source)
        return self._rows(got)

    def _rows(self, got: ChunkedFile) -> Waiting | WriteFile:
        """A chunked file's rows, waiting for the vectors neither cache holds."""
        store, vectors = self.indexer.store, self.indexer.checkpoint.vectors
        self.indexer.tally.bytes_done += got.size
        self.indexer.tally.chunks_seen += len(got.chunks)
        self.indexer.summary.files_indexed += 1
        inputs = [chunk_input(c) for c in got.chunks]
        rows = [
            NewChunk(c.start_line, c.end_line, c.language, c.symbols, c.text, given.key)
            for c, given in zip(got.chunks, inputs)
        ]
        hashes = [r.text_hash for r in rows]
        cached = store.cached_hashes(h for h in hashes if h not in vectors)
        need = [
            (r.text_hash, c.tokens, given)
            for r, c, given in zip(rows, got.chunks, inputs)
            if r.text_hash not in cached and r.text_hash not in vectors
        ]
        self.indexer.summary.chunks_reused += len(rows) - len({h for h, _, _ in need})
        got.chunks = []  # the rows and `need` hold what is still wanted
        if not need:
            return WriteFile(got, rows)
        return Waiting(got, rows, need)

    def _copy_rows(self, got: CopiedFile) -> WriteFile | None:
        """Rows for a renamed or copied file made from its twin's committed rows and vectors,
        or None when the twin no longer has that content.

        The rows keep the twin's text hashes: the vectors re-used are those of the text
        embedded under the twin's path, and the cache key says so (a hash of exactly what the
        model embedded). Embedding the renamed file again would cost as much as indexing it
        anew, which a moved folder makes common; the path line changes the vector (median
        cosine 0.92-0.97 to the new path's on stdlib chunks), so this is an approximation,
        and one that lasts only until the file changes: then its chunks are hashed under
        their own path, miss the cache and are embedded exactly."""
        store, src = self.indexer.store, got.source
        state = store.file_state(got.from_path)
        if state is None or state.content_hash != src.content_hash or state.skipped:
            return None
        rows = store.chunks_of(got.from_path)
        old_vectors = store.get_vectors([r.text_hash for r in rows])
        vectors = self.indexer.checkpoint.vectors
        for r in rows:
            vector = old_vectors.get(r.text_hash)
            if vector is None:
                return None
            # Written again with the rows: a chunk's vector is committed with it, whatever
            # happens to the twin meanwhile.
            vectors.setdefault(r.text_hash, vector)
        item = ChunkedFile(src.path, src.size, src.mtime_ns, src.content_hash, src.language, [])
        return WriteFile(item, rows)


# ---- the local pipeline ---------------------------------------------------------------------


class LocalPipeline:
    """One run's files through a reader thread and the embedder of this process, committed
    with the run's checkpoint."""

    def __init__(self, indexer: Indexer, embedder: Embedder) -> None:
        self.indexer = indexer
        self.embedder = embedder
        self.prepare = Preparer(indexer, embedder)
        self.embed_batch = max(1, indexer.options.embed_batch)
        self.pool_size = max(self.embed_batch, indexer.options.embed_pool)
        self.pool: dict[str, tuple[int, ChunkInput]] = {}  # key -> (tokens, input), to embed
        self.waiting: list[Waiting] = []  # files some of whose vectors are missing

    def run(
        self, discovery: Discovery, to_read: list[Candidate], states: Mapping[str, FileState]
    ) -> None:
        handoff: queue.Queue[_Handed] = queue.Queue(maxsize=_QUEUE_FILES)
        stop = threading.Event()
        chunker = new_chunker(self.embedder, self.indexer.options.target_tokens)
        reader = threading.Thread(
            target=_read_files,
            name="coarch-reader",
            args=(discovery, to_read, states, twins(states), chunker, handoff, stop),
            daemon=True,
        )
        reader.start()
        try:
            self._consume(handoff)
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    handoff.get_nowait()
            reader.join(timeout=10)

    def _consume(self, handoff: queue.Queue[_Handed]) -> None:
        """Main thread: turns handed-over files into committed rows.

        Texts to embed are gathered into a pool of up to `embed_pool`, which is then embedded
        as one generation: sorted by token count and cut into calls of `embed_batch` texts, so
        that each model batch holds texts of about one length (little padding). Nothing more is
        pulled until the generation is done, which bounds what waits in memory. Ctrl-C is
        checked between calls: the call in hand is finished, then what is complete is
        committed."""
        indexer, checkpoint = self.indexer, self.indexer.checkpoint
        checkpoint.begin()
        reader_done = False
        try:
            while not indexer.stop_requested:
                if not reader_done and len(self.pool) < self.pool_size:
                    try:
                        got = handoff.get(timeout=0.05)
                    except queue.Empty:
                        if self.pool and handoff.qsize() == 0:
                            self._run_generation()  # the reader is behind: keep the model busy
                        continue
                    if isinstance(got, _ReaderDone):
                        reader_done = True
                    elif isinstance(got, _ReaderFailed):
                        raise got.error
                    else:
                        self._take(got)
                        indexer.progress("indexing")
                elif self.pool:
                    self._run_generation()
                else:  # reader done, nothing left to embed
                    break
                self._maybe_commit()
            checkpoint.commit()
            indexer.progress("indexing")
        except KeyboardInterrupt:
            # A second Ctrl-C, or one outside the main thread: keep what is consistent.
            with contextlib.suppress(Exception):
                checkpoint.commit()
            indexer.raise_interrupted()
        indexer.check_stop()

    def _take(self, got: WorkItem) -> None:
        op = self.prepare(got)
        if isinstance(op, Waiting):
            for h, tokens, given in op.need:
                self.pool.setdefault(h, (tokens, given))
            op.missing = {h for h, _, _ in op.need}
            op.need = []
            self.waiting.append(op)
        else:
            self.indexer.checkpoint.ops.append(op)

    def _maybe_commit(self) -> None:
        if self.indexer.checkpoint.due():
            self.indexer.checkpoint.commit()
            self.indexer.progress("indexing")

    def _run_generation(self) -> None:
        items = sorted(self.pool.items(), key=lambda kv: -kv[1][0])
        self.pool.clear()
        for i in range(0, len(items), self.embed_batch):
            if self.indexer.stop_requested:
                return
            self._embed(items[i : i + self.embed_batch])
            self._maybe_commit()

    def _embed(self, batch: list[tuple[str, tuple[int, ChunkInput]]]) -> None:
        """One call into the embedder; files whose last missing vector came are ready."""
        indexer, summary = self.indexer, self.indexer.summary
        inputs = [given for _, (_, given) in batch]
        t0 = time.monotonic()
        base = summary.chunks_embedded

        def on_batch(done: int, total: int) -> None:
            indexer.progress("indexing", embedded=base + done)

        vecs = embed_chunks(
            self.embedder, inputs, batch_tokens=indexer.options.batch_tokens, progress=on_batch
        )
        summary.embed_seconds += time.monotonic() - t0
        summary.chunks_embedded += len(batch)
        rows = np.ascontiguousarray(vecs, dtype="<f4")
        vectors = indexer.checkpoint.vectors
        done = set()
        for (h, _), row in zip(batch, rows):
            vectors[h] = row.tobytes()
            done.add(h)
        still: list[Waiting] = []
        for w in self.waiting:
            w.missing -= done
            if w.missing:
                still.append(w)
            else:
                indexer.checkpoint.ops.append(WriteFile(w.file, w.rows))
        self.waiting = still

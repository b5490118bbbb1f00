"""Indexing on a Ray cluster: reading, chunking and embedding as Ray Data `map_batches` over a
pool of actors, each holding one C Embedder; discovery, the store and checkpoints stay on the
driver (the `coarch index` process).

    coarch index --ray PATH...                       # starts a local cluster
    coarch index --ray --ray-address auto PATH...    # joins a running one (or $RAY_ADDRESS)

The driver lists the files to read, as a local run does, and hands them to Ray Data as a dataset
of small jobs (path, stat, the content hash it holds and the text hashes of its current chunks).
Each actor reads a batch of files, chunks them with the same Chunker, embeds the chunks whose
vectors the driver does not already hold (sorted by length, under a MemoryManager limit taken
from the actor's own resources) and returns one result per file. Results stream back in
bounded batches (Ray Data's backpressure) and are committed with the same checkpoints as a
local run: a file's rows with all its vectors, in one transaction.

Faults: a killed worker's batch is run again by Ray Data (the actor is restarted and the task
retried); nothing reaches the store until the driver commits it. A driver killed with kill -9
leaves only whole checkpoints behind, so the same command resumes and embeds nothing twice.

Ray is an optional extra (`pip install 'coarch[ray]'`); this module imports it only when asked
to run on a cluster, so `import coarch` never does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coarch.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    import numpy as np

    from coarch.discovery import Candidate
    from coarch.embedder import Embedder
    from coarch.indexer import Indexer
    from coarch.pipeline import Preparer
    from coarch.store import FileState

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
INSTALL_HINT = "install the extra: pip install 'coarch[ray]' (or pip install 'ray[data]')"
DEFAULT_FILES_PER_BATCH = 16  # files one actor reads, chunks and embeds per call
DEFAULT_WORKER_MEMORY_MB = 1536  # per actor: Ray's own worker (~300 MiB) + model + batches
_LOCAL_OBJECT_STORE = 256 * 2**20  # a local cluster's shared memory for results in flight
# Ray's switch for a single-machine cluster: every server binds to loopback and the node's
# address is 127.0.0.1 (otherwise a loopback address is rewritten to the machine's own IP).
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run uses Ray.

    `address`: a cluster to join ("auto": the one running on this machine; "HOST:PORT"),
    else $RAY_ADDRESS, else a local cluster is started for the run. `workers`: actors in the
    pool (default: as many as the cluster's CPUs hold). Each actor asks for `cpus` CPUs (its
    model threads), `memory_mb` of memory (its MemoryManager limit) and `gpus` GPUs (it embeds
    on CUDA when it gets one)."""

    address: str | None = None
    workers: int | None = None
    cpus: float = 1.0
    memory_mb: int = DEFAULT_WORKER_MEMORY_MB
    gpus: float = 0.0
    files_per_batch: int = DEFAULT_FILES_PER_BATCH

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"Ray workers must be at least 1, not {self.workers}")
        if self.cpus <= 0 or self.memory_mb <= 0 or self.gpus < 0 or self.files_per_batch < 1:
            raise ConfigError(
                "Ray worker resources must be positive (cpus, memory, files per"
                " batch) and GPUs 0 or more"
            )


def import_ray(options: RayOptions | None = None) -> Any:
    """The `ray` module with Ray Data, or ConfigError (exit 2) saying how to install it. With
    `options` whose cluster is this machine alone (started here, or at a loopback address),
    Ray is first set to keep every server and address on loopback: it reads that switch once,
    when it is imported."""
    if options is not None and _single_machine(options):
        os.environ.setdefault(_SINGLE_MACHINE_ENV, "0")
    try:
        import ray
        import ray.data  # the pipeline needs it: fail here, not mid-run
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs Ray, which is not installed ({exc})", hint=INSTALL_HINT
        ) from None
    return ray


@contextlib.contextmanager
def cluster(options: RayOptions) -> Iterator[Any]:
    """Connects to the cluster of `options` (or starts a local one) for the duration of the
    block, then disconnects (a local cluster stops with it). Yields the `ray` module."""
    ray = import_ray(options)
    if ray.is_initialized():  # the caller's own connection: keep it
        yield ray
        return
    connect(ray, options)
    try:
        yield ray
    finally:
        ray.shutdown()


def connect(ray: Any, options: RayOptions) -> None:
    """ray.init for `options`: join the address given (or $RAY_ADDRESS), else start a local
    cluster bound to loopback with a small object store and no dashboard."""
    # Ray reports usage to its authors unless told not to; coarch talks to no one.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own notes (deprecations, start-up banners) would interleave with coarch's
    # progress on stderr; its errors still show, and coarch reports failures itself.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    address = _address(options)
    common: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            bootstrap = _bootstrap_address(ray, address)
            log.info("joining the Ray cluster at %s", bootstrap)
            _check_reachable(bootstrap)
            ray.init(address=address, **common)
        else:
            log.info("starting a local Ray cluster")
            ray.init(
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                object_store_memory=_LOCAL_OBJECT_STORE,
                **common,
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or "a local cluster"
        raise ConfigError(
            f"cannot connect to Ray ({where}): {_first_line(exc)}",
            hint="check --ray-address or $RAY_ADDRESS (`auto` joins the cluster"
            " `ray start` runs on this machine)",
        ) from None
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _bootstrap_address(ray: Any, address: str) -> str:
    """HOST:PORT of the cluster's head: `address` itself, or for "auto" the one `ray start`
    recorded on this machine (ConnectionError when there is none)."""
    if address != "auto":
        return address
    from ray._private.services import find_bootstrap_address

    found = find_bootstrap_address(None)
    if not found:
        raise ConnectionError(
            "no running cluster found on this machine (start one with `ray start --head`)"
        )
    return str(found)


def _address(options: RayOptions) -> str | None:
    return options.address or os.environ.get(ADDRESS_ENV) or None


def _single_machine(options: RayOptions) -> bool:
    address = _address(options)
    return address is None or (address != "auto" and _is_loopback(address))


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConnectionError unless the head's port answers: ray.init itself retries an unreachable
    address for minutes."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- what travels -----------------------------------------------------------------------------


def file_job(
    path: str, size: int, mtime_ns: int, held_hash: str, held_chunks: list[str]
) -> dict[str, Any]:
    """One file for a worker, as a row of plain columns (Arrow stores them as they are): where
    it is, its stat at listing, the content hash the index holds for it ("" when new) and the
    text hashes of the chunks the index holds for it (their vectors are in the driver's cache:
    not embedded again)."""
    return {
        "path": path,
        "size": size,
        "mtime_ns": mtime_ns,
        "held_hash": held_hash,
        "held_chunks": held_chunks,
    }


@dataclass(slots=True)
class FileResult:
    """What a worker made of one file job: `item` is what the local reader thread hands over
    (a SkippedFile, a touched, copied or chunked file), `vectors` the text hash -> float32
    bytes of the chunks it embedded; the rest is accounting."""

    item: Any
    vectors: dict[str, bytes]
    embedded: int
    invalid_utf8: bool
    worker: str
    peak_rss: int
    limit_mb: float


@dataclass(frozen=True)
class WorkerSettings:
    """What every actor of a run is built with: the root as the workers see it, the model and
    precision of the plan, discovery and chunking settings."""

    root: str
    model_path: str
    precision: str
    max_file_size: int
    target_tokens: int | None
    batch_tokens: int | None
    profile: str | None
    by_hash: dict[str, str] = field(default_factory=dict)  # committed content hash -> path


class IndexWorker:
    """A Ray Data actor: one C Embedder under a MemoryManager whose limit is the memory Ray gave
    this actor; threads from its CPUs; CUDA when it holds a GPU. Called with a batch of file jobs,
    returns one FileResult per job."""

    def __init__(self, settings: WorkerSettings) -> None:
        import ray

        from coarch.discovery import Discovery, DiscoveryOptions, DiscoveryReport
        from coarch.embedder import Embedder
        from coarch.memory import MemoryManager
        from coarch.pipeline import new_chunker

        given = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call, unused-ignore]
        threads = max(1, int(given.get("CPU", 1)))
        memory_bytes = given.get("memory")
        self.limit_mb = float(memory_bytes) / 2**20 if memory_bytes else 0.0
        device = "cuda" if given.get("GPU", 0) > 0 else "cpu"
        self.memory = MemoryManager(limit_mb=self.limit_mb or None, profile=settings.profile)
        self.limit_mb = float(self.memory.limit_mb)
        self.embedder = Embedder(
            settings.model_path,
            threads=threads,
            memory=self.memory,
            device=device,
            precision=settings.precision,
        )
        self.chunker = new_chunker(self.embedder, settings.target_tokens)
        self.report = DiscoveryReport()
        self.discovery = Discovery(
            settings.root,
            DiscoveryOptions(max_file_size=settings.max_file_size, use_git=False),
            self.report,
        )
        self.settings = settings
        self.name = f"{ray.get_runtime_context().get_node_id()[:8]}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        from coarch.chunk_vectors import chunk_input
        from coarch.progress import peak_rss

        paths = [str(p) for p in batch["path"]]
        items, invalid = [], []
        for path, size, mtime_ns, held_hash in zip(
            paths, batch["size"], batch["mtime_ns"], batch["held_hash"]
        ):
            before = self.report.invalid_utf8
            items.append(self._read(path, int(size), int(mtime_ns), str(held_hash)))
            invalid.append(self.report.invalid_utf8 > before)
        held = [set(h) for h in batch["held_chunks"]]
        vectors, embedded = self._embed(paths, items, held)
        peak = peak_rss()
        results = []
        for path, item, bad in zip(paths, items, invalid):
            own = {}
            for chunk in getattr(item, "chunks", ()):
                key = chunk_input(chunk).key
                if key in vectors:
                    own[key] = vectors[key]
            results.append(
                FileResult(item, own, embedded.get(path, 0), bad, self.name, peak, self.limit_mb)
            )
        out = np.empty(len(results), dtype=object)
        out[:] = results
        return {"result": out}

    def _read(self, path: str, size: int, mtime_ns: int, held_hash: str) -> Any:
        """The local reader thread's decision for one file (coarch.pipeline.decide), made
        here: skipped, touched (same content as held), copied (content of another committed
        file) or chunked."""
        from coarch.discovery import Candidate
        from coarch.pipeline import decide

        got = self.discovery.read(Candidate(path, size, mtime_ns))
        return decide(got, held_hash, self.settings.by_hash, self.chunker)

    def _embed(
        self, paths: list[str], items: list[Any], held: list[set[str]]
    ) -> tuple[dict[str, bytes], dict[str, int]]:
        """Vectors of the batch's chunks the driver does not hold, embedded as one pool sorted
        by length (little padding), and how many each file needed."""
        import numpy as np

        from coarch.chunk_vectors import ChunkInput, chunk_input, embed_chunks

        pool: dict[str, tuple[int, ChunkInput]] = {}
        per_file: dict[str, int] = {}
        for path, item, known in zip(paths, items, held):
            for chunk in getattr(item, "chunks", ()):
                given = chunk_input(chunk)
                key = given.key
                if key not in known and key not in pool:
                    pool[key] = (chunk.tokens, given)
                    per_file[path] = per_file.get(path, 0) + 1
        if not pool:
            return {}, per_file
        ordered = sorted(pool.items(), key=lambda kv: -kv[1][0])
        rows = embed_chunks(
            self.embedder, [given for _, (_, given) in ordered], self.settings.batch_tokens
        )
        rows = np.ascontiguousarray(rows, dtype="<f4")
        return {key: row.tobytes() for (key, _), row in zip(ordered, rows)}, per_file


# ---- the driver's side -----------------------------------------------------------------------


class RayPipeline:
    """Replaces the local pipeline (coarch.pipeline.LocalPipeline) of one Indexer run: the
    files to read go through Ray Data, the results are committed here with the Indexer's
    checkpoint."""

    def __init__(self, options: RayOptions) -> None:
        self.options = options

    def run(
        self,
        indexer: Indexer,
        to_read: list[Candidate],
        states: dict[str, FileState],
        embedder: Embedder,
    ) -> None:
        from coarch.pipeline import Preparer

        ray = import_ray(self.options)
        if not ray.is_initialized():
            connect(ray, self.options)
        dataset = self._dataset(ray, indexer, to_read, states)
        checkpoint, prepare = indexer.checkpoint, Preparer(indexer, embedder)
        checkpoint.begin()
        workers: dict[str, dict[str, Any]] = {}
        t0 = time.monotonic()
        try:
            for batch in dataset.iter_batches(
                batch_size=None, batch_format="numpy", prefetch_batches=1
            ):
                for result in batch["result"]:
                    self._take(indexer, prepare, result, workers, embedder)
                    indexer.summary.embed_seconds = time.monotonic() - t0
                    if checkpoint.due():
                        checkpoint.commit()
                    indexer.progress("indexing")
                if indexer.stop_requested:
                    break
            checkpoint.commit()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                checkpoint.commit()
            indexer.raise_interrupted()
        except ray.exceptions.RayError as exc:
            with contextlib.suppress(Exception):
                checkpoint.commit()
            raise ClusterError(
                f"the Ray cluster failed the run: {_first_line(exc)}",
                hint="what was committed is kept: run the same command again to resume",
            ) from exc
        finally:
            indexer.summary.embed_seconds = time.monotonic() - t0
            indexer.summary.workers = sorted(workers.values(), key=lambda w: w["worker"])
        indexer.progress("indexing")
        indexer.check_stop()

    def _dataset(
        self, ray: Any, indexer: Indexer, to_read: list[Candidate], states: dict[str, FileState]
    ) -> Any:
        """The run as a Ray Data pipeline: file jobs, one block per batch, mapped by a pool of
        IndexWorker actors."""
        from coarch.pipeline import held_hash, twins

        opts, plan, store = self.options, indexer.plan, indexer.store
        jobs = []
        for c in to_read:
            held = states.get(c.path)
            known = [r.text_hash for r in store.chunks_of(c.path)] if held else []
            jobs.append(file_job(c.path, c.size, c.mtime_ns, held_hash(held), known))
        settings = WorkerSettings(
            root=str(indexer.root),
            model_path=str(plan.model_path),
            precision=plan.precision,
            max_file_size=indexer.options.max_file_size,
            target_tokens=indexer.options.target_tokens,
            batch_tokens=indexer.options.batch_tokens,
            profile=indexer.options.profile,
            by_hash=twins(states),
        )
        workers = opts.workers or self._workers_that_fit(ray)
        # Small runs are cut finer, so that every worker gets a share.
        per_batch = max(1, min(opts.files_per_batch, math.ceil(len(jobs) / (2 * workers))))
        blocks = max(1, math.ceil(len(jobs) / per_batch))
        workers = min(workers, blocks)
        log.info(
            "Ray: %d files in %d batches over %d workers (%g CPU, %d MiB%s each)",
            len(jobs),
            blocks,
            workers,
            opts.cpus,
            opts.memory_mb,
            f", {opts.gpus:g} GPU" if opts.gpus else "",
        )
        return ray.data.from_items(jobs, override_num_blocks=blocks).map_batches(
            IndexWorker,
            fn_constructor_kwargs={"settings": settings},
            batch_size=per_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=opts.cpus,
            num_gpus=opts.gpus or None,
            memory=opts.memory_mb * 2**20,
        )

    def _workers_that_fit(self, ray: Any) -> int:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        return max(1, int(cpus // self.options.cpus))

    @staticmethod
    def _take(
        indexer: Indexer,
        prepare: Preparer,
        result: FileResult,
        workers: dict[str, dict[str, Any]],
        embedder: Embedder,
    ) -> None:
        """One file's result into the next checkpoint, through the local run's own decision
        (coarch.pipeline.Preparer: cache look-up, copies, skips). A copy whose twin changed
        meanwhile is chunked and embedded here, as a local run does."""
        import numpy as np

        from coarch.chunk_vectors import embed_chunks
        from coarch.discovery import SkippedFile
        from coarch.pipeline import Waiting, WriteFile

        summary, checkpoint = indexer.summary, indexer.checkpoint
        summary.chunks_embedded += result.embedded
        checkpoint.vectors.update(result.vectors)
        seen = workers.setdefault(
            result.worker,
            {
                "worker": result.worker,
                "peak_rss": 0,
                "limit_mb": result.limit_mb,
                "files": 0,
                "chunks_embedded": 0,
            },
        )
        seen["peak_rss"] = max(seen["peak_rss"], result.peak_rss)
        seen["files"] += 1
        seen["chunks_embedded"] += result.embedded
        item = result.item
        if isinstance(item, SkippedFile):
            indexer.report.skip(item.reason, item.path)
        indexer.report.invalid_utf8 += result.invalid_utf8
        op = prepare(item)
        # `prepare` counts every chunk whose vector it finds as re-used; those the worker has
        # just embedded were not.
        summary.chunks_reused -= result.embedded
        if isinstance(op, Waiting):
            inputs = [given for _, _, given in op.need]
            rows = np.ascontiguousarray(embed_chunks(embedder, inputs), dtype="<f4")
            for (key, _, _), row in zip(op.need, rows):
                checkpoint.vectors[key] = row.tobytes()
            summary.chunks_embedded += len(inputs)
            op = WriteFile(op.file, op.rows)
        checkpoint.ops.append(op)

"""The FAISS file `vectors.faiss`: derived from SQLite, written atomically, checked for staleness.

Default layout: IndexIDMap2 over IndexFlatIP (exact inner product = cosine on L2-normalised
rows), ids = chunks.id. It is written by streaming rows out of SQLite straight into FAISS's
serialisation format (coarch.faiss_format), so writing it holds one batch of vectors in memory,
not all of them. Above `ivf_threshold` chunks an IndexIVFFlat (ids = chunk ids) is trained and
built with FAISS itself.

The file records what it covers through meta keys in SQLite, written after the file is in place:
`faiss_generation` (the store's `generation` when the file was written), `faiss_chunk_count`,
`faiss_max_chunk_id`, `faiss_kind`, `faiss_checksum` ("<size>:<crc32>" of the bytes as they were
written). A file whose generation differs from the store's is stale; one that is missing,
truncated, unreadable or whose bytes no longer match the checksum is corrupt and rebuilt (FAISS
reads damaged vectors without complaint and answers with absurd scores). A crash between the
rename and the meta update leaves the old generation in meta: the file is then treated as stale
and rewritten. This module owns these rules, for the writer (`freshness`, `sync`) and for
readers: search asks a `VectorIndex` for the nearest chunks, which uses the file as far as it
is sound and covers the committed state, and scores what it does not cover from the vectors in
SQLite.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coarch import faiss_format
from coarch.location import FAISS_FILE
from coarch.store import Store

if TYPE_CHECKING:
    from coarch.filters import Filters

log = logging.getLogger(__name__)

DEFAULT_IVF_THRESHOLD = 200_000
IVF_THRESHOLD_ENV = "COARCH_IVF_THRESHOLD"


@dataclass(frozen=True)
class SyncResult:
    action: str  # "fresh" (nothing to do), "written"
    kind: str  # "flat" or "ivf"
    chunks: int
    reason: str = ""


def ivf_threshold() -> int:
    raw = os.environ.get(IVF_THRESHOLD_ENV)
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            log.warning("ignoring %s=%r: not an integer", IVF_THRESHOLD_ENV, raw)
    return DEFAULT_IVF_THRESHOLD


def faiss_path(index_dir: Path) -> Path:
    return Path(index_dir) / FAISS_FILE


def freshness(store: Store, index_dir: Path) -> str | None:
    """None when the FAISS file matches the store's committed state, else why not: "missing",
    "stale", "corrupt", or "unrecorded" (written before checksums were recorded: usable, but
    rewritten by the next `coarch index`)."""
    meta = store.meta()
    path = faiss_path(index_dir)
    if not path.is_file():
        return "missing"
    if not _covers_committed(meta):
        return "stale"
    try:
        count = int(meta.get("faiss_chunk_count", "-1"))
        dim = int(meta.get("dim", "0"))
    except ValueError:
        return "unrecorded"
    if meta.get("faiss_kind") == "flat" and not faiss_format.flat_file_ok(path, dim, count):
        return "corrupt"
    return check_file(path, meta)


def _covers_committed(meta: Mapping[str, str]) -> bool:
    """Whether the file was written at the store's current generation (covers every chunk)."""
    return meta.get("faiss_generation") == meta.get("generation")


def check_file(path: Path, meta: Mapping[str, str]) -> str | None:
    """None when the file's size and checksum are those recorded in `meta`; "corrupt" when
    not, "missing" when it cannot be read, "unrecorded" when meta holds no checksum. Reads the
    whole file: call it once per file opened."""
    recorded = meta.get("faiss_checksum")
    if not recorded:
        return "unrecorded"
    try:
        actual = file_checksum(path)
    except OSError:
        return "missing"
    if actual != recorded:
        log.info("%s does not match its checksum (%s, recorded %s)", path, actual, recorded)
        return "corrupt"
    return None


def file_checksum(path: Path) -> str:
    """ "<size>:<crc32>" of a file, read in 1 MiB blocks."""
    crc, size = 0, 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return _checksum_text(size, crc)


def _checksum_text(size: int, crc: int) -> str:
    return f"{size}:{crc:08x}"


class _ChecksummedWriter:
    """A binary file wrapper that keeps the size and crc32 of what goes through it."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.size = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        return int(self._fh.write(data))

    @property
    def checksum(self) -> str:
        return _checksum_text(self.size, self.crc)


def sync(
    store: Store,
    index_dir: Path,
    dim: int,
    *,
    threshold: int | None = None,
    force: bool = False,
    checked: tuple[str | None] | None = None,
) -> SyncResult:
    """Makes vectors.faiss match the store's committed chunks: nothing when it is fresh,
    otherwise rewrites it from SQLite (atomically) and records what it covers. `checked` holds
    freshness()'s answer when the caller has just asked (it reads the whole file). The caller
    holds the index lock (temp files of a killed writer are removed here)."""
    index_dir = Path(index_dir)
    if force:
        reason: str | None = "forced"
    elif checked is not None:
        (reason,) = checked
    else:
        reason = freshness(store, index_dir)
    count = store.chunk_count()
    kind = "ivf" if count >= (threshold or ivf_threshold()) else "flat"
    if reason is None:
        return SyncResult("fresh", store.get_meta("faiss_kind") or kind, count)
    log.info("writing %s (%s, %d vectors, %s)", FAISS_FILE, kind, count, reason)
    for leftover in index_dir.glob(".vectors-*.tmp"):  # from a writer killed mid-write
        with contextlib.suppress(OSError):
            leftover.unlink()
    with store.read_snapshot():
        generation = store.generation()
        count = store.chunk_count()
        max_id = store.max_chunk_id()
        target = faiss_path(index_dir)
        if kind == "flat":
            checksum = _atomic_write(
                target,
                lambda fh: faiss_format.write_flat(fh, dim, count, store.iter_chunk_vectors()),
            )
        else:
            index = _build_ivf(store, dim, count)
            checksum = _atomic_write_index(target, index)
    with store.transaction():
        store.set_meta("faiss_checksum", checksum)
        store.set_meta("faiss_generation", generation)
        store.set_meta("faiss_chunk_count", count)
        store.set_meta("faiss_max_chunk_id", max_id)
        store.set_meta("faiss_kind", kind)
    return SyncResult("written", kind, count, reason or "")


def _build_ivf(store: Store, dim: int, count: int) -> Any:
    import faiss

    nlist = max(1, int(4 * math.sqrt(count)))
    sample_size = min(count, nlist * 64)
    # Train on an evenly spaced sample (the stream is in id order, i.e. file order).
    step = max(1, count // sample_size)
    parts: list[np.ndarray] = []
    seen = 0
    for _, vecs in store.iter_chunk_vectors():
        take = [i for i in range(len(vecs)) if (seen + i) % step == 0]
        parts.append(vecs[take])
        seen += len(vecs)
    sample = np.ascontiguousarray(np.concatenate(parts)[:sample_size])
    del parts
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    del sample
    for ids, vecs in store.iter_chunk_vectors():
        index.add_with_ids(np.ascontiguousarray(vecs), ids)
    index.nprobe = max(1, min(nlist, 16))
    return index


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[tuple[int, str]]:
    """(fd, path) of a temp file beside `target`, renamed over `target` when the block ends
    well (the block writes and fsyncs it; it owns the fd) and removed when it fails; the folder
    is fsynced after the rename."""
    fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=target.parent)
    _chmod_like_new_file(fd)
    try:
        yield fd, tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _atomic_write(target: Path, write: Any) -> str:
    """Writes through `write(fh)` into a temp file beside `target`, fsyncs it and renames it
    over `target`. Returns the checksum of the bytes written."""
    with _replacing(target) as (fd, _), os.fdopen(fd, "wb", buffering=1 << 20) as fh:
        out = _ChecksummedWriter(fh)
        write(out)
        fh.flush()
        os.fsync(fh.fileno())
    return out.checksum


def _atomic_write_index(target: Path, index: Any) -> str:
    """As _atomic_write for an index FAISS serialises itself; the checksum is read back from
    the temp file before the rename."""
    import faiss

    with _replacing(target) as (fd, tmp):
        os.close(fd)
        faiss.write_index(index, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        checksum = file_checksum(Path(tmp))
    return checksum


def _chmod_like_new_file(fd: int) -> None:
    """mkstemp creates 0600; the index's other files follow the umask, so this one does too."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~umask)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(index_dir: Path) -> Any:
    """Reads vectors.faiss for read-only use (see load_file)."""
    return load_file(faiss_path(index_dir))


def load_file(path: Path) -> Any:
    """Opens a FAISS file read-only, memory-mapping the vectors where the index type allows
    (flat codes: IO_FLAG_MMAP_IFC; IVF lists: IO_FLAG_MMAP), else reading it whole."""
    import faiss

    read_only = getattr(faiss, "IO_FLAG_READ_ONLY", 0)
    attempts = [getattr(faiss, "IO_FLAG_MMAP_IFC", 0), getattr(faiss, "IO_FLAG_MMAP", 0)]
    for flag in attempts:
        if not flag:
            continue
        try:
            return faiss.read_index(str(path), flag | read_only)
        except RuntimeError as exc:
            log.debug("faiss mmap flag %#x refused for %s: %s", flag, path, exc)
    return faiss.read_index(str(path))


def build_in_memory(store: Store, dim: int) -> Any:
    """An exact index of the store's committed chunks, built in memory (no file written)."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    with store.read_snapshot():
        for ids, vecs in store.iter_chunk_vectors():
            index.add_with_ids(np.ascontiguousarray(vecs), ids)
    return index


def open_for_search(store: Store, index_dir: Path) -> Any:
    """One FAISS index of the store's whole committed state: the file when it covers it (the
    rule of VectorIndex), else (an indexer is running, or the file is missing or damaged) one
    built in memory from SQLite. Never writes: readers may run beside an indexer."""
    dim = int(store.get_meta("dim") or 0)
    index, uncovered_after = VectorIndex(Path(index_dir)).current(store, dim)
    if index is not None and uncovered_after is None:
        return index
    log.info("%s does not cover the index; using vectors from SQLite", FAISS_FILE)
    return build_in_memory(store, dim)


# ---- reading: the current vector index ------------------------------------------------------

# Vectors read per batch when scoring chunks the FAISS file does not cover.
TAIL_BATCH = 4096


class VectorIndex:
    """The FAISS file of one index folder as a reader uses it: memory-mapped, checked once per
    file opened, reopened when a newer one is put in place, and searched together with the
    chunks it does not cover yet (an indexer is running), whose vectors are read from SQLite.
    Not thread-safe."""

    def __init__(self, index_dir: Path) -> None:
        self.path = faiss_path(index_dir)
        self._index: Any = None
        self._key: tuple[object, ...] | None = None
        # A file found in place of the open one that failed the checksum its meta records.
        self._refused_key: tuple[object, ...] | None = None

    def forget(self) -> None:
        """Drops the open file (the next use reopens it)."""
        self._index, self._key, self._refused_key = None, None, None

    def current(self, store: Store, dim: int) -> tuple[Any, int | None]:
        """(FAISS index or None, id after which chunks must be scored from SQLite, or None
        when the index covers every committed chunk).

        A missing, damaged or unreadable file, or one of another width than `dim`, means every
        chunk is scored from SQLite (correct, slower)."""
        meta = store.meta()
        try:
            st = self.path.stat()
        except OSError:
            self.forget()
            return None, 0
        key = (meta.get("faiss_generation"), meta.get("faiss_checksum"), st.st_mtime_ns, st.st_ino)
        if self._key != key and not self._keeps_open_file(key, meta):
            self._index, self._key = None, key
            self._index = self._open(meta, dim)
        if self._index is None:
            return None, 0
        if _covers_committed(meta):
            return self._index, None
        try:
            covered = int(meta.get("faiss_max_chunk_id") or -1)
        except ValueError:
            covered = -1
        if covered < 0:
            return None, 0
        return self._index, covered

    def _keeps_open_file(self, key: tuple[object, ...], meta: Mapping[str, str]) -> bool:
        """Whether the file open now still serves `meta` although another file is in its
        place: a writer renames its new file in place first and commits the new file's
        checksum a moment later (vectors.sync). A reader between the two sees the old meta and
        the new file, which fails the old checksum; the file it has mapped is still the one
        that meta describes (a rename leaves the old inode's bytes as they were; a file
        rewritten in place does not, hence the inode test). The key is kept, so the next search
        looks again."""
        old = self._key
        if self._index is None or old is None or old[:2] != key[:2] or old[3] == key[3]:
            return False
        if key == self._refused_key:
            return True  # checked already: reading the whole file again would only cost
        if check_file(self.path, meta) not in ("corrupt", "missing"):
            return False  # the same bytes under a new inode or mtime: reopen it
        log.debug("%s replaced, its checksum not committed yet: keeping the open one", self.path)
        self._refused_key = key
        return True

    def _open(self, meta: Mapping[str, str], dim: int) -> Any:
        # Checked once per file opened: FAISS reads damaged bytes without complaint.
        if check_file(self.path, meta) in ("corrupt", "missing"):
            log.warning(
                "%s is damaged: using the vectors in SQLite (run `coarch index` to rewrite it)",
                self.path,
            )
            return None
        try:
            index = load_file(self.path)
        except RuntimeError as exc:
            log.warning("cannot read %s (%s): scanning vectors from SQLite", self.path, exc)
            return None
        if index.d != dim:
            log.warning("%s has width %d, index %d: ignoring it", self.path, index.d, dim)
            return None
        return index

    def nearest(
        self, store: Store, vector: np.ndarray, n: int, filters: Filters
    ) -> dict[int, float]:
        """The best `n` committed chunks that pass the filters, by inner product with
        `vector` (shape (1, dim) float32, L2-normalised): {chunk id: score}. Only allowed ids
        are scored, so the n found all pass the filters."""
        lookup = self.lookup(store, int(vector.shape[1]), filters)
        return lookup.finish(store, vector, n, lookup.search_file(vector, n))

    def lookup(self, store: Store, dim: int, filters: Filters) -> NearestLookup:
        """What a nearest-chunks query needs from SQLite before its vector is known (the
        file in use, the chunks it does not cover, the ids the filters allow): a search can
        then embed its query and scan the file in another thread (NearestLookup)."""
        index, uncovered_after = self.current(store, dim)
        allowed: np.ndarray | None = None
        if filters.active:
            allowed = store.allowed_ids(filters)
        if index is not None and index.ntotal == 0:
            index = None
        return NearestLookup(index, uncovered_after, allowed, filters)


@dataclass(frozen=True)
class NearestLookup:
    """One nearest-chunks query in two steps: `search_file` touches only FAISS (any thread,
    the GIL released during the scan); `finish` reads SQLite (the store's thread) to drop
    chunks deleted since a stale file was written and to score the chunks it does not cover."""

    index: Any  # the FAISS index in use, or None (every chunk is scored from SQLite)
    uncovered_after: int | None  # chunks with a greater id are not in the file; None: all are
    allowed: np.ndarray | None  # ids the filters allow (int64), None: no filter
    filters: Filters

    @property
    def nothing_allowed(self) -> bool:
        return self.allowed is not None and self.allowed.size == 0

    def search_file(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The file's best min(n, its size) allowed chunks, deleted ones included when the
        file is stale (finish drops them)."""
        if self.index is None or self.nothing_allowed:
            return []
        return _file_search(self.index, vector, min(n, int(self.index.ntotal)), self.allowed)

    def finish(
        self, store: Store, vector: np.ndarray, n: int, file_hits: list[tuple[int, float]]
    ) -> dict[int, float]:
        """{chunk id: score} of the best `n` committed chunks, from `file_hits` (search_file's
        answer) and SQLite."""
        if self.nothing_allowed:
            return {}
        found: dict[int, float] = {}
        if self.index is not None:
            stale = self.uncovered_after is not None and self.allowed is None
            found.update(self._live(store, vector, n, file_hits) if stale else file_hits)
        if self.uncovered_after is not None:
            for cid, score in _scan(store, vector, n, self.uncovered_after, self.filters):
                if score > found.get(cid, -np.inf):
                    found[cid] = score
        return found

    def _live(
        self, store: Store, vector: np.ndarray, n: int, hits: list[tuple[int, float]]
    ) -> list[tuple[int, float]]:
        """The best n live chunks of a stale file, which may hold chunks deleted since it was
        written: those are dropped, fetching deeper until n live ones are found (a filter's
        id selector, built from SQLite, already leaves them out)."""
        total = int(self.index.ntotal)
        want = min(n, total)
        while True:
            live = store.live_ids([cid for cid, _ in hits])
            kept = [(cid, s) for cid, s in hits if cid in live]
            if len(kept) >= n or want >= total:
                return kept
            want = min(total, want * 4)
            hits = _file_search(self.index, vector, want, None)


@contextlib.contextmanager
def _faiss_single_thread() -> Iterator[None]:
    """One query is too small to share: OpenMP start-up costs more than the scan (measured
    ~30 ms with 2 threads against ~3 ms with 1 on a 50,000-row flat index)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _file_search(
    index: Any, vector: np.ndarray, want: int, allowed: np.ndarray | None
) -> list[tuple[int, float]]:
    """The best `want` chunks of the FAISS file by inner product with `vector`, only the
    `allowed` ids when given."""
    import faiss

    params: Any = None
    selector: Any = None  # held here for the search: params.sel does not keep it alive
    if allowed is not None:
        selector = faiss.IDSelectorBatch(allowed)
        inner = faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = inner.nprobe
        else:
            params = faiss.SearchParameters()
        params.sel = selector
    # shape: vector (1, dim) float32 -> scores, ids (1, want)
    with _faiss_single_thread():
        if params is None:
            scores, ids = index.search(vector, want)
        else:
            scores, ids = index.search(vector, want, params=params)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]


def _scan(
    store: Store, vector: np.ndarray, n: int, after_id: int, filters: Filters
) -> list[tuple[int, float]]:
    """Scores the committed chunks with id > after_id (not in the FAISS file yet) from their
    vectors in SQLite, one batch at a time: memory stays at one batch plus the best n."""
    best_ids = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float32)
    query = vector[0]
    for ids, vecs in store.vectors_after(after_id, filters, TAIL_BATCH):
        if vecs.shape[1] != query.shape[0]:
            continue
        scores = vecs @ query
        best_ids = np.concatenate([best_ids, ids])
        best_scores = np.concatenate([best_scores, scores.astype(np.float32)])
        if best_ids.size > n:
            keep = np.argpartition(-best_scores, n)[:n]
            best_ids, best_scores = best_ids[keep], best_scores[keep]
    return [(int(i), float(s)) for i, s in zip(best_ids, best_scores)]

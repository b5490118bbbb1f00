"""The FAISS file `vectors.faiss`: derived from SQLite, written atomically, checked for staleness.

Default layout: IndexIDMap2 over IndexFlatIP (exact inner product = cosine on L2-normalised
rows), ids = chunks.id. It is written by streaming rows out of SQLite straight into FAISS's
serialisation format, so writing it holds one batch of vectors in memory, not all of them
(the format is pinned by a test that compares the bytes with faiss.write_index). Above
`ivf_threshold` chunks an IndexIVFFlat (ids = chunk ids) is trained and built with FAISS itself.

The file records what it covers through meta keys in SQLite, written after the file is in place:
`faiss_generation` (the store's `generation` when the file was written), `faiss_chunk_count`,
`faiss_max_chunk_id`, `faiss_kind`, `faiss_checksum` ("<size>:<crc32>" of the bytes as they were
written). A file whose generation differs from the store's is stale; one that is missing,
truncated, unreadable or whose bytes no longer match the checksum is corrupt and rebuilt (FAISS
reads damaged vectors without complaint and answers with absurd scores). A crash between the
rename and the meta update leaves the old generation in meta: the file is then treated as stale
and rewritten. This module owns the rule: search asks `check_file` before using a file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coarch.location import FAISS_FILE
from coarch.store import Store

log = logging.getLogger(__name__)

DEFAULT_IVF_THRESHOLD = 200_000
IVF_THRESHOLD_ENV = "COARCH_IVF_THRESHOLD"

# FAISS serialisation constants (faiss/impl/index_write.cpp).
_FOURCC_IDMAP2 = b"IxM2"
_FOURCC_FLAT_IP = b"IxFI"
_DUMMY = 1 << 20
_METRIC_INNER_PRODUCT = 0
_HEADER = struct.Struct("<iqqq?i")  # d, ntotal, dummy, dummy, is_trained, metric_type


@dataclass(frozen=True)
class SyncResult:
    action: str          # "fresh" (nothing to do), "written"
    kind: str            # "flat" or "ivf"
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


def _flat_size(dim: int, count: int) -> int:
    """Exact byte size of an IndexIDMap2(IndexFlatIP) file with `count` rows of `dim`."""
    header = 4 + _HEADER.size
    return 2 * header + 8 + 4 * dim * count + 8 + 8 * count


def freshness(store: Store, index_dir: Path) -> str | None:
    """None when the FAISS file matches the store's committed state, else why not: "missing",
    "stale", "corrupt", or "unrecorded" (written before checksums were recorded: usable, but
    rewritten by the next `coarch index`)."""
    meta = store.meta()
    path = faiss_path(index_dir)
    if not path.is_file():
        return "missing"
    if meta.get("faiss_generation") != meta.get("generation"):
        return "stale"
    try:
        count = int(meta.get("faiss_chunk_count", "-1"))
        dim = int(meta.get("dim", "0"))
    except ValueError:
        return "unrecorded"
    flat_ok = path.stat().st_size == _flat_size(dim, count) and _flat_header_ok(path, dim, count)
    if meta.get("faiss_kind") == "flat" and not flat_ok:
        return "corrupt"
    return check_file(path, meta)


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
    """"<size>:<crc32>" of a file, read in 1 MiB blocks."""
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


def _flat_header_ok(path: Path, dim: int, count: int) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4 + _HEADER.size)
    except OSError:
        return False
    if len(head) != 4 + _HEADER.size or head[:4] != _FOURCC_IDMAP2:
        return False
    d, ntotal, _, _, _, metric = _HEADER.unpack(head[4:])
    return bool(d == dim and ntotal == count and metric == _METRIC_INNER_PRODUCT)


def sync(store: Store, index_dir: Path, dim: int, *, threshold: int | None = None,
         force: bool = False, checked: tuple[str | None] | None = None) -> SyncResult:
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
            checksum = _atomic_write(target, lambda fh: _write_flat(store, fh, dim, count))
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


def _write_flat(store: Store, fh: Any, dim: int, count: int) -> None:
    """Streams IndexIDMap2(IndexFlatIP) in FAISS's format: headers, codes, then ids."""
    header = _HEADER.pack(dim, count, _DUMMY, _DUMMY, True, _METRIC_INNER_PRODUCT)
    fh.write(_FOURCC_IDMAP2 + header + _FOURCC_FLAT_IP + header)
    fh.write(struct.pack("<Q", count * dim))
    id_parts: list[np.ndarray] = []
    written = 0
    for ids, vecs in store.iter_chunk_vectors():
        if vecs.shape[1] != dim:
            raise ValueError(f"stored vector width {vecs.shape[1]} != index dim {dim}")
        fh.write(np.ascontiguousarray(vecs, dtype="<f4").tobytes())
        id_parts.append(ids)
        written += len(ids)
    if written != count:
        raise ValueError(f"{count} chunks but {written} with a vector")
    fh.write(struct.pack("<Q", count))
    for ids in id_parts:
        fh.write(ids.astype("<i8", copy=False).tobytes())


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
    """Reads vectors.faiss, memory-mapping the vectors when FAISS can (read-only use)."""
    import faiss

    flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) or getattr(faiss, "IO_FLAG_MMAP", 0)
    return faiss.read_index(str(faiss_path(index_dir)), flags)


def build_in_memory(store: Store, dim: int) -> Any:
    """An exact index of the store's committed chunks, built in memory (no file written)."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    with store.read_snapshot():
        for ids, vecs in store.iter_chunk_vectors():
            index.add_with_ids(np.ascontiguousarray(vecs), ids)
    return index


def open_for_search(store: Store, index_dir: Path) -> Any:
    """A FAISS index matching the store's committed state: the file when it is fresh, else
    (an indexer is running, or the file is missing or corrupt) one built in memory from SQLite.
    Never writes: readers may run beside an indexer."""
    dim = int(store.get_meta("dim") or 0)
    reason = freshness(store, Path(index_dir))
    if reason in (None, "unrecorded"):
        try:
            return load(Path(index_dir))
        except RuntimeError as exc:
            reason = f"unreadable: {exc}".splitlines()[0]
    log.info("%s is %s; using vectors from SQLite", FAISS_FILE, reason)
    return build_in_memory(store, dim)

"""FAISS's serialisation of an IndexIDMap2 over an IndexFlatIP, the default layout of
vectors.faiss (coarch.vectors): streamed from batches of rows, and checked by size and header.

The layout follows faiss/impl/index_write.cpp; a test pins it by comparing the bytes with
faiss.write_index.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

_FOURCC_IDMAP2 = b"IxM2"
_FOURCC_FLAT_IP = b"IxFI"
_DUMMY = 1 << 20
_METRIC_INNER_PRODUCT = 0
_HEADER = struct.Struct("<iqqq?i")  # d, ntotal, dummy, dummy, is_trained, metric_type


def write_flat(
    fh: Any, dim: int, count: int, batches: Iterable[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Streams IndexIDMap2(IndexFlatIP) of `count` rows of `dim` to `fh`: headers, codes, then
    ids. `batches` are (ids int64 [n], vectors float32 [n, dim]) in id order; the ids are held
    until the codes are written (8 bytes a row)."""
    header = _HEADER.pack(dim, count, _DUMMY, _DUMMY, True, _METRIC_INNER_PRODUCT)
    fh.write(_FOURCC_IDMAP2 + header + _FOURCC_FLAT_IP + header)
    fh.write(struct.pack("<Q", count * dim))
    id_parts: list[np.ndarray] = []
    written = 0
    for ids, vecs in batches:
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


def flat_file_ok(path: Path, dim: int, count: int) -> bool:
    """Whether the file at `path` has the exact size and the header of an
    IndexIDMap2(IndexFlatIP) with `count` rows of `dim`."""
    header_size = 4 + _HEADER.size
    try:
        if path.stat().st_size != 2 * header_size + 8 + 4 * dim * count + 8 + 8 * count:
            return False
        with open(path, "rb") as fh:
            head = fh.read(header_size)
    except OSError:
        return False
    if len(head) != header_size or head[:4] != _FOURCC_IDMAP2:
        return False
    d, ntotal, _, _, _, metric = _HEADER.unpack(head[4:])
    return bool(d == dim and ntotal == count and metric == _METRIC_INNER_PRODUCT)

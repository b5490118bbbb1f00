"""Helpers shared by the indexing tests (discovery, indexer, CLI): real trees, real indexes."""

from __future__ import annotations

import shutil
import sqlite3
import sysconfig
from pathlib import Path

import numpy as np

import coarch
from coarch.chunk_vectors import NAME_WEIGHT, ChunkInput, name_text
from coarch.chunking import chunk_header
from coarch.identifiers import model_text
from coarch.store import ChunkRow, NewChunk

# A small, varied slice of the standard library: ~30 files, ~500 chunks with the default model.
STDLIB_FILES = (
    "json/__init__.py",
    "json/decoder.py",
    "json/encoder.py",
    "json/scanner.py",
    "json/tool.py",
    "bisect.py",
    "colorsys.py",
    "keyword.py",
    "fnmatch.py",
    "glob.py",
    "shlex.py",
    "this.py",
    "copy.py",
    "sched.py",
    "graphlib.py",
    "reprlib.py",
    "tty.py",
    "pty.py",
    "abc.py",
    "contextvars.py",
    "struct.py",
    "token.py",
    "genericpath.py",
)
# An even smaller slice for the kill and interrupt tests (each runs several builds).
SMALL_FILES = (
    "json/decoder.py",
    "json/scanner.py",
    "bisect.py",
    "colorsys.py",
    "keyword.py",
    "fnmatch.py",
    "this.py",
    "tty.py",
    "abc.py",
    "token.py",
    "genericpath.py",
)

# Python source run in a child process (as root) so that permission bits apply to it: drops
# CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, which let root read any file.
DROP_DAC_SOURCE = """
import ctypes, os
if os.geteuid() == 0:
    class _H(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class _D(ctypes.Structure):
        _fields_ = [("e", ctypes.c_uint32), ("p", ctypes.c_uint32), ("i", ctypes.c_uint32)]
    _libc = ctypes.CDLL(None, use_errno=True)
    _h, _d = _H(0x20080522, 0), (_D * 2)()
    assert _libc.capget(ctypes.byref(_h), _d) == 0
    _m = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF
    _d[0].e &= _m; _d[0].p &= _m; _d[0].i &= _m
    assert _libc.capset(ctypes.byref(_h), _d) == 0
"""


def stdlib_tree(dest: Path, files: tuple[str, ...] = STDLIB_FILES) -> Path:
    """Copies `files` of the running Python's standard library under `dest`/lib."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    for rel in files:
        target = dest / "lib" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib / rel, target)
    return dest


def index_rows(index_dir: Path) -> list[tuple[str, int, int, str | None, str]]:
    """(path, start, end, symbol, text_hash) of every chunk, sorted: what an index holds."""
    with sqlite3.connect(index_dir / "index.sqlite") as conn:
        rows = conn.execute(
            "SELECT f.path, c.start_line, c.end_line, c.symbol, c.text_hash"
            " FROM chunks c JOIN files f ON f.id = c.file_id"
        ).fetchall()
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[4]))


def index_vectors(index_dir: Path, chunks_only: bool = True) -> dict[str, np.ndarray]:
    """text_hash -> vector of every chunk of the index (or of the whole vector cache); empty
    when there is no index yet, or only its empty file (a run killed at its very start)."""
    path = index_dir / "index.sqlite"
    if not path.exists():
        return {}
    sql = (
        ("SELECT c.text_hash, v.vector FROM chunks c JOIN vectors v ON v.text_hash = c.text_hash")
        if chunks_only
        else "SELECT text_hash, vector FROM vectors"
    )
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return {}
    return {h: np.frombuffer(v, dtype="<f4") for h, v in rows}


def model_input_at(path: str, row: NewChunk | ChunkRow) -> ChunkInput:
    """What the model reads for a stored chunk under `path`: its header and source, and its
    names."""
    return ChunkInput(model_text(chunk_header(path, row.symbol) + row.text), name_text(row.symbols))


def vector_of(embedder: coarch.Embedder, given: ChunkInput) -> np.ndarray:
    """A chunk's vector computed here from the model: its text's, plus NAME_WEIGHT times its
    names', normalised (coarch.chunk_vectors)."""
    vector: np.ndarray = embedder.encode([given.text])[0]
    if given.name:
        vector = vector + NAME_WEIGHT * embedder.encode([given.name])[0]
    return vector / float(np.linalg.norm(vector))

"""The rows the store hands out and takes in, and how a chunk's symbols and vector key are stored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coarch.chunking import symbol_text
from coarch.discovery import content_hash

VECTOR_DTYPE = np.dtype("<f4")


def text_hash(embed_text: str) -> str:
    """Key of the vector cache: a hash of exactly what the model embeds."""
    return content_hash(embed_text.encode("utf-8", errors="surrogatepass"))


@dataclass(frozen=True, slots=True)
class FileState:
    id: int
    size: int
    mtime_ns: int
    content_hash: str
    skipped: str | None


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk as search reads it back."""

    id: int
    path: str
    start_line: int
    end_line: int
    language: str | None
    symbols: tuple[str, ...]
    text: str

    @property
    def symbol(self) -> str | None:
        return symbol_text(self.symbols)


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk to write: its place, its texts and the key of its vector."""

    start_line: int
    end_line: int
    language: str | None
    symbols: tuple[str, ...]
    text: str
    text_hash: str

    @property
    def symbol(self) -> str | None:
        return symbol_text(self.symbols)


def encode_symbols(symbols: Sequence[str]) -> str | None:
    """The `symbol` column of a chunk. One plain name stays readable as is; a list, or a name
    that could be read as one (a comma, a leading '['), is a JSON array."""
    if not symbols:
        return None
    if len(symbols) == 1 and "," not in symbols[0] and not symbols[0].startswith("["):
        return symbols[0]
    return json.dumps(list(symbols), ensure_ascii=False)


def decode_symbols(stored: str | None) -> tuple[str, ...]:
    """The names of a `symbol` column. Rows written before names were kept as a list (chunker
    1; re-chunked by the next run) joined them with ", ": those are split there."""
    if not stored:
        return ()
    if stored.startswith("["):
        try:
            names = json.loads(stored)
        except ValueError:
            names = None
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return tuple(names)
    return tuple(part for part in stored.split(", ") if part)

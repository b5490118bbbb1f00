"""What a chunk's vector is: its text's vector plus half its definitions' names' vector.

all-MiniLM-L6-v2 reads a chunk as one passage: a function's name is a few tokens among a few
hundred of body, so "Stores the uncompressed meta-block header" is about as close to
`StoreCompressedMetaBlockHeader` as to `BrotliStoreUncompressedMetaBlockHeader`. Names say what
code does in the words a description uses, so each chunk that defines something also has its
names embedded on their own (the last part of each symbol, identifiers split: `HttpClient.send`
-> "send", `parse_config` -> "parse config"), and its stored vector is

    normalise(vector(text) + NAME_WEIGHT * vector(names))

one row, one FAISS entry, the query embedded once: search costs nothing more. Names are short
and shared by the pieces of a long definition, so they are embedded once per call: about 2 % of
the tokens of the chunks (1.9 % on java.util.concurrent, 2.1 % on the standard library).

Measured with scripts/eval_search.py and replayed over weights with the evaluation's rankings
(800 description queries in Python, C, JavaScript and Java, seed 13): with the names counted
at half, hybrid file MRR@10 rose in every language, chunk MRR@10 by 0.03 to 0.06 and the lines
read to the first hit fell by a fifth; the whole symbol instead of its last part (the class
path of every Java method) cost Java 0.01 to 0.02 of file MRR, and a weight of 1 let names
outweigh bodies in Java.

The cache key of a chunk's vector (`ChunkInput.key`) is a hash of both texts and of the
recipe, so a vector is never re-used for another recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from coarch.identifiers import model_text
from coarch.store import text_hash

if TYPE_CHECKING:
    from coarch.chunking import Chunk
    from coarch.embedder import Embedder, ProgressCallback

__all__ = ["NAME_WEIGHT", "ChunkInput", "chunk_input", "embed_chunks", "name_text"]

# How much a chunk's names count against its text (see the module docstring).
NAME_WEIGHT = 0.5
# Part of every cache key: another weight or way of naming makes other vectors.
_RECIPE = f"names*{NAME_WEIGHT}"


def name_text(symbols: Sequence[str]) -> str:
    """The names a chunk defines, as the model reads them: the last part of each symbol,
    identifiers split into words (`("HttpClient.send", "parse_config")` -> "send parse
    config"); "" for a chunk that defines nothing."""
    return model_text(" ".join(symbol.rsplit(".", 1)[-1] for symbol in symbols))


@dataclass(frozen=True, slots=True)
class ChunkInput:
    """What the model reads for one chunk: its embedded text (header and source, identifiers
    split into words) and its names ("" when it defines nothing)."""

    text: str
    name: str

    @property
    def key(self) -> str:
        """The key of the chunk's vector in the cache: a hash of exactly what is embedded."""
        return text_hash(f"{_RECIPE}\0{self.name}\0{self.text}")


def chunk_input(chunk: Chunk) -> ChunkInput:
    """The model's input for a chunk."""
    return ChunkInput(model_text(chunk.embed_text), name_text(chunk.symbols))


def embed_chunks(
    embedder: Embedder,
    inputs: Sequence[ChunkInput],
    batch_tokens: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """The vectors of `inputs`, float32 (len(inputs), dim), L2-normalised. `progress` and
    `batch_tokens` are those of the texts' Embedder.encode call; the distinct names follow in
    one more call."""
    vectors = embedder.encode(
        [i.text for i in inputs], batch_tokens=batch_tokens, progress=progress
    )
    # Longest first, as the pipeline orders the texts: batches of like lengths pad little.
    names = sorted({i.name for i in inputs if i.name}, key=len, reverse=True)
    if not names:
        return vectors
    name_vectors = embedder.encode(names, batch_tokens=batch_tokens)
    row_of = {name: row for row, name in enumerate(names)}
    named = np.array([n for n, i in enumerate(inputs) if i.name], dtype=np.intp)
    rows = np.array([row_of[inputs[n].name] for n in named], dtype=np.intp)
    combined = vectors[named] + NAME_WEIGHT * name_vectors[rows]
    vectors[named] = combined / np.linalg.norm(combined, axis=1, keepdims=True)
    return vectors

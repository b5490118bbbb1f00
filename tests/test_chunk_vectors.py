"""A chunk's vector: its text's plus NAME_WEIGHT times its names', normalised; and its cache key."""

from __future__ import annotations

import numpy as np

import coarch
from coarch.chunk_vectors import NAME_WEIGHT, ChunkInput, embed_chunks, name_text


def test_names_are_the_last_part_of_each_symbol_split_into_words() -> None:
    assert name_text(("HttpClient.send", "parse_config")) == "send parse config"
    assert name_text(("ConcurrentHashMap.TreeBin.lockRoot",)) == "lock Root"
    assert name_text(()) == ""


def test_a_named_chunk_adds_its_names_vector_and_an_unnamed_one_is_its_text(
    embedder: coarch.Embedder,
) -> None:
    inputs = [
        ChunkInput(
            "path: net/upload.py\nsymbol: retry upload\ndef retry upload(c): ...", "retry upload"
        ),
        ChunkInput("path: net/upload.py\nimport os\nimport sys", ""),
        ChunkInput("path: net/upload.py\nsymbol: retry upload\n    return False", "retry upload"),
    ]
    got = embed_chunks(embedder, inputs)

    texts = embedder.encode([i.text for i in inputs])
    name = embedder.encode(["retry upload"])[0]
    for row in (0, 2):
        expected = texts[row] + NAME_WEIGHT * name
        expected /= np.linalg.norm(expected)
        assert float(np.dot(got[row], expected)) > 0.99999
        # The name moved the vector: it is not the text's alone.
        assert float(np.dot(got[row], texts[row])) < 0.999
    assert float(np.dot(got[1], texts[1])) > 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_the_cache_key_covers_the_text_and_the_names() -> None:
    base = ChunkInput("def f(): pass", "f")
    assert base.key == ChunkInput("def f(): pass", "f").key
    assert base.key != ChunkInput("def f(): pass", "").key
    assert base.key != ChunkInput("def f(): return", "f").key
    # The separator keeps a name and a text from running into each other.
    assert ChunkInput("b c", "a").key != ChunkInput("c", "a b").key

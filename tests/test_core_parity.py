"""test_core_parity.py: coarch's C embedder against the reference implementation.

The goldens (tests/data/golden_texts.json + golden_vectors.npy) are sentence-transformers'
vectors for 500+ texts (code, prose, past the 256-token window, non-ASCII, empty), written by
scripts/make_golden.py in the torch venv. Every vector of coarch.Embedder(precision="fp32") must
point the same way as its golden twin (cosine >= 0.9999); the worst cosine and largest absolute difference are
recorded as test properties (`--junitxml`) and printed (`-s`). Then the batch loop: the order of
the texts and the batch budget must not move or change any row; an empty list and a non-str item
behave as documented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import coarch

DATA = Path(__file__).parent / "data"
MIN_COSINE = 0.9999
SAME_VECTOR_ATOL = 1e-5  # one text, different batches: only float summation order may differ

Vectors = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def golden() -> tuple[list[dict[str, Any]], Vectors]:
    document = json.loads((DATA / "golden_texts.json").read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = document["entries"]
    vectors: Vectors = np.load(DATA / "golden_vectors.npy")
    assert vectors.shape == (len(entries), 384)
    return entries, vectors


@pytest.fixture(scope="module")
def embedder() -> coarch.Embedder:
    return coarch.Embedder(precision="fp32")  # the goldens are fp32; bf16: test_core_precision


@pytest.fixture(scope="module")
def encoded(embedder: coarch.Embedder, golden: tuple[list[dict[str, Any]], Vectors]) -> Vectors:
    entries, _ = golden
    result: Vectors = embedder.encode([e["text"] for e in entries])
    return result


@pytest.fixture(scope="module")
def sample(golden: tuple[list[dict[str, Any]], Vectors]) -> list[int]:
    """A small spread of the goldens (every length and kind) for the batch-loop tests."""
    entries, _ = golden
    picked = set(range(0, len(entries), 25))
    picked.update(i for i, e in enumerate(entries) if e["kind"] in ("empty", "emoji"))
    picked.add(max(range(len(entries)), key=lambda i: entries[i]["tokens"]))
    return sorted(picked)


def row_cosines(a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dots = np.einsum("ij,ij->i", a64, b64)
    return dots / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))  # type: ignore[no-any-return]


def test_every_vector_matches_its_golden(
    encoded: Vectors,
    golden: tuple[list[dict[str, Any]], Vectors],
    record_property: Any,
) -> None:
    entries, reference = golden
    assert encoded.shape == reference.shape
    assert encoded.dtype == np.float32

    cosines = row_cosines(encoded, reference)
    worst = int(np.argmin(cosines))
    max_abs = float(np.abs(encoded - reference).max())
    per_kind: dict[str, float] = {}
    for entry, cosine in zip(entries, cosines):
        per_kind[entry["kind"]] = min(per_kind.get(entry["kind"], 1.0), float(cosine))
    record_property("worst_cosine", float(cosines[worst]))
    record_property("max_abs_diff", max_abs)
    summary = (
        f"worst cosine {cosines[worst]:.9f} at #{worst} ({entries[worst]['kind']}, "
        f"{entries[worst]['tokens']} tokens, {entries[worst]['text'][:60]!r}); "
        f"max abs diff {max_abs:.2e}"
    )
    print(f"\nparity over {len(entries)} goldens: {summary}")
    print("worst per kind: " + ", ".join(f"{k} {v:.9f}" for k, v in sorted(per_kind.items())))

    below = np.flatnonzero(cosines < MIN_COSINE)
    assert below.size == 0, (
        f"{below.size} of {len(entries)} vectors below cosine {MIN_COSINE}: {summary}; "
        f"failing rows {below[:20].tolist()}"
    )


def test_vectors_are_unit_length(encoded: Vectors) -> None:
    norms = np.linalg.norm(encoded.astype(np.float64), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5), f"norms range {norms.min()}..{norms.max()}"


def test_dim_and_window_match_the_model(embedder: coarch.Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.max_seq_length == 256


def test_token_counts_match_the_reference_tokenizer(
    embedder: coarch.Embedder, golden: tuple[list[dict[str, Any]], Vectors]
) -> None:
    entries, _ = golden
    wrong = [
        (i, e["tokens"], n)
        for i, e in enumerate(entries)
        if (n := embedder.count_tokens(e["text"])) != e["tokens"]
    ]
    assert not wrong, f"{len(wrong)} texts count differently (row, reference, ours): {wrong[:10]}"


def test_order_of_texts_does_not_change_any_row(
    embedder: coarch.Embedder,
    golden: tuple[list[dict[str, Any]], Vectors],
    encoded: Vectors,
    sample: list[int],
) -> None:
    entries, _ = golden
    order = [sample[i] for i in np.random.default_rng(20240601).permutation(len(sample))]
    assert order != sample
    out = embedder.encode([entries[i]["text"] for i in order])
    np.testing.assert_allclose(out, encoded[order], rtol=0, atol=SAME_VECTOR_ATOL)


@pytest.mark.parametrize("batch_tokens", [256, 65536])
def test_batch_budget_does_not_change_any_row(
    embedder: coarch.Embedder,
    golden: tuple[list[dict[str, Any]], Vectors],
    encoded: Vectors,
    sample: list[int],
    batch_tokens: int,
) -> None:
    entries, _ = golden
    out = embedder.encode([entries[i]["text"] for i in sample], batch_tokens=batch_tokens)
    np.testing.assert_allclose(out, encoded[sample], rtol=0, atol=SAME_VECTOR_ATOL)


def test_a_text_alone_equals_its_row_in_a_batch(
    embedder: coarch.Embedder, golden: tuple[list[dict[str, Any]], Vectors], encoded: Vectors
) -> None:
    entries, _ = golden
    longest = max(range(len(entries)), key=lambda i: entries[i]["tokens"])
    for i in (0, longest, len(entries) - 1):
        out = embedder.encode([entries[i]["text"]])
        np.testing.assert_allclose(out[0], encoded[i], rtol=0, atol=SAME_VECTOR_ATOL)


def test_duplicates_get_the_same_vector_in_every_row(embedder: coarch.Embedder) -> None:
    texts = ["def f(x):\n    return x", "word " * 300, "def f(x):\n    return x", "", ""]
    out = embedder.encode(texts)
    np.testing.assert_allclose(out[0], out[2], rtol=0, atol=SAME_VECTOR_ATOL)
    np.testing.assert_allclose(out[3], out[4], rtol=0, atol=SAME_VECTOR_ATOL)
    assert float(out[0] @ out[1]) < 0.99


def test_empty_list_gives_an_empty_matrix(embedder: coarch.Embedder) -> None:
    out = embedder.encode([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("texts", "index"),
    [
        (["a", 3], 1),
        (["a", "b", None], 2),
        ([b"bytes", "b"], 0),
        (["a", "b", "c", ["nested"]], 3),
    ],
)
def test_non_str_item_raises_type_error_naming_its_index(
    embedder: coarch.Embedder, texts: list[Any], index: int
) -> None:
    with pytest.raises(TypeError, match=rf"\b{index}\b"):
        embedder.encode(texts)

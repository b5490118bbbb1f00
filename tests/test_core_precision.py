"""bf16 precision: the dense products in bfloat16, vectors within cosine 0.995 of fp32 golden."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import coarch
from coarch import _core

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bf16_embedder() -> coarch.Embedder:
    return coarch.Embedder(precision="bf16")


def test_bf16_vectors_stay_close_to_the_fp32_golden(bf16_embedder: coarch.Embedder) -> None:
    document = json.loads((DATA / "golden_texts.json").read_text(encoding="utf-8"))
    texts = [entry["text"] for entry in document["entries"]]
    golden = np.load(DATA / "golden_vectors.npy")
    vectors = bf16_embedder.encode(texts)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * golden).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.995, f"worst cosine {cosines.min():.5f} on text {worst}"


def test_precision_is_reported_with_a_reason(bf16_embedder: coarch.Embedder) -> None:
    assert bf16_embedder.precision == "bf16"
    assert bf16_embedder.precision_reason == "bf16 was asked for"
    assert coarch.Embedder(precision="fp32").precision == "fp32"


def test_auto_follows_the_run_time_check() -> None:
    native, reason = _core.bf16_native()
    assert reason
    auto = coarch.Embedder(precision="auto")
    assert auto.precision == ("bf16" if native else "fp32")
    assert auto.precision_reason == reason
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "avx512_bf16" not in cpu_flags and "amx_bf16" not in cpu_flags:
        assert not native


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be"):
        coarch.Embedder(precision="fp8")


def test_precision_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COARCH_PRECISION", "bf16")
    assert coarch.Embedder().precision == "bf16"


def test_the_default_is_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COARCH_PRECISION", raising=False)
    native, reason = _core.bf16_native()
    default = coarch.Embedder()
    assert default.precision == ("bf16" if native else "fp32")
    assert default.precision_reason == reason

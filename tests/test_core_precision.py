"""bf16 precision: the dense products in bfloat16, vectors within cosine 0.995 of fp32 golden."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import coarch
from coarch import _core
from coarch.errors import ConfigError
from coarch.models import default_model_path

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


def test_bf16_texts_alone_match_the_golden_at_every_padding(bf16_embedder: coarch.Embedder) -> None:
    # A text alone runs its products over its tokens rounded up to 32, 64, 128 or 256 rows (a
    # query is a dozen tokens): each size gives the golden vector as a batch does.
    document = json.loads((DATA / "golden_texts.json").read_text(encoding="utf-8"))
    texts = [entry["text"] for entry in document["entries"]]
    golden = np.load(DATA / "golden_vectors.npy")
    by_rows: dict[int, int] = {}
    for i, text in enumerate(texts):
        tokens = len(bf16_embedder.tokenize(text))
        rows = next(r for r in (32, 64, 128, 256) if tokens <= r)
        by_rows.setdefault(rows, i)
    assert sorted(by_rows) == [32, 64, 128, 256]
    for rows, i in by_rows.items():
        vector = bf16_embedder.encode([texts[i]])[0]
        assert float(vector @ golden[i]) >= 0.995, (rows, i)


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


def test_an_unknown_precision_from_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COARCH_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="precision must be fp32, bf16 or auto, not 'fp8'"):
        coarch.Embedder()


def test_the_core_takes_only_a_resolved_precision() -> None:
    # "auto" is decided once, in coarch.embedder.choose_precision; the core has no default.
    model = str(default_model_path())
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', not 'auto'"):
        _core.Embedder(model, precision="auto")
    with pytest.raises(TypeError, match="needs precision='fp32' or 'bf16'"):
        _core.Embedder(model)
    assert _core.Embedder(model, precision="bf16").precision == "bf16"


def test_precision_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COARCH_PRECISION", "bf16")
    assert coarch.Embedder().precision == "bf16"


def test_the_default_is_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COARCH_PRECISION", raising=False)
    native, reason = _core.bf16_native()
    default = coarch.Embedder()
    assert default.precision == ("bf16" if native else "fp32")
    assert default.precision_reason == reason


# The probe in a fresh process each time, as `coarch index` runs it (the answer is cached per
# process). Each child loads libtorch first, then waits for the go: the load then falls on the
# probe alone.
PROBE = """
import json, sys
from coarch import _core
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(_core.bf16_native()), flush=True)
"""


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _probe_in_processes(count: int, burners: int) -> list[tuple[bool, str]]:
    probes = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    burning: list[subprocess.Popen[bytes]] = []
    try:
        for probe in probes:
            assert probe.stdout is not None and probe.stdout.readline() == "ready\n"
        burning = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)
        ]
        time.sleep(0.5 if burners else 0)  # the burners have the cores before the probes start
        answers = []
        for probe in probes:
            out, _ = probe.communicate("go\n", timeout=120)
            assert probe.returncode == 0
            native, reason = json.loads(out)
            answers.append((bool(native), str(reason)))
        return answers
    finally:
        for process in [*probes, *burning]:
            process.kill()
            process.wait()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs /proc/cpuinfo")
def test_auto_gives_the_same_answer_on_a_busy_machine() -> None:
    busy = _probe_in_processes(4, burners=2 * (os.cpu_count() or 1))
    quiet = _probe_in_processes(1, burners=0)
    assert set(busy) == set(quiet), busy + quiet
    native, reason = quiet[0]
    found = sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if not found:
        assert not native
        assert "no native bf16" in reason
    else:
        # The reason names what was found, so that an answer can be traced to its cause.
        assert all(flag in reason for flag in found), reason
        assert native or "libtorch" in reason or "product" in reason, reason

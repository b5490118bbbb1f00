"""coarch.memory: MemoryPressure, the MemoryManager wrapper (environment variables, argument
checks) and the manager at work in a real embedding job: one in this process, and one in a
subprocess whose own ballast pushes it into HIGH and CRITICAL under a limit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coarch import _core
from coarch.embedder import Embedder
from coarch.errors import ConfigError, MemoryLimitError
from coarch.memory import (
    ENV_ADAPTIVE,
    ENV_LIMIT,
    ENV_PROFILE,
    PROFILES,
    MemoryManager,
    MemoryPressure,
)

JOB = Path(__file__).with_name("memory_ballast_job.py")
JOB_LIMIT_MB = 800


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_LIMIT, ENV_PROFILE, ENV_ADAPTIVE):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(threads=1)


def job_texts() -> list[str]:
    """Short code-like texts of varied length (8 to 60 tokens): many batches, quickly."""
    words = ["retry", "upload", "parse", "token", "buffer", "index", "vector", "chunk", "path"]
    return [
        f"def {words[i % 9]}_{i}("
        + ", ".join(words[(i + k) % 9] for k in range(3 + i % 17))
        + f"): return {i} * {words[(i * 7) % 9]}"
        for i in range(192)
    ]


# ---- MemoryPressure and the wrapper ------------------------------------------------------


def test_pressure_levels_are_ordered_ints() -> None:
    assert [int(level) for level in MemoryPressure] == [0, 1, 2, 3]
    assert MemoryPressure.LOW < MemoryPressure.MODERATE < MemoryPressure.HIGH
    assert MemoryPressure.HIGH < MemoryPressure.CRITICAL


def test_manager_is_the_core_type() -> None:
    manager = MemoryManager()
    assert isinstance(manager, _core.MemoryManager)
    assert manager.pressure() is MemoryPressure.LOW
    stats = manager.stats()
    assert stats["pressure"] is MemoryPressure.LOW
    assert repr(manager).startswith("MemoryManager(limit_mb=")


def test_tiny_limit_reads_critical() -> None:
    manager = MemoryManager(limit_mb=1)
    assert manager.pressure() is MemoryPressure.CRITICAL
    assert manager.stats()["limit_source"] == "explicit"


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profiles_match_the_core(profile: str) -> None:
    manager = MemoryManager(profile=profile.upper())
    assert manager.profile == profile
    assert manager.stats()["thresholds"] == PROFILES[profile]


# ---- environment -------------------------------------------------------------------------


def test_environment_sets_what_the_arguments_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "1234.5")
    monkeypatch.setenv(ENV_PROFILE, " Conservative ")
    monkeypatch.setenv(ENV_ADAPTIVE, "off")
    manager = MemoryManager()
    assert (manager.limit_mb, manager.limit_source) == (1234.5, "explicit")
    assert manager.profile == "conservative"
    assert manager.adaptive is False


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LIMIT, "1234")
    monkeypatch.setenv(ENV_PROFILE, "conservative")
    monkeypatch.setenv(ENV_ADAPTIVE, "0")
    manager = MemoryManager(limit_mb=999, profile="aggressive", adaptive=True)
    assert (manager.limit_mb, manager.profile, manager.adaptive) == (999.0, "aggressive", True)


def test_empty_environment_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ENV_LIMIT, ENV_PROFILE, ENV_ADAPTIVE):
        monkeypatch.setenv(name, "")
    manager = MemoryManager()
    assert manager.limit_source in ("system", "cgroup")
    assert (manager.profile, manager.adaptive) == ("default", True)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            ENV_LIMIT,
            "lots",
            "COARCH_MEMORY_LIMIT_MB must be a positive number of megabytes, not 'lots'",
        ),
        (ENV_LIMIT, "-100", "COARCH_MEMORY_LIMIT_MB must be a positive number of megabytes"),
        (ENV_LIMIT, "nan", "COARCH_MEMORY_LIMIT_MB must be a positive number of megabytes"),
        (
            ENV_PROFILE,
            "turbo",
            "COARCH_MEMORY_PROFILE must be one of default, conservative, aggressive, development",
        ),
        (
            ENV_ADAPTIVE,
            "maybe",
            "COARCH_ADAPTIVE_BATCHING must be one of 1, true, yes, on, 0, false, no, off, not",
        ),
    ],
)
def test_bad_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        MemoryManager()
    assert message in str(caught.value)
    assert caught.value.exit_code == 2
    assert caught.value.hint


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit_mb": 0}, ValueError, "limit_mb must be a positive number of megabytes, not 0"),
        ({"limit_mb": float("inf")}, ValueError, "limit_mb must be a positive number"),
        ({"limit_mb": "800"}, TypeError, "limit_mb must be a number of megabytes or None, not str"),
        (
            {"profile": "turbo"},
            ValueError,
            "profile must be one of default, conservative, aggressive, development, not 'turbo'",
        ),
        ({"adaptive": 1}, TypeError, "adaptive must be a bool or None, not int"),
        ({"min_batch_tokens": -1}, ValueError, "min_batch_tokens must be an int >= 0"),
        (
            {"min_batch_tokens": 900, "max_batch_tokens": 512},
            ValueError,
            "min_batch_tokens (900) must not exceed max_batch_tokens (512)",
        ),
        ({"critical_wait_s": 7200}, ValueError, "critical_wait_s must be a number of seconds"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        MemoryManager(**kwargs)
    assert message in str(caught.value)


# ---- with an Embedder --------------------------------------------------------------------


def test_embedder_rejects_what_is_not_a_manager() -> None:
    with pytest.raises(TypeError, match="memory must be a coarch.MemoryManager, not dict"):
        Embedder(memory={"limit_mb": 800})  # type: ignore[arg-type]


def test_managed_encode_equals_unmanaged(embedder: Embedder) -> None:
    texts = job_texts()[:64]
    manager = MemoryManager(max_batch_tokens=512)
    managed = Embedder(threads=1, memory=manager)
    vectors = managed.encode(texts)
    stats = manager.stats()
    assert stats["batches"] >= 2  # 512 tokens per batch cannot hold 64 texts of 10-60 tokens
    assert 0 < stats["batch_tokens"] <= 512
    assert stats["reserved_mb"] == 0  # every reservation was released
    np.testing.assert_allclose(vectors, embedder.encode(texts), rtol=0, atol=1e-6)


def test_limit_too_small_for_the_model_is_refused() -> None:
    # 64 MB cannot hold this interpreter, let alone the model: refused at construction (the
    # model check) or at the first batch (the reservation), never by the OOM killer.
    with pytest.raises(MemoryLimitError, match=r"memory limit \(64 MB, explicit\)"):
        Embedder(memory=MemoryManager(limit_mb=64)).encode(["def f(): pass"])


# ---- a real process under a limit --------------------------------------------------------


@pytest.fixture(scope="module")
def ballast_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("memory_job")
    texts_path, vectors_path = folder / "texts.json", folder / "vectors.npy"
    texts_path.write_text(json.dumps(job_texts()))
    env = {k: v for k, v in os.environ.items() if k not in (ENV_LIMIT, ENV_PROFILE, ENV_ADAPTIVE)}
    result = subprocess.run(
        [sys.executable, str(JOB), str(JOB_LIMIT_MB), str(texts_path), str(vectors_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout)
    report["vectors"] = np.load(vectors_path)
    return report


def phase_batches(report: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    batches = [b for b in report["batches"] if b["phase"] == phase]
    assert batches, f"no batch in phase {phase}"
    return batches


def test_job_reaches_high_and_critical(ballast_job: dict[str, Any]) -> None:
    pressure_before = {p["phase"]: p["pressure_before"] for p in ballast_job["phases"]}
    assert pressure_before == {"low": 0, "high": 2, "critical": 3, "relief": 0}
    assert {b["pressure"] for b in phase_batches(ballast_job, "high")} == {2}
    assert {b["pressure"] for b in phase_batches(ballast_job, "critical")} == {3}


def test_job_budget_shrinks_under_pressure(ballast_job: dict[str, Any]) -> None:
    low = [b["batch_tokens"] for b in phase_batches(ballast_job, "low")]
    high = [b["batch_tokens"] for b in phase_batches(ballast_job, "high")]
    critical = [b["batch_tokens"] for b in phase_batches(ballast_job, "critical")]
    relief = [b["batch_tokens"] for b in phase_batches(ballast_job, "relief")]
    assert min(low) > 512  # room to spare: near the 1024 maximum
    assert len(high) >= 2 and high == sorted(high, reverse=True)
    assert high[1] <= high[0] * 0.76  # x0.75 per HIGH batch
    assert max(critical) <= max(low) / 2
    assert relief[-1] > relief[0]  # grows again once the ballast is gone


def test_job_hooks_ran_and_were_counted(ballast_job: dict[str, Any]) -> None:
    low, high = phase_batches(ballast_job, "low"), phase_batches(ballast_job, "high")
    critical = phase_batches(ballast_job, "critical")
    assert low[-1]["gc_runs"] == low[-1]["trims"] == 0
    # gc and trim after every HIGH and CRITICAL batch (the job's collect() adds one more).
    assert high[-1]["gc_runs"] - low[-1]["gc_runs"] == len(high)
    assert high[-1]["trims"] - low[-1]["trims"] == len(high)
    assert critical[-1]["gc_runs"] - high[-1]["gc_runs"] == len(critical)
    assert high[-1]["waits"] == 0
    assert critical[-1]["waits"] >= 1  # a bounded wait at CRITICAL (once: nothing was freed)
    stats = ballast_job["stats"]
    assert stats["gc_runs"] == stats["trims"] == len(high) + len(critical) + 1


def test_job_stays_under_the_limit(ballast_job: dict[str, Any]) -> None:
    # VmHWM is the kernel's peak RSS of the job's own address space: ballast at 93 % of the
    # limit plus the batches that ran under it (about 94 % when measured). Not ru_maxrss: at
    # exec the kernel folds the parent's peak into the child's ru_maxrss, so inside the full
    # suite it reported pytest's own size (841 and 872 MB), not the job's.
    assert ballast_job["vm_hwm_mb"] <= JOB_LIMIT_MB
    assert ballast_job["stats"]["peak_rss_mb"] <= JOB_LIMIT_MB


def test_job_vectors_equal_an_unconstrained_run(
    ballast_job: dict[str, Any], embedder: Embedder
) -> None:
    expected = embedder.encode(job_texts())
    np.testing.assert_allclose(ballast_job["vectors"], expected, rtol=0, atol=1e-6)


# ---- a second __init__ -------------------------------------------------------------------


def test_a_second_init_is_refused_and_keeps_the_settings() -> None:
    for manager in (
        MemoryManager(limit_mb=2000, profile="conservative"),
        _core.MemoryManager(2000, "conservative"),
    ):
        with pytest.raises(RuntimeError, match="MemoryManager is already initialised"):
            manager.__init__(limit_mb=300, profile="development")  # type: ignore[misc]
        assert manager.profile == "conservative"
        assert manager.limit_mb <= 2000 and manager.limit_mb != 300
        assert manager.pressure() in set(MemoryPressure)


def test_a_second_init_during_an_encode_is_refused_and_the_encode_finishes() -> None:
    # In a child process: without the refusal the engine manager the encode borrows is freed
    # under it, and a crash would take pytest with it.
    script = """
import json, sys, threading
import numpy as np
from coarch.embedder import Embedder
from coarch.memory import MemoryManager

texts = json.loads(sys.stdin.read())
manager = MemoryManager(max_batch_tokens=256, profile="conservative")
embedder = Embedder(threads=1, memory=manager, precision="fp32")
in_encode, tried = threading.Event(), threading.Event()
outcome = {}

def progress(done, total):
    if not in_encode.is_set():
        in_encode.set()
        tried.wait(timeout=60)  # the main thread tries __init__ while this encode is running

def encode():
    outcome["vectors"] = embedder.encode(texts, progress=progress)

worker = threading.Thread(target=encode)
worker.start()
in_encode.wait(timeout=60)
try:
    manager.__init__(limit_mb=300, profile="development")
    outcome["init"] = "accepted"
except RuntimeError as error:
    outcome["init"] = str(error)
tried.set()
worker.join(timeout=120)
np.save(sys.stdout.buffer, outcome["vectors"])
print(json.dumps([outcome["init"], manager.profile, manager.stats()["batches"]]), file=sys.stderr)
"""
    texts = job_texts()[:48]
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(texts).encode(),
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    init, profile, batches = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert "MemoryManager is already initialised" in init
    assert profile == "conservative"
    assert batches >= 2
    vectors = np.load(io.BytesIO(result.stdout))
    expected = Embedder(threads=1, precision="fp32").encode(texts)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)

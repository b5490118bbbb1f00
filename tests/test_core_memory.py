"""The C MemoryManager (csrc/cx_memory.c) through coarch._core.MemoryManager: cgroup parsing on
fixture trees, readings against /proc, pressure against each profile's thresholds, the batch
budget, the hooks' counters and argument errors. Real readings of this process, no mocks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from coarch import _core

CGROUP = Path(__file__).parent / "data" / "cgroup"
MIB = 2**20

PROFILES = {
    "default": (0.60, 0.75, 0.90),
    "conservative": (0.45, 0.60, 0.80),
    "aggressive": (0.55, 0.70, 0.85),
    "development": (0.40, 0.50, 0.65),
}

REQUIRED_STATS = {
    "rss_mb",
    "peak_rss_mb",
    "available_mb",
    "limit_mb",
    "limit_source",
    "pressure",
    "batch_tokens",
    "gc_runs",
    "trims",
    "waits",
    "cuda_releases",
    "cuda_available",
}


def proc_status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"{key} missing from /proc/self/status")


# ---- cgroup parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "version", "limit", "usage", "directory"),
    [
        # v2: the tighter of the scope (512 MiB) and its parent slice (1 GiB); usage is
        # memory.current minus inactive_file (200 - 50 MiB).
        ("v2", 2, 512 * MIB, 150 * MIB, "sys/fs/cgroup/user.slice/coarch.scope"),
        # v2 "max" at every level: no limit, usage still read (70 - 4 MiB).
        ("v2-max", 2, None, 66 * MIB, "sys/fs/cgroup/system.slice/job.service"),
        # v2 with "max" on the process's cgroup but 768 MiB on its parent: the parent binds.
        ("v2-parent", 2, 768 * MIB, 100 * MIB, "sys/fs/cgroup/ci.slice/runner.scope"),
        # v1: the memory controller's line wins over the others; total_inactive_file is
        # subtracted (300 - 100 MiB); the parents' PAGE_COUNTER_MAX reads as no limit.
        ("v1", 1, 800 * MIB, 200 * MIB, "sys/fs/cgroup/memory/docker/4f2a9c"),
        ("v1-unlimited", 1, None, 3751936 - 786432, "sys/fs/cgroup/memory/process_api/3a43"),
        # v1 in a container: the host's path does not exist inside, the mount root is ours.
        ("v1-container", 1, 400 * MIB, 50 * MIB, "sys/fs/cgroup/memory"),
    ],
)
def test_parse_cgroup_fixtures(
    fixture: str, version: int, limit: int | None, usage: int, directory: str
) -> None:
    info = _core.MemoryManager._parse_cgroup(str(CGROUP / fixture))
    assert info == {
        "version": version,
        "limit_bytes": limit,
        "usage_bytes": usage,
        "directory": str(CGROUP / fixture / directory),
    }


@pytest.mark.parametrize("fixture", ["none", "no-such-root"])
def test_parse_cgroup_without_a_memory_cgroup(fixture: str) -> None:
    info = _core.MemoryManager._parse_cgroup(str(CGROUP / fixture))
    assert info == {"version": None, "limit_bytes": None, "usage_bytes": None, "directory": ""}


def test_parse_cgroup_rejects_a_malformed_limit() -> None:
    with pytest.raises(
        OSError,
        match=r"cgroup memory limit \(.*bad/sys/fs/cgroup/app/memory.max\)"
        r": not a number or \"max\": lots",
    ):
        _core.MemoryManager._parse_cgroup(str(CGROUP / "bad"))


def test_parse_cgroup_of_this_system() -> None:
    info = _core.MemoryManager._parse_cgroup("/")
    assert info["version"] in (None, 1, 2)
    if info["version"] is not None:
        assert Path(info["directory"]).is_dir()
        assert info["limit_bytes"] is None or info["limit_bytes"] > 0
        assert info["usage_bytes"] is None or info["usage_bytes"] > 0


@pytest.mark.parametrize(
    ("limit_mb", "source", "effective"),
    [(None, "cgroup", 800.0), (700, "explicit", 700.0), (900, "cgroup", 800.0)],
)
def test_cgroup_limit_competes_with_the_explicit_one(
    limit_mb: int | None, source: str, effective: float
) -> None:
    manager = _core.MemoryManager(limit_mb, _cgroup_root=str(CGROUP / "v1"))
    stats = manager.stats()
    assert (manager.limit_source, manager.limit_mb) == (source, effective)
    assert (stats["limit_source"], stats["limit_mb"]) == (source, effective)
    assert stats["cgroup_version"] == 1
    assert stats["cgroup_limit_mb"] == 800.0
    assert stats["cgroup_usage_mb"] == 200.0


_CGROUP_PRESSURE_CHECK = """
import sys
from pathlib import Path

from coarch import _core

cgroup = Path(sys.argv[1])
# 480 MiB of the cgroup's 512 MiB are in use (94 %): CRITICAL, whatever our own RSS.
manager = _core.MemoryManager(_cgroup_root=str(cgroup / "v2-full"))
stats = manager.stats()
assert (stats["limit_source"], stats["cgroup_usage_mb"]) == ("cgroup", 480.0), stats
assert abs(stats["usage"] - 480 / 512) < 1e-6, stats
assert manager.pressure() == 3
# The same RSS against the v2 fixture's half-used cgroup is not critical.
assert _core.MemoryManager(_cgroup_root=str(cgroup / "v2")).pressure() < 3
"""


def test_cgroup_usage_counts_in_the_pressure() -> None:
    # In a fresh process: the readings count our own RSS too, and the test process itself can
    # hold more than the fixture's 512 MiB limit by the time this runs.
    done = subprocess.run(
        [sys.executable, "-c", _CGROUP_PRESSURE_CHECK, str(CGROUP)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# ---- readings ----------------------------------------------------------------------------


def test_readings_match_proc() -> None:
    manager = _core.MemoryManager()
    stats = manager.stats()
    assert REQUIRED_STATS <= stats.keys()
    assert abs(stats["rss_mb"] - proc_status_mb("VmRSS")) < 16
    assert stats["peak_rss_mb"] >= stats["rss_mb"] - 1
    assert abs(stats["peak_rss_mb"] - proc_status_mb("VmHWM")) < 16
    meminfo = {
        line.split(":")[0]: int(line.split()[1]) / 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
    }
    assert abs(stats["total_mb"] - meminfo["MemTotal"]) < 1
    assert 0 < stats["available_mb"] <= stats["total_mb"]
    assert stats["limit_source"] in ("system", "cgroup")
    if stats["limit_source"] == "system":
        # MemAvailable plus our RSS when the manager was created.
        assert stats["limit_mb"] == pytest.approx(
            meminfo["MemAvailable"] + stats["rss_mb"], rel=0.05
        )
    assert stats["usage"] == pytest.approx(stats["rss_mb"] / stats["limit_mb"], rel=0.1)
    assert isinstance(stats["cuda_available"], bool)
    assert stats["gc_runs"] == stats["trims"] == stats["waits"] == stats["cuda_releases"] == 0


def test_pressure_reading_is_cheap() -> None:
    manager = _core.MemoryManager()
    started = time.perf_counter()
    for _ in range(2000):
        manager.pressure()
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 500e-6  # tens of microseconds on an idle machine


def test_tiny_explicit_limit_is_critical() -> None:
    manager = _core.MemoryManager(1)
    assert manager.pressure() == 3
    stats = manager.stats()
    assert (stats["limit_source"], stats["limit_mb"], stats["pressure"]) == ("explicit", 1.0, 3)


def test_limit_above_the_machine_loses_to_the_system() -> None:
    manager = _core.MemoryManager(10**9)
    assert manager.limit_source in ("system", "cgroup")
    assert manager.limit_mb < 10**9
    assert manager.pressure() == 0


# ---- profiles ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_thresholds(profile: str) -> None:
    moderate, high, critical = PROFILES[profile]
    assert _core.MemoryManager(profile=profile).stats()["thresholds"] == (moderate, high, critical)
    # Pressure at the middle of each band: the limit is set so that RSS / limit lands there.
    for usage, expected in [
        (moderate - 0.08, 0),
        ((moderate + high) / 2, 1),
        ((high + critical) / 2, 2),
        (min(critical + 0.08, 0.99), 3),
    ]:
        manager = _core.MemoryManager(proc_status_mb("VmRSS") / usage, profile)
        assert manager.pressure() == expected, (profile, usage)
        assert manager.profile == profile


def test_no_profile_is_the_default() -> None:
    assert _core.MemoryManager().profile == "default"
    assert _core.MemoryManager().stats()["thresholds"] == PROFILES["default"]


# ---- the budget --------------------------------------------------------------------------


def test_budget_with_room_is_the_maximum() -> None:
    assert _core.MemoryManager().optimal_batch_tokens(256) == 8192
    assert _core.MemoryManager(max_batch_tokens=2048).optimal_batch_tokens(128) == 2048


def test_budget_follows_the_headroom() -> None:
    # Limits that leave -10, 20, 60 and 200 MB above RSS + the model's weights at the first
    # budget's target (halfway between MODERATE and HIGH): more room, more tokens; no room, one
    # row. The bytes per row come from cx_footprint_scratch_bytes (about 4-8 MB per 256-token row).
    rss = proc_status_mb("VmRSS")
    weights_mb = 86  # all-MiniLM-L6-v2 in float32, not yet resident for a fresh manager
    budgets = []
    for room in (-10, 20, 60, 200):
        manager = _core.MemoryManager((rss + weights_mb + room) / 0.675)
        budgets.append(manager.optimal_batch_tokens(256))
    assert budgets[0] == 256
    assert budgets[1] < budgets[2] < budgets[3] <= 8192
    assert budgets[2] >= 2 * budgets[1]  # three times the room, about three times the rows
    assert budgets[1] <= 8 * 256
    assert all(tokens % 256 == 0 for tokens in budgets)  # whole rows of 256


def test_budget_is_at_least_one_row_and_the_minimum() -> None:
    manager = _core.MemoryManager(1, min_batch_tokens=300)
    assert manager.optimal_batch_tokens(64) == 300
    assert manager.optimal_batch_tokens(512) == 512  # one row, even past the minimum


def test_budget_without_adaptation_is_fixed() -> None:
    manager = _core.MemoryManager(1, adaptive=False, max_batch_tokens=4096)
    assert manager.adaptive is False
    assert manager.optimal_batch_tokens(256) == 4096
    assert manager.stats()["batch_tokens"] == 4096


def test_budget_default_length_is_the_models() -> None:
    manager = _core.MemoryManager(1)
    assert manager.optimal_batch_tokens() == 256  # MiniLM's max_seq_length: one row


def test_budget_and_model_check_follow_the_attached_models_shape(tmp_path: Path) -> None:
    # A model of another shape (hidden 8, 16 positions: test_core_model's tiny BERT) attached
    # by an Embedder replaces MiniLM's shape in the budget and in the model check.
    from test_core_model import POSITIONS, make_folder

    tiny = str(make_folder(tmp_path / "tiny"))
    rss = proc_status_mb("VmRSS")
    roomy = _core.MemoryManager((rss + 86 + 4) / 0.675)  # 4 MB above MiniLM's weights
    assert roomy.optimal_batch_tokens(POSITIONS) < 8192
    embedder = _core.Embedder(tiny, precision="fp32", threads=1, memory=roomy)
    assert roomy.optimal_batch_tokens(POSITIONS) == 8192  # kilobytes of weights and rows
    assert roomy.optimal_batch_tokens() == 8192 // POSITIONS * POSITIONS
    del embedder

    small = _core.MemoryManager(1, min_batch_tokens=1)
    assert small.optimal_batch_tokens() == 256  # MiniLM's max_seq_length before any model
    with pytest.raises(_core.MemoryLimitError, match=f"one {POSITIONS}-token text"):
        _core.Embedder(tiny, precision="fp32", threads=1, memory=small)
    assert small.optimal_batch_tokens() == POSITIONS  # one row of the attached model


# ---- hooks and the model check -----------------------------------------------------------


def test_collect_counts_gc_and_trim() -> None:
    manager = _core.MemoryManager()
    collected = manager.collect()
    assert isinstance(collected, int) and collected >= 0
    manager.collect()
    stats = manager.stats()
    assert (stats["gc_runs"], stats["trims"]) == (2, 2)
    assert stats["cuda_releases"] == (2 if stats["cuda_available"] else 0)


def test_check_model_refuses_a_limit_too_small_for_the_model() -> None:
    with pytest.raises(_core.MemoryLimitError) as caught:
        _core.MemoryManager(64)._check_model()
    message = str(caught.value)
    assert message.startswith("memory limit (64 MB, explicit): too small for the model")
    minimum = int(message.split("need a limit of at least ")[1].split(" MB")[0])
    assert minimum > 64
    # The minimum it names is enough.
    _core.MemoryManager(minimum + 1)._check_model()


def test_check_model_accepts_a_generous_limit() -> None:
    _core.MemoryManager(8192)._check_model()  # no MemoryLimitError


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit_mb": -5}, ValueError, "limit_mb must be a positive number of megabytes, not -5"),
        ({"limit_mb": 0}, ValueError, "limit_mb must be a positive number of megabytes, not 0"),
        ({"limit_mb": True}, TypeError, "limit_mb must be a number of megabytes or None, not bool"),
        ({"limit_mb": "800"}, TypeError, "limit_mb must be a number of megabytes or None, not str"),
        (
            {"profile": "lavish"},
            ValueError,
            "memory profile (lavish): unknown; expected default, conservative, aggressive or",
        ),
        (
            {"min_batch_tokens": 512, "max_batch_tokens": 256},
            ValueError,
            "batch tokens (min 512, max 256): need 0 < min <= max",
        ),
        ({"max_batch_tokens": -1}, ValueError, "must not be negative"),
        ({"critical_wait_s": -1.0}, ValueError, "critical_wait_s must be between 0 and 3600"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        _core.MemoryManager(**kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_uninitialised_manager_raises() -> None:
    manager = _core.MemoryManager.__new__(_core.MemoryManager)
    with pytest.raises(RuntimeError, match="MemoryManager was not initialised"):
        manager.pressure()

"""Memory limits for embedding: `MemoryManager` keeps the C core's batches inside a limit; and
the ceiling a limit puts on the size of the files `coarch index` takes (`--max-file-size`).

The work is done in C (csrc/cx_memory.c): readings of RSS, the cgroup and the machine, pressure
against thresholds, a batch budget predicted from the model's shape and adapted to measured
pressure, and hooks between batches (garbage collection, malloc_trim, CUDA cache release, a
bounded wait at CRITICAL). This module adds what belongs to Python: the environment variables,
argument checks with clear messages, `MemoryPressure` members instead of bare ints, and the
memory a file takes while it is chunked (FILE_MEMORY_PER_BYTE), which sets that ceiling.

Environment (read only when the matching argument is None):
  COARCH_MEMORY_LIMIT_MB     explicit limit in MB (2**20 bytes); unset or empty for none
  COARCH_MEMORY_PROFILE      default | conservative | aggressive | development
  COARCH_ADAPTIVE_BATCHING   1/true/yes/on or 0/false/no/off (default on)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

from coarch import _core
from coarch.discovery import DEFAULT_MAX_FILE_SIZE, human_size
from coarch.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_LIMIT = "COARCH_MEMORY_LIMIT_MB"
ENV_PROFILE = "COARCH_MEMORY_PROFILE"
ENV_ADAPTIVE = "COARCH_ADAPTIVE_BATCHING"

# Fractions of the limit at which pressure becomes MODERATE, HIGH (gc + trim) and CRITICAL
# (also the CUDA release and the bounded wait). The C core holds the same table.
PROFILES: dict[str, tuple[float, float, float]] = {
    "default": (0.60, 0.75, 0.90),
    "conservative": (0.45, 0.60, 0.80),  # 8 GB machines: warn at 60 %, critical at 80 %
    "aggressive": (0.55, 0.70, 0.85),  # 16 GB and more: warn at 70 %, critical at 85 %
    "development": (0.40, 0.50, 0.65),  # trips every hook early, to exercise them
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class MemoryPressure(IntEnum):
    """How much of the memory limit is in use, judged against the profile's thresholds."""

    LOW = 0
    MODERATE = 1
    HIGH = 2
    CRITICAL = 3


def _check_limit(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of megabytes or None, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of megabytes, not {value!r}")
    return float(value)


def _check_profile(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    profile = value.strip().lower()
    if profile not in PROFILES:
        choices = ", ".join(PROFILES)
        raise ValueError(f"{name} must be one of {choices}, not {value!r}")
    return profile


def limit_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """COARCH_MEMORY_LIMIT_MB as a number of MB, or None when unset or empty."""
    raw = (os.environ if environ is None else environ).get(ENV_LIMIT, "").strip()
    if not raw:
        return None
    try:
        return _check_limit(float(raw), ENV_LIMIT)
    except ValueError:
        raise ConfigError(
            f"{ENV_LIMIT} must be a positive number of megabytes, not {raw!r}",
            hint=f"for example {ENV_LIMIT}=2048, or unset it for no explicit limit",
        ) from None


def profile_from_env(environ: Mapping[str, str] | None = None) -> str:
    """COARCH_MEMORY_PROFILE, or "default" when unset or empty."""
    raw = (os.environ if environ is None else environ).get(ENV_PROFILE, "").strip()
    if not raw:
        return "default"
    try:
        return _check_profile(raw, ENV_PROFILE)
    except ValueError as error:
        raise ConfigError(str(error), hint=f"unset {ENV_PROFILE} for the default profile") from None


def adaptive_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """COARCH_ADAPTIVE_BATCHING as a bool, True when unset or empty."""
    raw = (os.environ if environ is None else environ).get(ENV_ADAPTIVE, "").strip().lower()
    if not raw or raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(
        f"{ENV_ADAPTIVE} must be one of 1, true, yes, on, 0, false, no, off, not {raw!r}",
        hint=f"unset {ENV_ADAPTIVE} to keep adaptive batching on",
    )


class MemoryManager(_core.MemoryManager):
    """Keeps embedding inside a memory limit; pass it as `Embedder(memory=...)`.

    The effective limit is the smallest of `limit_mb` (MB = 2**20 bytes), the cgroup's limit
    and what the machine can give (available memory plus this process's RSS at creation);
    `limit_source` says which won. `profile` picks the pressure thresholds (see PROFILES).
    `adaptive=False` keeps every batch at `max_batch_tokens`. Arguments left as None are read
    from COARCH_MEMORY_LIMIT_MB, COARCH_MEMORY_PROFILE and COARCH_ADAPTIVE_BATCHING; a bad
    value there raises ConfigError, a bad argument ValueError or TypeError.
    `critical_wait_s` bounds the wait for relief at CRITICAL (0: no wait). A manager is
    initialised once (a second __init__ raises RuntimeError): Embedders and running encodes
    hold on to it; create a new one for other settings.
    """

    def __init__(
        self,
        limit_mb: float | None = None,
        profile: str | None = None,
        adaptive: bool | None = None,
        *,
        min_batch_tokens: int = 0,
        max_batch_tokens: int = 0,
        critical_wait_s: float = 10.0,
    ) -> None:
        limit = limit_from_env() if limit_mb is None else _check_limit(limit_mb, "limit_mb")
        name = profile_from_env() if profile is None else _check_profile(profile, "profile")
        if adaptive is None:
            adaptive = adaptive_from_env()
        elif not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be a bool or None, not {type(adaptive).__name__}")
        for label, tokens in (
            ("min_batch_tokens", min_batch_tokens),
            ("max_batch_tokens", max_batch_tokens),
        ):
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ValueError(f"{label} must be an int >= 0 (0: the default), not {tokens!r}")
        if max_batch_tokens and min_batch_tokens > max_batch_tokens:
            raise ValueError(
                f"min_batch_tokens ({min_batch_tokens}) must not exceed max_batch_tokens "
                f"({max_batch_tokens})"
            )
        if (
            isinstance(critical_wait_s, bool)
            or not isinstance(critical_wait_s, (int, float))
            or (not 0 <= critical_wait_s <= 3600)
        ):
            raise ValueError(
                f"critical_wait_s must be a number of seconds in [0, 3600], not {critical_wait_s!r}"
            )
        super().__init__(
            limit,
            name,
            adaptive,
            min_batch_tokens=min_batch_tokens,
            max_batch_tokens=max_batch_tokens,
            critical_wait_s=float(critical_wait_s),
        )
        logger.debug(
            "memory limit %.0f MB (%s), profile %s, adaptive %s",
            self.limit_mb,
            self.limit_source,
            name,
            adaptive,
        )

    def pressure(self) -> MemoryPressure:
        """LOW, MODERATE, HIGH or CRITICAL, read now (microseconds, no allocation)."""
        return MemoryPressure(super().pressure())

    def stats(self) -> dict[str, Any]:
        """Fresh readings, the budget and the counters; `pressure` as a MemoryPressure."""
        stats = super().stats()
        stats["pressure"] = MemoryPressure(stats["pressure"])
        return stats

    def __repr__(self) -> str:
        return (
            f"MemoryManager(limit_mb={self.limit_mb:.0f} ({self.limit_source}), "
            f"profile={self.profile!r}, adaptive={self.adaptive})"
        )


def manager_for(limit_mb: float | None = None, profile: str | None = None) -> MemoryManager:
    """The MemoryManager of an indexing run's settings (None: the environment's, see
    MemoryManager); bad settings raise ConfigError, before anything is written."""
    try:
        return MemoryManager(limit_mb=limit_mb, profile=profile)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


# ---- the size cap of `coarch index` -------------------------------------------------------------

# Memory a file takes while it is read, chunked and waits for its vectors, per byte of it: peak
# RSS above a tiny tree's (254 MiB) was 8.2 bytes per byte for one 50 MB Python file, 11.2 for a
# 20 MB one (cut by lines: coarch.chunking.GRAMMAR_MAX_CHARS); 12 leaves some headroom.
FILE_MEMORY_PER_BYTE = 12
PROCESS_RESERVE_MB = 300  # the model, libtorch and the interpreter, before any file
MODEL_RESERVE_MB = 120  # the model's weights (86 MB) and one batch's scratch


def max_file_size_ceiling(limit_mb: float, rss_mb: float = 0.0) -> int:
    """The largest file size (bytes) whose files can be chunked within a memory limit (MiB),
    for a process holding `rss_mb` before the model is loaded."""
    reserve = max(PROCESS_RESERVE_MB, rss_mb + MODEL_RESERVE_MB)
    return max(0, int((limit_mb - reserve) * 2**20 / FILE_MEMORY_PER_BYTE))


def check_max_file_size(
    cap: int, limit_mb: float | None = None, profile: str | None = None
) -> None:
    """Refuses, before any work, a size cap (`--max-file-size`, bytes) whose files cannot be
    chunked within the memory limit of these settings: a file is held whole while it is
    chunked. The default cap is not checked: the reserve is generous for 1 MB files (ordinary
    trees peak at 308 MB under a 400 MB limit), and refusing it would refuse small limits that
    work."""
    if cap <= DEFAULT_MAX_FILE_SIZE:
        return
    memory = manager_for(limit_mb, profile)
    limit = float(memory.limit_mb)
    ceiling = max_file_size_ceiling(limit, float(memory.stats()["rss_mb"]))
    if cap <= ceiling:
        return
    # Shown rounded down, so the figure named is one that passes this check.
    ceiling -= ceiling % 100_000
    hint = (
        f"use --max-file-size {ceiling // 1000**2}M or less, or raise --memory-limit"
        if ceiling >= DEFAULT_MAX_FILE_SIZE
        else "raise --memory-limit"
    )
    raise ConfigError(
        f"--max-file-size {human_size(cap)} is over the ceiling of {human_size(ceiling)} that"
        f" the memory limit ({limit:.0f} MB, {memory.limit_source}) allows: a file takes about"
        f" {FILE_MEMORY_PER_BYTE} bytes of memory per byte while it is chunked",
        hint=hint,
    )

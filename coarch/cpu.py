"""The CPU's instruction sets, and the OpenBLAS kernels they call for.

libtorch runs its fp32 matrix products in OpenBLAS, which picks its kernels once, when it loads,
from the CPU's model number. On CPUs its table does not know (newer models, or virtual machines
that report a generic "Intel Xeon Processor") it falls back to its SSE3 kernels ("Prescott"):
measured on such a virtual machine with AVX-512, a [4096x384]x[384x1152] product ran at 60
GFLOP/s there and at about 180 with the AVX-512 kernels ("SkylakeX"). coarch therefore names the
kernels from the CPU's feature flags before libtorch loads OpenBLAS, unless the user already set
OPENBLAS_CORETYPE, which is always honoured.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

OPENBLAS_CORETYPE = "OPENBLAS_CORETYPE"

# What each OpenBLAS kernel set needs from the CPU, best first.
_OPENBLAS_CORES: tuple[tuple[str, frozenset[str]], ...] = (
    ("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)

# Where OPENBLAS_CORETYPE came from in this process: "environment" (set before coarch was
# imported), "coarch" (chosen here from the CPU flags) or "openblas" (left to OpenBLAS).
openblas_core_source = "openblas"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU in `cpuinfo`; empty where there is no such file."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def openblas_core_for(flags: frozenset[str]) -> str | None:
    """The best OpenBLAS kernel set these flags can run, or None to leave the choice to it."""
    for core, needs in _OPENBLAS_CORES:
        if needs <= flags:
            return core
    return None


def choose_openblas_core() -> None:
    """Sets OPENBLAS_CORETYPE from the CPU's flags when the user has not set it. Must run before
    libtorch (and with it OpenBLAS) is loaded: OpenBLAS reads the variable only then."""
    global openblas_core_source
    if os.environ.get(OPENBLAS_CORETYPE):
        openblas_core_source = "environment"
        return
    core = openblas_core_for(cpu_flags())
    if core is not None:
        os.environ[OPENBLAS_CORETYPE] = core
        openblas_core_source = "coarch"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks on this platform
        return max(1, os.cpu_count() or 1)


def cap_threads(requested: int | None) -> int | None:
    """`requested` model threads, capped at the usable cores with a warning: each thread past
    them only adds switching (--threads 9999 started about 3,000 threads and never finished).
    None stays None (the embedder then uses every usable core)."""
    cores = usable_cores()
    if requested is None or requested <= cores:
        return requested
    log.warning(
        "%d threads asked for, but this process may use %d cores: using %d", requested, cores, cores
    )
    return cores

"""Environment figures every benchmark records: they change speed more than the code does."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def blas_record() -> dict[str, Any]:
    """Which OpenBLAS kernels the fp32 products use: OPENBLAS_CORETYPE, who chose it (the user's
    environment, coarch from the CPU flags, or OpenBLAS itself: coarch/cpu.py), the kernel set
    OpenBLAS reports, and the CPU's native bf16 support. Imports coarch, which makes the choice."""
    from coarch import _core, cpu

    flags = cpu.cpu_flags()
    return {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        "openblas_core_chosen_by": cpu.openblas_core_source,
        "blas_core": _core.backend_info().get("blas_core"),
        "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
    }


def search_environment() -> dict[str, Any]:
    """What the search benchmarks record: CPU, thread settings, load and library versions."""
    import faiss

    import coarch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        **blas_record(),
        **{name: os.environ.get(name, "unset") for name in THREAD_VARIABLES},
        "faiss_omp_max_threads": faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "coarch": coarch.__version__,
        "faiss": faiss.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# A small launcher forks and execs the measured command and reports its peak RSS from wait4. Why
# not wait4 on the command directly: at exec the kernel folds the peak RSS of the address space
# being replaced into the new program's ru_maxrss, and a child spawned by a benchmark (vfork) or
# forked from it starts from the benchmark's own address space, so every command would report
# at least the benchmark's size. The launcher is a bare interpreter: about 10 MB is the floor.
_LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as result:
    json.dump({"returncode": os.waitstatus_to_exitcode(status),
               "wall_s": time.perf_counter() - started,
               "peak_rss_mb": usage.ru_maxrss / 1024}, result)
"""


@dataclass(frozen=True)
class Measured:
    """A finished command: its exit status, wall time and its own peak RSS."""

    returncode: int
    wall_s: float
    peak_rss_mb: float


def run_measured(
    cmd: list[str],
    *,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Runs `cmd` in a fresh process (through the launcher) with the given standard streams and
    returns what it measured; the peak RSS counts nothing of this process."""
    with tempfile.TemporaryDirectory(prefix="coarch-measure-") as folder:
        result_path = Path(folder) / "result.json"
        subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(result_path), *cmd],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=cwd,
            check=False,
        )
        if not result_path.exists():
            raise RuntimeError(f"the launcher could not run {cmd[0]}")
        result = json.loads(result_path.read_text())
    return Measured(result["returncode"], result["wall_s"], result["peak_rss_mb"])

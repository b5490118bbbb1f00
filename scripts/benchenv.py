"""Environment figures every benchmark records: they change speed more than the code does."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path
from typing import Any


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


def search_environment() -> dict[str, Any]:
    """What the search benchmarks record: CPU, thread settings, load and library versions."""
    import faiss

    import coarch

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
        **{name: os.environ.get(name, "unset") for name in THREAD_VARIABLES},
        "faiss_omp_max_threads": faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "coarch": coarch.__version__,
        "faiss": faiss.__version__,
        "sqlite": sqlite3.sqlite_version,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }

"""memory_ballast_job.py: the embedding job tests/test_memory.py runs in a subprocess.

Usage: python memory_ballast_job.py LIMIT_MB TEXTS.json VECTORS.npy

Embeds the texts in four equal phases with a MemoryManager(limit_mb=LIMIT_MB) while ballast
(bytearrays touched page by page, so every page is resident) is allocated in this same process:
  low       no ballast
  high      ballast up to halfway between the HIGH and CRITICAL thresholds
  critical  ballast up to 3 % over the CRITICAL threshold
  relief    ballast freed
After every batch the progress callback records the manager's budget and pressure. Prints one
JSON object (phases, batches, final stats, vm_hwm_mb) and saves the vectors to VECTORS.npy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from coarch.embedder import Embedder
from coarch.memory import MemoryManager

PAGE = 4096
CHUNK = 4 << 20


def status_mb(field: str) -> float:
    """A field of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    return status_mb("VmRSS")


def add_ballast(ballast: list[bytearray], target_mb: float) -> None:
    """Allocates CHUNK-sized bytearrays until the RSS reaches target_mb; writing one byte per
    page makes each page resident (a fresh bytearray is zero pages the kernel has not given)."""
    while rss_mb() < target_mb:
        chunk = bytearray(CHUNK)
        chunk[::PAGE] = b"\x01" * (CHUNK // PAGE)
        ballast.append(chunk)


def main(argv: list[str]) -> int:
    limit_mb = float(argv[1])
    texts: list[str] = json.loads(Path(argv[2]).read_text())
    memory = MemoryManager(limit_mb=limit_mb, max_batch_tokens=1024, critical_wait_s=0.2)
    embedder = Embedder(threads=1, memory=memory)
    moderate, high, critical = memory.stats()["thresholds"]

    batches: list[dict[str, Any]] = []
    phase = "low"

    def progress(done: int, total: int) -> None:
        stats = memory.stats()
        batches.append(
            {
                "phase": phase,
                "done": done,
                "batch_tokens": stats["batch_tokens"],
                "pressure": int(stats["pressure"]),
                "rss_mb": round(stats["rss_mb"], 1),
                "gc_runs": stats["gc_runs"],
                "trims": stats["trims"],
                "waits": stats["waits"],
            }
        )

    ballast: list[bytearray] = []
    quarter = len(texts) // 4
    parts = []
    phases = []
    for index, (name, target) in enumerate(
        [
            ("low", None),
            ("high", limit_mb * (high + critical) / 2),
            ("critical", limit_mb * (critical + 0.03)),
            ("relief", 0.0),
        ]
    ):
        phase = name
        if target:
            add_ballast(ballast, target)
        elif target == 0.0:
            ballast.clear()
            memory.collect()
        before = memory.stats()
        chunk = texts[index * quarter : (index + 1) * quarter if index < 3 else len(texts)]
        parts.append(embedder.encode(chunk, progress=progress))
        phases.append(
            {
                "phase": name,
                "pressure_before": int(before["pressure"]),
                "rss_before_mb": round(before["rss_mb"], 1),
                "ballast_mb": len(ballast) * CHUNK / 2**20,
            }
        )

    np.save(argv[3], np.concatenate(parts))
    stats = memory.stats()
    stats["pressure"] = int(stats["pressure"])
    report = {
        "limit_mb": limit_mb,
        "thresholds": [moderate, high, critical],
        "phases": phases,
        "batches": batches,
        "stats": stats,
        # VmHWM, not ru_maxrss: a child's ru_maxrss includes its parent's peak at exec.
        "vm_hwm_mb": status_mb("VmHWM"),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

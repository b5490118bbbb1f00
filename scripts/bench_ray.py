#!/usr/bin/env python3
"""Benchmark `coarch index --ray` against the local indexer on the same tree; writes JSON.

Starts a Ray head on loopback (`ray start --head`, the CPUs given), then indexes one copy of
standard-library files from scratch: locally with 1 thread and with N threads, and through Ray
with 1 worker and with N workers (1 CPU each). Each run is a whole `coarch index` command (model
load, or joining the cluster and starting the actors, included), timed from outside. Reported:
chunks/s of each run, the Ray runs' share of the local rate with as many threads, each worker's
peak RSS (VmHWM, the OS's accounting) against its limit, and the overhead per batch: the extra
seconds of the 1-worker run over the 1-thread local run, divided by its batches.

    PYTHONPATH=. .venv/bin/python scripts/bench_ray.py --limit-files 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import blas_record, cpu_model

ROOT = Path(__file__).resolve().parent.parent
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
}


def log(message: str) -> None:
    print(f"bench_ray: {message}", file=sys.stderr, flush=True)


def make_tree(dest: Path, limit: int) -> int:
    """Copies `limit` .py files of the standard library, spread evenly, under `dest`."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if 2000 < p.stat().st_size < 20000)
    step = max(1, len(files) // max(1, limit))
    chosen = files[::step][:limit]
    dest.mkdir(parents=True)
    for path in chosen:
        (dest / path.name).write_bytes(path.read_bytes())
    return len(chosen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_head(cpus: int, temp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            str(cpus),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **RAY_ENV},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(3)  # the raylet registers after the GCS answers
                return proc, f"127.0.0.1:{port}"
        time.sleep(0.5)
    raise RuntimeError("the Ray head did not come up")


def index_run(tree: Path, index_dir: Path, extra: list[str]) -> dict[str, Any]:
    env = {**os.environ, **RAY_ENV, "COARCH_PRECISION": "fp32"}
    t0 = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coarch",
            "index",
            "--json",
            "-q",
            "--full",
            "--index",
            str(index_dir),
            *extra,
            str(tree),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"coarch index {' '.join(extra)} failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.splitlines()[-1])
    return {
        "wall_s": round(wall, 2),
        "chunks_embedded": summary["chunks_embedded"],
        "chunks_per_s": round(summary["chunks_embedded"] / wall, 1),
        "driver_peak_rss_mb": round(summary["peak_rss"] / 2**20),
        "workers": [
            {
                "peak_rss_mb": round(w["peak_rss"] / 2**20),
                "limit_mb": w["limit_mb"],
                "under_limit": w["peak_rss"] < w["limit_mb"] * 2**20,
                "files": w["files"],
                "chunks_embedded": w["chunks_embedded"],
            }
            for w in summary.get("workers", [])
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit-files",
        type=int,
        default=60,
        metavar="N",
        help="standard-library files of 2-20 kB to index (default: 60)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        metavar="N",
        help="workers (and local threads) of the wide runs (default: the cores available)",
    )
    parser.add_argument(
        "--batch-files", type=int, default=4, metavar="N", help="files per worker call (default: 4)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results" / "ray.json")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cxb", dir="/tmp"))
    tree = work / "tree"
    files = make_tree(tree, args.limit_files)
    n = args.workers
    results: dict[str, Any] = {
        "environment": {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "load_average": os.getloadavg(),
            "blas": blas_record(),
            "python": sys.version.split()[0],
        },
        "files": files,
        "batch_files": args.batch_files,
    }
    log(f"{files} files in {tree}; starting a Ray head with {n} CPUs")
    head, address = start_head(n, work / "ray")
    try:
        runs = {
            "local_1_thread": ["--threads", "1"],
            f"local_{n}_threads": ["--threads", str(n)],
            "ray_1_worker": [
                "--ray-address",
                address,
                "--ray-workers",
                "1",
                "--ray-batch-files",
                str(args.batch_files),
            ],
            f"ray_{n}_workers": [
                "--ray-address",
                address,
                "--ray-workers",
                str(n),
                "--ray-batch-files",
                str(args.batch_files),
            ],
        }
        for name, extra in runs.items():
            log(f"{name} ...")
            results[name] = index_run(tree, work / f"idx-{name}", extra)
            log(f"{name}: {results[name]['wall_s']}s, {results[name]['chunks_per_s']} chunks/s")
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    local1, localn = results["local_1_thread"], results[f"local_{n}_threads"]
    ray1, rayn = results["ray_1_worker"], results[f"ray_{n}_workers"]
    batches = math.ceil(files / max(1, min(args.batch_files, math.ceil(files / 2))))
    results["summary"] = {
        "ray_1_worker_vs_local_1_thread": round(ray1["chunks_per_s"] / local1["chunks_per_s"], 3),
        f"ray_{n}_workers_vs_local_{n}_threads": round(
            rayn["chunks_per_s"] / localn["chunks_per_s"], 3
        ),
        "ray_batches_1_worker": batches,
        "overhead_per_batch_s": round((ray1["wall_s"] - local1["wall_s"]) / batches, 3),
        "workers_under_limit": all(w["under_limit"] for r in (ray1, rayn) for w in r["workers"]),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench_memory.py: embedding under memory limits with coarch's MemoryManager.

Embeds real code chunks (the Python standard library, scripts/corpus.py) with coarch.Embedder
under memory limits of 400, 800 and 1,600 MB and with no limit (no MemoryManager at all), each
run in its own child process, and the same unlimited job at 5,000 and at 20,000 chunks to show
that memory does not grow with the work. The children stream: they read the texts from a JSON
Lines file in slices (--slice texts per encode call) and drop each slice's vectors after adding
them to a checksum, as the indexer does, so nothing but the model and one slice is held.

Per run: peak RSS (ru_maxrss of the child, benchenv.run_measured, and VmHWM), throughput (chunks/s and
tokens/s over the encode calls only), the RSS sampled over time by a thread reading
/proc/self/status, and the manager's counters (batches, final budget, gc runs, trims, waits).
The checksums of all runs over the same chunks agree: limits change batches, not vectors. In
fp32 to float rounding; in bf16 (the default where native) a vector's rounding depends on the
shape of its batch, so sums over 20,000 vectors differ by a few hundredths (each vector by a
cosine above 0.9999). Each run records the precision it used.

    .venv/bin/python scripts/bench_memory.py                 # the full benchmark (long)
    .venv/bin/python scripts/bench_memory.py --limit 300     # quick: 300 and 75 chunks

Targets: peak RSS never above the limit; the 800 MB run at least 85 % as fast as the
unlimited one; peak RSS at 20,000 chunks within 10 % of that at 5,000. Prints a table on stdout
and writes JSON (--output, default bench-results/memory.json) with every run, the targets and
the environment figures that change speed (threads, OPENBLAS_CORETYPE, CPU model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from benchenv import blas_record, cpu_model, run_measured

DEFAULT_CHUNKS = 20000
DEFAULT_SMALL = 5000
DEFAULT_LIMITS = "400,800,1600,none"
SAMPLES_KEPT = 240  # RSS samples per run in the JSON (evenly thinned)


def log(message: str) -> None:
    print(f"bench_memory: {message}", file=sys.stderr, flush=True)


def parse_limits(text: str) -> list[float | None]:
    limits: list[float | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in ("none", "0", ""):
            limits.append(None)
            continue
        value = float(item)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"memory limits must be positive MB, not {item}")
        limits.append(value)
    return limits


# ---------------------------------------------------------------------------------------------
# Child side: one run in its own process.


def status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    """Reads VmRSS every `interval` seconds until stopped. The encode loop releases the GIL,
    so the samples keep coming while batches run."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.started = time.perf_counter()
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.perf_counter() - self.started, status_mb("VmRSS:")))
            self.stopping.wait(self.interval)

    def stop(self) -> list[tuple[float, float]]:
        self.stopping.set()
        self.join()
        return self.samples


def read_slices(path: Path, count: int, size: int) -> Any:
    """Yields lists of at most `size` texts, the first `count` lines of a JSON Lines file."""
    taken = 0
    batch: list[str] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if taken == count:
                break
            batch.append(json.loads(line))
            taken += 1
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def run_worker(args: argparse.Namespace) -> int:
    import numpy as np

    from coarch.embedder import Embedder
    from coarch.memory import MemoryManager

    sampler = RssSampler(args.sample_interval)
    sampler.start()
    memory = MemoryManager(limit_mb=args.worker_limit) if args.worker_limit else None
    started = time.perf_counter()
    embedder = Embedder(threads=args.threads or None, memory=memory)
    load_s = time.perf_counter() - started

    checksum = np.zeros(embedder.dim, dtype=np.float64)
    chunks = tokens = 0
    encode_s = 0.0
    window = embedder.max_seq_length
    for texts in read_slices(Path(args.worker_texts), args.worker_count, args.slice):
        tokens += sum(min(embedder.count_tokens(t), window) for t in texts)
        started = time.perf_counter()
        vectors = embedder.encode(texts)
        encode_s += time.perf_counter() - started
        checksum += vectors.sum(axis=0, dtype=np.float64)
        chunks += len(texts)
        del vectors, texts

    samples = sampler.stop()
    report: dict[str, Any] = {
        "limit_mb": args.worker_limit,
        "chunks": chunks,
        "tokens": tokens,
        "load_s": round(load_s, 3),
        "encode_s": round(encode_s, 3),
        "chunks_per_s": round(chunks / encode_s, 2) if encode_s else None,
        "tokens_per_s": round(tokens / encode_s, 1) if encode_s else None,
        "vm_hwm_mb": round(status_mb("VmHWM:"), 1),
        "threads": embedder.threads,
        "precision": embedder.precision,
        "checksum": [float(x) for x in checksum],
        "rss_samples": thin(samples, SAMPLES_KEPT),
    }
    if memory is not None:
        stats = memory.stats()
        report["memory"] = {
            key: (int(value) if key == "pressure" else value)
            for key, value in stats.items()
            if key
            in (
                "limit_mb",
                "limit_source",
                "profile",
                "pressure",
                "batch_tokens",
                "batches",
                "gc_runs",
                "trims",
                "waits",
                "cuda_releases",
            )
        }
    print(json.dumps(report))
    return 0


def thin(samples: list[tuple[float, float]], keep: int) -> list[list[float]]:
    if len(samples) > keep:
        step = len(samples) / keep
        samples = [samples[int(i * step)] for i in range(keep)] + [samples[-1]]
    return [[round(t, 2), round(rss, 1)] for t, rss in samples]


# ---------------------------------------------------------------------------------------------
# Parent side.


def run_child(
    args: argparse.Namespace, texts: Path, count: int, limit: float | None, workdir: Path
) -> dict[str, Any]:
    """One run in a child process; adds the child's own peak RSS and its wall time."""
    name = f"{count}-{int(limit) if limit else 'none'}"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--worker-texts",
        str(texts),
        "--worker-count",
        str(count),
        "--slice",
        str(args.slice),
        "--threads",
        str(args.threads),
        "--sample-interval",
        str(args.sample_interval),
    ]
    if limit:
        command += ["--worker-limit", str(limit)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COARCH_MEMORY")}
    env.pop("COARCH_ADAPTIVE_BATCHING", None)
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    log(f"run {name}: {count} chunks, limit {f'{limit:.0f} MB' if limit else 'none'}")
    with out_path.open("w") as out, err_path.open("w") as err:
        measured = run_measured(command, stdout=out, stderr=err, env=env)
    code = measured.returncode
    if code != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"bench_memory: run {name} failed with exit code {code}:\n{tail}")
    report: dict[str, Any] = json.loads(out_path.read_text().strip().splitlines()[-1])
    report["peak_rss_mb"] = round(measured.peak_rss_mb, 1)
    report["wall_s"] = round(measured.wall_s, 2)
    return report


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from coarch import _core

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    return {
        "threads": args.threads or "all cores",
        **blas_record(),
        "backend": _core.backend_info(),
        "cores_available": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "mem_total_mb": round(total_kb / 1024),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def checksum_spread(runs: list[dict[str, Any]]) -> float:
    """Largest difference between the checksums of runs over the same chunks."""
    worst = 0.0
    by_count: dict[int, list[list[float]]] = {}
    for run in runs:
        by_count.setdefault(run["chunks"], []).append(run["checksum"])
    for sums in by_count.values():
        for other in sums[1:]:
            worst = max(worst, max(abs(a - b) for a, b in zip(sums[0], other)))
    return worst


def targets(runs: list[dict[str, Any]], big: int, small: int) -> dict[str, Any]:
    limited = [r for r in runs if r["limit_mb"]]
    unlimited = {r["chunks"]: r for r in runs if not r["limit_mb"]}
    result: dict[str, Any] = {
        "peak_within_limit": {
            f"{r['limit_mb']:.0f}": r["peak_rss_mb"] <= r["limit_mb"] for r in limited
        },
    }
    at_800 = next((r for r in limited if r["limit_mb"] == 800 and r["chunks"] == big), None)
    if at_800 and big in unlimited and unlimited[big]["chunks_per_s"]:
        ratio = at_800["chunks_per_s"] / unlimited[big]["chunks_per_s"]
        result["speed_800_vs_unlimited"] = round(ratio, 3)
        result["speed_800_at_least_85_percent"] = ratio >= 0.85
    if big in unlimited and small in unlimited:
        growth = unlimited[big]["peak_rss_mb"] / unlimited[small]["peak_rss_mb"]
        result[f"peak_{big}_vs_{small}"] = round(growth, 3)
        result["peak_grows_under_10_percent"] = growth <= 1.10
    result["checksum_spread"] = checksum_spread(runs)
    return result


def table(runs: list[dict[str, Any]]) -> str:
    header = (
        "limit MB",
        "chunks",
        "chunks/s",
        "tokens/s",
        "peak MB",
        "HWM MB",
        "budget",
        "batches",
        "gc",
        "trims",
        "waits",
    )
    rows = [header]
    for r in runs:
        m = r.get("memory", {})
        rows.append(
            (
                f"{r['limit_mb']:.0f}" if r["limit_mb"] else "none",
                str(r["chunks"]),
                f"{r['chunks_per_s']:.1f}",
                f"{r['tokens_per_s']:.0f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['vm_hwm_mb']:.0f}",
                str(m.get("batch_tokens", "-")),
                str(m.get("batches", "-")),
                str(m.get("gc_runs", "-")),
                str(m.get("trims", "-")),
                str(m.get("waits", "-")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Embed code chunks under memory limits (each run in its own process): peak "
        "RSS, throughput, RSS over time, the MemoryManager's counters. Prints a table and "
        "writes JSON.",
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=DEFAULT_CHUNKS,
        help=f"chunks per run (default {DEFAULT_CHUNKS})",
    )
    parser.add_argument(
        "--small",
        type=int,
        default=DEFAULT_SMALL,
        help=f"the smaller unlimited run for the growth check (default {DEFAULT_SMALL})",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="quick run: embed this many chunks (and a quarter of it for the "
        "growth check) instead of --chunks and --small",
    )
    parser.add_argument(
        "--memory-limits",
        type=parse_limits,
        default=parse_limits(DEFAULT_LIMITS),
        help=f"comma-separated MB, 'none' for no MemoryManager (default {DEFAULT_LIMITS})",
    )
    parser.add_argument(
        "--slice",
        type=int,
        default=1000,
        help="texts per encode call: the streaming unit (default 1000)",
    )
    parser.add_argument("--threads", type=int, default=0, help="threads (default: all cores)")
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=0.1,
        help="seconds between RSS samples (default 0.1)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "bench-results" / "memory.json",
        help="JSON results (default bench-results/memory.json)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-texts", help=argparse.SUPPRESS)
    parser.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)

    big = args.limit if args.limit else args.chunks
    small = max(1, big // 4) if args.limit else args.small
    if small >= big:
        parser.error("--small must be smaller than --chunks")

    import corpus

    log(f"cutting {big} chunks from the standard library")
    texts = [chunk.text for chunk in corpus.code_chunks(big)]
    with tempfile.TemporaryDirectory(prefix="coarch-bench-memory-") as folder:
        workdir = Path(folder)
        texts_path = workdir / "texts.jsonl"
        with texts_path.open("w", encoding="utf-8") as out:
            for text in texts:
                out.write(json.dumps(text) + "\n")
        del texts
        runs = [run_child(args, texts_path, big, limit, workdir) for limit in args.memory_limits]
        runs.append(run_child(args, texts_path, small, None, workdir))

    results = {
        "chunks": big,
        "small": small,
        "slice": args.slice,
        "runs": runs,
        "targets": targets(runs, big, small),
        "environment": environment(args),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(table(runs))
    print()
    for key, value in results["targets"].items():
        print(f"{key}: {value}")
    env = results["environment"]
    print(
        f"cpu: {env['cpu_model']} ({env['cores_available']} cores), threads {env['threads']}, "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} ({env['openblas_core_chosen_by']}), python {env['python']}"
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

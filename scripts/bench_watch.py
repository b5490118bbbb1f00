"""bench_watch.py: `coarch watch` over a long run, an edit every --interval seconds.

Records the watcher's RSS and the load average every --sample-every seconds, the batches it
reported, and at the end how long it took to exit after SIGTERM and with what status (143
expected). The issue's target: RSS flat within 5 % over an hour, between the first sample after
warm-up (the reference, a tenth of the run in) and the last. Each edit rewrites one of five files
with a new function (their sizes stay the same), so the index does not grow with the run and any
growth of RSS is the watcher's own. The JSON is rewritten after every sample, so a run cut short
still leaves its figures.

The tree: --work's repo/ and index/ when they exist (reused across runs: a 50,000-chunk index
takes a long time to embed on a small machine), else --files files of the standard library,
indexed first.

    .venv/bin/python scripts/bench_watch.py --work /tmp/bench_watch --files 1000 --seconds 3600
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mcp
from bench_mcp import make_tree, rss_kib
from benchenv import search_environment

import coarch

EDIT_FILES = 5


def edit(root: Path, n: int) -> None:
    """Rewrites edits/edit_{n % 5}.py with a function named after n (same size every time)."""
    path = root / "edits" / f"edit_{n % EDIT_FILES}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"def watch_edit_marker_{n:08d}(value):\n    return value + {n:08d}\n", encoding="utf-8"
    )


class Watch(bench_mcp.Watch):
    """`coarch watch --json` in a child process (as bench_mcp starts it); counts its batch
    lines and the chunks they embedded."""

    def __init__(self, root: Path, index_dir: Path) -> None:
        self.batches = 0
        self.chunks_embedded = 0
        super().__init__(root, index_dir)  # starts the thread reading with _read

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.batches += 1
                self.chunks_embedded += json.loads(line).get("chunks_embedded", 0)
                self._cond.notify_all()

    def wait_batches(self, n: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.batches >= n, timeout)

    def terminate(self, timeout: float) -> dict[str, Any]:
        """SIGTERM, then how long until it exited and its status (killed after `timeout`)."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return {"exited_s": None, "returncode": None, "killed_after_s": timeout}
        return {"exited_s": round(time.monotonic() - t, 2), "returncode": rc}


def ensure_index(work: Path, files: int) -> dict[str, Any]:
    root, index_dir = work / "repo", work / "index"
    root.mkdir(parents=True, exist_ok=True)
    if not any(root.iterdir()):
        make_tree(root, files)
    t = time.perf_counter()
    with coarch.Index(root, index_dir=index_dir) as index:
        summary = index.build()
    return {
        "files": summary.files_total,
        "chunks": summary.chunks_total,
        "update_seconds": round(time.perf_counter() - t, 1),
    }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS against the reference sample, a tenth of the way in (after the warm-up)."""
    if not samples:
        return {}
    ref = samples[min(len(samples) - 1, max(1, len(samples) // 10))]
    last = samples[-1]
    return {
        "first_mib": samples[0]["rss_mib"],
        "reference_mib": ref["rss_mib"],
        "reference_at_s": ref["t_s"],
        "last_mib": last["rss_mib"],
        "max_mib": max(s["rss_mib"] for s in samples),
        "drift_percent": round(100 * (last["rss_mib"] - ref["rss_mib"]) / ref["rss_mib"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--work",
        type=Path,
        required=True,
        help="work folder: repo/ and index/ (reused when present)",
    )
    parser.add_argument(
        "--files",
        type=int,
        default=1000,
        help="files in a new tree (default 1000: about 50,000 chunks)",
    )
    parser.add_argument("--seconds", type=float, default=3600, help="length (default 3600)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between edits (default 1)"
    )
    parser.add_argument(
        "--sample-every", type=float, default=10.0, help="seconds between RSS samples (default 10)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_watch.json"))
    args = parser.parse_args(argv)

    built = ensure_index(args.work, args.files)
    print(f"bench_watch: index {built}", file=sys.stderr)
    root = args.work / "repo"
    report: dict[str, Any] = {
        "index": built,
        "seconds": args.seconds,
        "interval": args.interval,
        "environment": search_environment(),
    }

    def write(done: bool) -> None:
        report["complete"] = done
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    watch = Watch(root, args.work / "index")
    samples: list[dict[str, Any]] = []
    report["samples"] = samples
    try:
        watch.wait_batches(2, timeout=120)  # the catch-up and the check once notifications run
        t0 = time.monotonic()
        next_sample = 0.0
        n = 0
        while (now := time.monotonic() - t0) < args.seconds:
            if watch.proc.poll() is not None:
                report["died"] = watch.proc.returncode
                break
            edit(root, n)
            n += 1
            if now >= next_sample:
                samples.append(
                    {
                        "t_s": round(now, 1),
                        "rss_mib": round(rss_kib(watch.proc.pid) / 1024, 1),
                        "load": [round(x, 2) for x in os.getloadavg()],
                        "batches": watch.batches,
                    }
                )
                report["rss"] = summarise(samples)
                report["edits"] = n
                write(False)
                next_sample += args.sample_every
            time.sleep(max(0.0, t0 + n * args.interval - time.monotonic()))
        report["edits"] = n
    finally:
        report["batches"] = watch.batches
        report["chunks_embedded"] = watch.chunks_embedded
        report["sigterm"] = watch.terminate(timeout=60)
    report["rss"] = summarise(samples)
    drift = report["rss"].get("drift_percent")
    report["targets"] = {
        "rss_flat_within_5_percent": drift is not None and abs(drift) <= 5,
        "sigterm_exit_143": report["sigterm"].get("returncode") == 143,
    }
    write(True)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

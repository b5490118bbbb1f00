"""bench_index.py: `coarch index` on the Python standard library's source tree, against a baseline
built the way simple code-search tools do it.

Runs, each as its own process so that each peak RSS (benchenv.run_measured) is its own:
  1. cold:      `coarch index` of a fresh copy of the tree into an empty index
  2. baseline:  scripts/baseline_index.py in .venv-ref: 50-line windows with 10 lines of
                overlap, sentence-transformers (batch 32, truncation at 256 tokens), FAISS HNSW
     (--rounds N repeats 1 and 2 alternately, each cold run into a new index, and compares the
     medians: on a shared virtual machine the same run varies by 15% or more over minutes, so
     the two sides are timed side by side, not one after the other)
  3. unchanged: `coarch index` again on the last cold index (nothing should be embedded)
  4. touched:   after appending a comment line to 10 files
  5. double (--double): cold index of a tree holding the files twice, for the peak-RSS growth

Both sides get the same files (the ones coarch's discovery keeps) and the same threads. The tree
is copied to a temporary folder first: the system's standard library is never touched. Ratios:
wall time; chunks per second; and lines embedded per second, because the baseline's model reads
only the first 256 tokens of each window and never embeds the rest of its lines, while coarch's
chunks cover every line.

    .venv/bin/python scripts/bench_index.py                      # the whole standard library
    .venv/bin/python scripts/bench_index.py --limit-files 200    # a quick run

Prints a table on stdout and writes JSON (--output, default bench-results/index.json) with every
run, the ratios, the targets and the environment figures that change speed (threads,
OPENBLAS_CORETYPE, CPU model, versions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from benchenv import blas_record, cpu_model, run_measured

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
TOUCHED = 10


def log(message: str) -> None:
    print(f"bench_index: {message}", file=sys.stderr, flush=True)


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs `cmd`, returns its wall time, peak RSS (MiB) and stdout; exits on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        measured = run_measured(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if measured.returncode != 0:
        raise SystemExit(
            f"bench_index: {' '.join(cmd[:4])} failed ({measured.returncode}):\n"
            f"{stderr.decode(errors='replace')[-3000:]}"
        )
    return {
        "wall_s": round(measured.wall_s, 3),
        "peak_rss_mb": round(measured.peak_rss_mb, 1),
        "stdout": stdout.decode(errors="replace"),
    }


def baseline_lines_embedded(root: Path, files: list[str]) -> tuple[int, int]:
    """(lines the baseline's model reads, lines of the files): a window is truncated at the
    model's 256 tokens, so its later lines are never embedded. Counted with coarch's tokenizer,
    which gives the model's own ids: BERT splits on whitespace, so a window's tokens are the sum
    of its lines' tokens (the first line is the window's path)."""
    from baseline_index import windows

    import coarch

    tokenizer = coarch.Embedder(precision="fp32")
    budget = tokenizer.max_seq_length - 2  # [CLS] and [SEP]
    texts, where, total = windows(root, files)
    seen: set[tuple[str, int]] = set()
    for text, (rel, start) in zip(texts, where):
        path_line, *lines = text.split("\n")
        used = tokenizer.count_tokens(path_line) - 2
        for number, line in enumerate(lines):
            if used >= budget:
                break
            seen.add((rel, start + number))
            used += tokenizer.count_tokens(line) - 2
    return len(seen), total


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def stdlib_files(limit: int | None) -> tuple[Path, list[str]]:
    """The standard library's source files (.py, plus C and other text files in it), spread
    evenly when limited. site-packages and caches are left out."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(lib.rglob("*")):
        rel = path.relative_to(lib)
        if rel.parts[0] in ("site-packages", "dist-packages") or "__pycache__" in rel.parts:
            continue
        if rel.parts[0].startswith("config-") or not path.is_file() or path.is_symlink():
            continue
        if path.suffix in (
            ".pyc",
            ".pyo",
            ".so",
            ".a",
            ".o",
            ".exe",
            ".png",
            ".gif",
            ".wav",
            ".ico",
            ".zip",
            ".gz",
            ".bz2",
            ".xz",
            ".tar",
        ):
            continue
        files.append(str(rel))
    if limit and limit < len(files):
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return lib, files


def copy_tree(lib: Path, files: list[str], dest: Path, copies: int = 1) -> None:
    for n in range(copies):
        base = dest if copies == 1 else dest / f"copy{n}"
        for rel in files:
            target = base / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib / rel, target)


def coarch_index(tree: Path, idx: Path, threads: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "coarch",
        "index",
        str(tree),
        "--index",
        str(idx),
        "--json",
        "-q",
        "--threads",
        str(threads),
    ]
    result = run_timed(cmd)
    summary = json.loads(result.pop("stdout"))
    result.update(
        {
            "files": summary["files_total"],
            "files_indexed": summary["files_indexed"],
            "chunks_embedded": summary["chunks_embedded"],
            "chunks_total": summary["chunks_total"],
            "embed_s": round(summary["embed_seconds"], 3),
            "chunks_per_s_embed": summary["chunks_per_second"],
            "chunks_per_s_wall": round(summary["chunks_embedded"] / result["wall_s"], 1),
            "size_on_disk_mb": round(folder_size(idx) / 2**20, 2),
            "in_process_peak_rss_mb": round(summary["peak_rss"] / 2**20, 1),
        }
    )
    return result


def indexed_files(idx: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(idx / "index.sqlite") as conn:
        return [
            r[0] for r in conn.execute("SELECT path FROM files WHERE skipped IS NULL ORDER BY path")
        ]


def baseline(tree: Path, files: list[str], out: Path, threads: int) -> dict[str, Any]:
    if not REFERENCE_PYTHON.exists():
        log("no .venv-ref (scripts/setup_reference.sh): baseline skipped")
        return {"skipped": "no .venv-ref"}
    import faiss  # its package folder is lent to the reference venv

    shim = out / "faiss-shim"
    shim.mkdir(parents=True, exist_ok=True)
    faiss_dir = Path(faiss.__file__).parent
    for item in (faiss_dir, faiss_dir.parent / "faiss_cpu.libs"):
        if item.exists():
            (shim / item.name).symlink_to(item)
    spec = out / "files.json"
    spec.write_text(json.dumps({"root": str(tree), "files": files}))
    from coarch.models import default_model_path

    env = {**os.environ, "PYTHONPATH": str(shim)}
    cmd = [
        str(REFERENCE_PYTHON),
        str(ROOT / "scripts" / "baseline_index.py"),
        str(spec),
        str(out / "index"),
        "--model",
        str(default_model_path()),
        "--threads",
        str(threads),
    ]
    result = run_timed(cmd, env)
    report: dict[str, Any] = json.loads(result.pop("stdout"))
    report["process_wall_s"] = result["wall_s"]
    report["peak_rss_mb"] = result["peak_rss_mb"]
    return report


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The first run's figures with `key` replaced by the median over all runs (kept under
    `key`_rounds) and the peak RSS by the largest."""
    if not runs or key not in runs[0]:
        return runs[0] if runs else {}
    merged = dict(runs[0])
    merged[key] = round(statistics.median(r[key] for r in runs), 3)
    merged[f"{key}_rounds"] = [r[key] for r in runs]
    if "peak_rss_mb" in merged:
        merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    if "chunks_embedded" in merged:
        merged["chunks_per_s_wall"] = round(merged["chunks_embedded"] / merged[key], 1)
    return merged


def environment(threads: int) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "threads": threads,
        "cores_available": len(os.sched_getaffinity(0)),
        **blas_record(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark `coarch index` (cold, unchanged, 10 files touched) against a "
        "50-line-window + sentence-transformers + HNSW baseline; writes JSON."
    )
    parser.add_argument(
        "--limit-files",
        type=int,
        metavar="N",
        help="use N files of the standard library, spread evenly (default: all)",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    parser.add_argument(
        "--double",
        action="store_true",
        help="also index the files twice over, for the peak-RSS growth",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="cold index and baseline N times, alternately; medians compared",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench-results" / "index.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    lib, files = stdlib_files(args.limit_files)
    work = Path(tempfile.mkdtemp(prefix="coarch-bench-"))
    log(f"{len(files)} files of {lib} -> {work}")
    results: dict[str, Any] = {"environment": environment(args.threads), "source": str(lib)}
    try:
        tree = work / "tree"
        copy_tree(lib, files, tree)
        colds: list[dict[str, Any]] = []
        bases: list[dict[str, Any]] = []
        kept: list[str] = []
        base_tree = work / "base-tree"
        for round_number in range(max(1, args.rounds)):
            idx = work / f"idx{round_number}"
            log(f"cold index (round {round_number + 1}) ...")
            colds.append(coarch_index(tree, idx, args.threads))
            log(f"cold: {colds[-1]['wall_s']}s, {colds[-1]['chunks_total']} chunks")
            if args.no_baseline:
                continue
            if not kept:
                kept = indexed_files(idx)
                copy_tree(lib, kept, base_tree)
            log(f"baseline (round {round_number + 1}) ...")
            bases.append(baseline(base_tree, kept, work / f"baseline{round_number}", args.threads))
            log(f"baseline: {bases[-1].get('process_wall_s')}s")
        results["cold"] = median_run(colds, "wall_s")
        if bases:
            results["baseline"] = median_run(bases, "process_wall_s")
            if "wall_s" in results["baseline"]:
                embedded, total = baseline_lines_embedded(base_tree, kept)
                results["baseline"].update(lines_embedded=embedded, lines_total=total)
        results["unchanged"] = coarch_index(tree, idx, args.threads)
        log(f"unchanged: {results['unchanged']['wall_s']}s")
        kept = kept or indexed_files(idx)
        step = max(1, len(kept) // TOUCHED)
        touched = kept[::step][:TOUCHED]
        for rel in touched:
            with open(tree / rel, "a", encoding="utf-8") as fh:
                fh.write("\n# touched by bench_index\n")
        results["touched"] = coarch_index(tree, idx, args.threads)
        results["touched"]["files_touched"] = touched
        log(f"touched: {results['touched']['wall_s']}s")
        if args.double:
            log("double ...")
            double_tree = work / "double"
            copy_tree(lib, files, double_tree, copies=2)
            results["double"] = coarch_index(double_tree, work / "idx-double", args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    cold = results["cold"]
    base = results.get("baseline", {})
    targets: dict[str, Any] = {
        "unchanged_under_3s": results["unchanged"]["wall_s"] < 3,
        "touched_under_10s": results["touched"]["wall_s"] < 10,
        "cold_peak_rss_under_1gb": cold["peak_rss_mb"] < 1024,
    }
    if "wall_s" in base:
        # Same files, same threads: the time to index them is the fair comparison; chunks/s
        # is reported too but depends on each side's chunk size.
        # coarch embeds every line; the baseline's model reads only the first 256 tokens of each
        # window, so part of the code is never embedded. Lines embedded per second counts the
        # code each side actually made searchable by meaning.
        coverage = base["lines_embedded"] / base["lines_total"] if base.get("lines_total") else None
        base["lines_embedded_share"] = round(coverage, 3) if coverage else None
        results["ratios"] = {
            "wall_time_speedup": round(base["process_wall_s"] / cold["wall_s"], 3),
            "chunks_per_s_ratio": round(
                cold["chunks_per_s_wall"] / (base["windows"] / base["process_wall_s"]), 3
            ),
            "baseline_lines_embedded_share": round(coverage, 3) if coverage else None,
            "embedded_lines_per_s_ratio": round(
                base["process_wall_s"] / (cold["wall_s"] * coverage), 3
            )
            if coverage
            else None,
            "peak_rss_ratio": round(cold["peak_rss_mb"] / base["peak_rss_mb"], 3),
        }
        targets["cold_throughput_at_least_1.3x"] = results["ratios"]["wall_time_speedup"] >= 1.3
        if coverage:
            targets["cold_embedded_lines_per_s_at_least_1.3x"] = (
                results["ratios"]["embedded_lines_per_s_ratio"] >= 1.3
            )
    if "double" in results:
        growth = results["double"]["peak_rss_mb"] / cold["peak_rss_mb"] - 1
        results["double"]["peak_rss_growth"] = round(growth, 3)
        targets["double_files_rss_growth_under_10pct"] = growth < 0.10
    results["targets"] = targets

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    rows = [("run", "wall s", "chunks", "chunks/s", "peak RSS MiB", "disk MiB")]
    for name in ("cold", "unchanged", "touched", "double"):
        r = results.get(name)
        if r:
            rows.append(
                (
                    name,
                    f"{r['wall_s']:.2f}",
                    str(r["chunks_embedded"]),
                    f"{r['chunks_per_s_wall']:.1f}",
                    f"{r['peak_rss_mb']:.0f}",
                    f"{r['size_on_disk_mb']:.1f}",
                )
            )
    if "wall_s" in base:
        rows.append(
            (
                "baseline",
                f"{base['process_wall_s']:.2f}",
                str(base["windows"]),
                f"{base['windows'] / base['process_wall_s']:.1f}",
                f"{base['peak_rss_mb']:.0f}",
                f"{base['size_bytes'] / 2**20:.1f}",
            )
        )
    for row in rows:
        print(f"{row[0]:<10} {row[1]:>8} {row[2]:>8} {row[3]:>9} {row[4]:>13} {row[5]:>9}")
    print(json.dumps({"ratios": results.get("ratios"), "targets": targets}))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

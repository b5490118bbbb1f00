"""bench_embed.py: embedding throughput and peak memory of coarch's Embedder, in fp32 and in bf16,
against the reference implementation (sentence-transformers on PyTorch), on the same real code
chunks, in one run.

Each implementation runs in its own child process, so each peak RSS (ru_maxrss of that child,
from wait4 in a bare launcher: benchenv.run_measured) is its own: coarch in this interpreter
(`--worker`), once per precision in --precisions (default fp32,bf16; fp32, bf16 or auto), one
after the other, then sentence-transformers once in .venv-ref (scripts/reference_embed.py; make
the venv with scripts/setup_reference.sh). All get the same texts (--limit chunks of the Python
standard library, scripts/corpus.py) and the same thread count; sentence-transformers keeps its
default batching (batch_size 32, length-sorted). Token counts come from coarch's tokenizer,
truncated to the model's window: the ids each model actually runs.

    .venv/bin/python scripts/bench_embed.py                  # 5,000 chunks, all cores
    .venv/bin/python scripts/bench_embed.py --limit 300      # quick run
    .venv/bin/python scripts/bench_embed.py --precisions auto --skip-reference

Prints a table on stdout (one column per coarch precision, then sentence-transformers) and
writes JSON (--output, default bench-results/embed.json): "coarch" keyed by requested precision,
each report with the precision actually used and why; "agreement" (worst and mean cosine of each
precision against sentence-transformers, and of bf16 against fp32); "ratios" (throughput and peak
RSS); "targets" (the issue's: bf16 at least 2x our fp32 and 2.5x sentence-transformers, fp32
faster than sentence-transformers; set for 2 threads), and the environment figures that change
speed (threads, OPENBLAS_CORETYPE, CPU model, the run-time bf16 check, libtorch and Python
versions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpus
from benchenv import blas_record, cpu_model, run_measured

REFERENCE_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
DEFAULT_TEXTS = 5000
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Not set by this script, recorded: they change how idle OpenMP threads wait (spinning threads
# cost a lot on a loaded machine).
RECORDED_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "COARCH_MODEL", "COARCH_LIBTORCH")


def log(message: str) -> None:
    print(f"bench_embed: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Child side: coarch's Embedder in its own process.


def run_worker(args: argparse.Namespace) -> int:
    """Encodes the texts file with coarch.Embedder and prints a JSON report shaped like
    reference_embed.py's; writes the vectors and the per-text token counts."""
    import numpy as np

    import coarch

    texts = json.loads(Path(args.worker_texts).read_text(encoding="utf-8"))
    options: dict[str, Any] = {"threads": args.threads}
    if args.precision:
        options["precision"] = args.precision

    started = time.perf_counter()
    embedder = coarch.Embedder(**options)
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    vectors = embedder.encode(texts, batch_tokens=args.batch_tokens)
    encode_s = time.perf_counter() - started

    window = int(embedder.max_seq_length)
    counts = [embedder.count_tokens(t) for t in texts]
    processed = sum(min(c, window) for c in counts)
    np.save(args.worker_output, np.ascontiguousarray(vectors, dtype=np.float32))
    Path(args.worker_output).with_suffix(".counts.json").write_text(json.dumps(counts))

    import resource

    report = {
        "implementation": "coarch",
        "texts": len(texts),
        "dim": int(embedder.dim),
        "tokens": processed,
        "max_seq_length": window,
        "batch_tokens": args.batch_tokens,
        # What was asked for and what ran: "auto" resolves to fp32 or bf16 at load time.
        "precision_requested": args.precision or "default",
        "precision": embedder.precision,
        "precision_reason": embedder.precision_reason,
        "load_s": round(load_s, 4),
        "encode_s": round(encode_s, 4),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": getattr(embedder, "threads", args.threads),
        "backend": backend_info(),
        "coarch": getattr(coarch, "__version__", None),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side.


def run_child(cmd: list[str], env: dict[str, str], workdir: Path, name: str) -> dict[str, Any]:
    """Runs one implementation; returns its JSON report plus wall_s and the child's own peak RSS
    (nothing of this process or the other child is counted)."""
    out_path = workdir / f"{name}.stdout"
    err_path = workdir / f"{name}.stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        measured = run_measured(cmd, stdout=out, stderr=err, env=env)
    if measured.returncode != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        raise SystemExit(
            f"bench_embed: {name} failed with exit code {measured.returncode}:\n{tail}"
        )
    lines = out_path.read_text().strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1])
    report["self_peak_rss_mb"] = report.pop("peak_rss_mb", None)
    report["peak_rss_mb"] = measured.peak_rss_mb
    report["wall_s"] = round(measured.wall_s, 3)
    return report


def backend_info() -> dict[str, Any]:
    """coarch._core's view of its backend (libtorch version, torch and BLAS threads, BLAS core),
    or {} when this build has no backend_info."""
    try:
        from coarch import _core
    except ImportError:
        return {}
    info = getattr(_core, "backend_info", None)
    return dict(info()) if callable(info) else {}


def libtorch_version() -> str:
    """Version of the libtorch coarch._core links: Debian's by default (setup.py), or the one
    named by COARCH_LIBTORCH when it was built against another."""
    reported = backend_info().get("libtorch")
    if reported:
        return str(reported)
    custom = os.environ.get("COARCH_LIBTORCH")
    headers = [Path(custom) / "include"] if custom else [Path("/usr/include")]
    for base in headers:
        version_h = base / "torch" / "csrc" / "api" / "include" / "torch" / "version.h"
        try:
            found = re.search(r'TORCH_VERSION\s+"([^"]+)"', version_h.read_text())
        except OSError:
            continue
        if found:
            return found.group(1)
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libtorch-dev"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout:
            return f"debian {done.stdout.strip()}"
    except OSError:
        pass
    return "unknown"


def environment(
    threads: int, env: dict[str, str], load_before: tuple[float, float, float], libtorch: str
) -> dict[str, Any]:
    return {
        **blas_record(),
        "threads": threads,
        "thread_variables": {k: env.get(k, "unset") for k in THREAD_VARIABLES},
        "other_variables": {k: env.get(k, "unset") for k in RECORDED_VARIABLES},
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "cores_available": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "libtorch": libtorch,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def compare(ours_path: Path, reference_path: Path) -> dict[str, float]:
    import numpy as np

    ours = np.load(ours_path).astype(np.float64)
    reference = np.load(reference_path).astype(np.float64)
    if ours.shape != reference.shape:
        raise SystemExit(
            f"bench_embed: shapes differ: ours {ours.shape}, reference {reference.shape}"
        )
    dots = np.einsum("ij,ij->i", ours, reference)
    cosines = dots / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    return {
        "worst_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "max_abs_diff": float(np.abs(ours - reference).max()),
    }


def bf16_native() -> dict[str, Any]:
    """coarch's run-time bf16 check, the one "auto" follows: whether bf16 is native here, and why
    (checked in this process; each worker's own answer is in its precision_reason)."""
    from coarch import _core

    native, reason = _core.bf16_native()
    return {"native": bool(native), "reason": str(reason)}


def parse_precisions(text: str) -> list[str]:
    """--precisions: a comma-separated list of fp32, bf16 and auto, in run order, each once."""
    from coarch.embedder import PRECISIONS

    chosen: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if name and name not in PRECISIONS:
            raise argparse.ArgumentTypeError(
                f"unknown precision {name!r} (use {', '.join(PRECISIONS)})"
            )
        if name and name not in chosen:
            chosen.append(name)
    if not chosen:
        raise argparse.ArgumentTypeError("name at least one precision")
    return chosen


def ratios(ours: dict[str, dict[str, Any]], reference: dict[str, Any] | None) -> dict[str, float]:
    """Throughput (texts/s) and peak RSS of each coarch precision over sentence-transformers', and
    bf16's throughput over fp32's; only the ratios whose runs happened."""
    found: dict[str, float] = {}
    if reference:
        for name, report in ours.items():
            found[f"{name}_over_st"] = report["texts_per_s"] / reference["texts_per_s"]
            found[f"{name}_rss_over_st"] = report["peak_rss_mb"] / reference["peak_rss_mb"]
    if "fp32" in ours and "bf16" in ours:
        found["bf16_over_fp32"] = ours["bf16"]["texts_per_s"] / ours["fp32"]["texts_per_s"]
    return found


def targets(found: dict[str, float]) -> dict[str, bool]:
    """The issue's targets (set for 2 threads), for those whose ratios this run has."""
    checks = {
        "bf16_at_least_2x_fp32": ("bf16_over_fp32", 2.0),
        "bf16_at_least_2_5x_st": ("bf16_over_st", 2.5),
    }
    met = {name: found[key] >= bound for name, (key, bound) in checks.items() if key in found}
    if "fp32_over_st" in found:
        met["fp32_faster_than_st"] = found["fp32_over_st"] > 1.0
    return met


def table(results: dict[str, Any]) -> str:
    ours: dict[str, dict[str, Any]] = results["coarch"]
    ref = results.get("sentence_transformers")
    # One column per coarch precision, then the reference's when it ran.
    columns: list[dict[str, Any] | None] = [*ours.values(), *([ref] if ref else [])]
    rows = [("", *(f"coarch {name}" for name in ours), *(["sentence-transformers"] if ref else []))]

    def cell(report: dict[str, Any] | None, key: str, fmt: str) -> str:
        if report is None or report.get(key) is None:
            return "-"
        return format(report[key], fmt)

    for label, key, fmt in (
        ("precision", "precision", ""),
        ("texts/s", "texts_per_s", ".1f"),
        ("tokens/s", "tokens_per_s", ".0f"),
        ("encode s", "encode_s", ".2f"),
        ("load s", "load_s", ".2f"),
        ("wall s", "wall_s", ".2f"),
        ("peak RSS MB", "peak_rss_mb", ".0f"),
        ("threads", "threads", ""),
    ):
        rows.append((label, *(cell(report, key, fmt) for report in columns)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    env = results["environment"]
    first = next(iter(ours.values()))
    lines.append("")
    lines.append(
        f"texts {results['texts']}, tokens {results['tokens']} (coarch tokenizer, window "
        f"{first['max_seq_length']})"
    )
    for name, report in ours.items():
        lines.append(f"coarch {name}: ran {report['precision']}: {report['precision_reason']}")
    native = env["bf16_native"]
    lines.append(f"bf16 native: {'yes' if native['native'] else 'no'}: {native['reason']}")
    for key, value in results.get("ratios", {}).items():
        lines.append(f"{key}: {value:.3f}")
    for key, met in results.get("targets", {}).items():
        lines.append(f"target {key}: {'met' if met else 'NOT met'}")
    if results.get("targets") and env["threads"] != 2:
        lines.append(f"(the targets are set for 2 threads; this run used {env['threads']})")
    # Keyed by precision (against sentence-transformers), plus "bf16_vs_fp32".
    for key, figures in results.get("agreement", {}).items():
        pair = f"{key} vs st" if key in ours else key.replace("_vs_", " vs ")
        lines.append(
            f"{pair}: worst cosine {figures['worst_cosine']:.9f}, mean "
            f"{figures['mean_cosine']:.9f}, max abs diff {figures['max_abs_diff']:.2e}"
        )
    lines.append(
        f"cpu: {env['cpu_model']} ({env['cores_available']} cores available), "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} ({env['openblas_core_chosen_by']}), libtorch {env['libtorch']}, "
        f"torch (reference) {ref['torch'] if ref else '-'}, python {env['python']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark coarch's Embedder in each precision against sentence-transformers "
        "(each in its own process) on the same code chunks: texts/s, tokens/s, wall time, peak "
        "RSS, ratios, targets, worst cosine. Prints a table and writes JSON.",
        epilog="Needs the reference venv for the comparison: scripts/setup_reference.sh.",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_TEXTS,
        help=f"number of code chunks (default {DEFAULT_TEXTS}; fewer for a quick run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for all implementations (default: the cores this process may use)",
    )
    parser.add_argument(
        "--precisions",
        type=parse_precisions,
        default="fp32,bf16",
        help="coarch precisions to run, each in its own process, comma-separated: fp32, bf16, "
        "auto (default fp32,bf16)",
    )
    parser.add_argument("--batch-tokens", type=int, help="coarch's padded-token budget per batch")
    parser.add_argument(
        "--skip-reference", action="store_true", help="run coarch only (no .venv-ref needed)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "bench-results" / "embed.json",
        help="JSON results (default bench-results/embed.json)",
    )
    # Child mode: this same script, run by the parent to encode with coarch in its own process.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-texts", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.limit < 1:
        parser.error("--threads and --limit must be at least 1")
    if args.worker:
        return run_worker(args)

    if not args.skip_reference and not REFERENCE_PYTHON.exists():
        parser.error(f"{REFERENCE_PYTHON} is missing (hint: scripts/setup_reference.sh)")

    load_before = os.getloadavg()
    log(f"cutting {args.limit} code chunks from {corpus.stdlib_root()}")
    texts = [c.text for c in corpus.code_chunks(args.limit)]

    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(args.threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory(prefix="coarch-bench-") as tmp:
        work = Path(tmp)
        texts_path = work / "texts.json"
        texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")

        # One child per precision, one after the other: each peak RSS and timing is its own.
        ours: dict[str, dict[str, Any]] = {}
        for precision in args.precisions:
            ours_cmd = [
                sys.executable, str(Path(__file__).resolve()), "--worker",
                "--worker-texts", str(texts_path),
                "--worker-output", str(work / f"coarch-{precision}.npy"),
                "--threads", str(args.threads), "--precision", precision,
            ]  # fmt: skip
            if args.batch_tokens:
                ours_cmd += ["--batch-tokens", str(args.batch_tokens)]
            log(f"coarch {precision}: encoding {len(texts)} texts with {args.threads} threads")
            ours[precision] = run_child(ours_cmd, env, work, f"coarch-{precision}")
        # The tokenizer is the same in every precision: the first child's counts serve all.
        first = args.precisions[0]
        counts = json.loads((work / f"coarch-{first}.counts.json").read_text())
        tokens = sum(min(c, ours[first]["max_seq_length"]) for c in counts)

        reference = None
        if not args.skip_reference:
            ref_cmd = [
                str(REFERENCE_PYTHON), str(ROOT / "scripts" / "reference_embed.py"),
                str(texts_path), str(work / "reference.npy"), "--threads", str(args.threads),
            ]  # fmt: skip
            log(f"sentence-transformers: encoding {len(texts)} texts with {args.threads} threads")
            reference = run_child(ref_cmd, env, work, "sentence_transformers")

        agreement: dict[str, dict[str, float]] = {}
        if reference:
            for precision in ours:
                agreement[precision] = compare(
                    work / f"coarch-{precision}.npy", work / "reference.npy"
                )
        if "fp32" in ours and "bf16" in ours:
            agreement["bf16_vs_fp32"] = compare(work / "coarch-bf16.npy", work / "coarch-fp32.npy")

    for report in (*ours.values(), reference):
        if report is None:
            continue
        report["tokens_reported"] = report.get("tokens")
        report["tokens"] = tokens
        report["texts_per_s"] = len(texts) / report["encode_s"]
        report["tokens_per_s"] = tokens / report["encode_s"]

    found = ratios(ours, reference)
    results: dict[str, Any] = {
        "benchmark": "embed",
        "corpus": f"{len(texts)} code chunks of the Python standard library (scripts/corpus.py)",
        "texts": len(texts),
        "tokens": tokens,
        "tokens_note": "coarch tokenizer, [CLS]/[SEP] included, truncated to max_seq_length",
        "coarch": ours,
        "sentence_transformers": reference,
        "agreement": agreement,
        "ratios": found,
        "targets": targets(found),
        "targets_note": "the issue's targets are set for 2 threads; see environment.threads",
        "environment": environment(
            args.threads,
            env,
            load_before,
            str(ours[first].get("backend", {}).get("libtorch") or "") or libtorch_version(),
        ),
    }
    results["environment"]["bf16_native"] = bf16_native()
    if reference:
        results["environment"]["torch_reference"] = reference.get("torch")
        results["environment"]["sentence_transformers"] = reference.get("sentence_transformers")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

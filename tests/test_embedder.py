"""coarch.Embedder: the Python API over the C core, with the real packaged model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import coarch

CODE = [
    "def retry_upload(path, attempts=3):\n    for _ in range(attempts):\n        send(path)",
    "class HttpClient:\n    def send(self, request):\n        return self.session.request(request)",
    "where do we retry failed uploads",
    "",
    "ünïcödé 中文 🙂",
]


def test_default_model_path_is_the_packaged_model() -> None:
    folder = coarch.default_model_path()
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert folder.name == "model"


def test_shape_dtype_and_normalisation(embedder: coarch.Embedder) -> None:
    vectors = embedder.encode(CODE)
    assert vectors.shape == (len(CODE), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.dim == 384
    assert embedder.max_seq_length == 256


def test_empty_input_gives_zero_rows(embedder: coarch.Embedder) -> None:
    assert embedder.encode([]).shape == (0, 384)


def test_rows_follow_input_order_whatever_the_batching(embedder: coarch.Embedder) -> None:
    texts = [("x = 1\n" * n) for n in (1, 40, 3, 120, 7)] + CODE
    reference = np.stack([embedder.encode([t])[0] for t in texts])
    for budget in (64, 300, 100_000):
        np.testing.assert_allclose(
            embedder.encode(texts, batch_tokens=budget), reference, atol=2e-6
        )
    reversed_rows = embedder.encode(texts[::-1])
    np.testing.assert_allclose(reversed_rows[::-1], reference, atol=2e-6)


def test_similar_code_is_closer_than_unrelated_text(embedder: coarch.Embedder) -> None:
    query, code, other = embedder.encode(
        ["retry a failed upload", CODE[0], "the capital of France is Paris"]
    )
    assert float(query @ code) > float(query @ other)


def test_non_str_item_raises_type_error_naming_its_index(embedder: coarch.Embedder) -> None:
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        embedder.encode(["a", "b", 3, "d"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        embedder.encode("a single string")


def test_progress_is_called_after_each_batch(embedder: coarch.Embedder) -> None:
    calls: list[tuple[int, int]] = []
    texts = ["token " * 50] * 20
    embedder.encode(
        texts, batch_tokens=200, progress=lambda done, total: calls.append((done, total))
    )
    assert len(calls) > 1
    assert calls[-1] == (20, 20)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_an_exception_in_progress_stops_encoding(embedder: coarch.Embedder) -> None:
    def stop(done: int, total: int) -> None:
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        embedder.encode(["a b c"] * 10, batch_tokens=8, progress=stop)


def test_tokenize_and_count(embedder: coarch.Embedder) -> None:
    ids = embedder.tokenize("HttpClient.send")
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    assert [embedder.id_to_token(i) for i in ids[1:-1]] == ["http", "##cl", "##ient", ".", "send"]
    long_text = "word " * 1000
    assert embedder.count_tokens(long_text) == 1002
    assert len(embedder.tokenize(long_text)) == embedder.max_seq_length


def test_truncation_matches_max_seq_length(embedder: coarch.Embedder) -> None:
    prefix = "alpha beta " * 200
    a, b = embedder.encode([prefix + "gamma", prefix + "delta"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the difference lies past 256 tokens


def test_shorter_max_seq_length_and_threads() -> None:
    small = coarch.Embedder(max_seq_length=16, threads=1)
    assert small.max_seq_length == 16
    assert small.threads == 1
    assert len(small.tokenize("word " * 100)) == 16
    with pytest.raises(ValueError, match="max_seq_length"):
        coarch.Embedder(max_seq_length=100_000)


def test_threads_above_the_usable_cores_are_capped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cores = len(os.sched_getaffinity(0))
    with caplog.at_level("WARNING", logger="coarch"):
        capped = coarch.Embedder(threads=9999)
    assert capped.threads == cores
    assert [r.getMessage() for r in caplog.records] == [
        f"9999 threads asked for, but this process may use {cores} cores: using {cores}"
    ]
    assert capped.encode(CODE[:2]).shape == (2, 384)
    caplog.clear()
    assert coarch.Embedder(threads=cores).threads == cores and not caplog.records


def test_missing_model_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(coarch.ModelError, match="not found"):
        coarch.Embedder(model=tmp_path / "nowhere")


def test_lone_surrogates_are_dropped_like_invalid_utf8(embedder: coarch.Embedder) -> None:
    assert embedder.tokenize("abc\ud800def") == embedder.tokenize("abcdef")


def test_ctrl_c_between_batches_raises_keyboard_interrupt(tmp_path: Path) -> None:
    # A real SIGINT, in a process of its own: the loop must stop at the next batch boundary.
    # The child installs Python's SIGINT handler itself: a test run started in the background
    # of a non-interactive shell (`./scripts/test.sh &`) inherits SIGINT ignored, and Python
    # then leaves it ignored (the child ran to the end, exit 0).
    script = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import coarch
        embedder = coarch.Embedder(threads=1)
        calls = []
        def progress(done, total):
            calls.append(done)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)
        try:
            embedder.encode(["some code here " * 20] * 400, batch_tokens=256, progress=progress)
        except KeyboardInterrupt:
            print("interrupted after", len(calls), "batches", flush=True)
            sys.exit(130)
        sys.exit(0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 130, result.stderr
    batches = int(result.stdout.split()[2])
    assert 2 <= batches <= 3
    assert signal.SIGINT  # the signal module is what the child used

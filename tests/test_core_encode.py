"""The batch loop's hold on its inputs: texts changed by other code while an encode runs.

encode_into releases the GIL for the whole run, so another thread, or the progress callback,
may change the list it was given meanwhile. The run must embed the texts as they were at the
call, and nothing may crash: these run in a child process, where a crash is a failed test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import coarch

# Long runs of spaces make the tokenizer read for a while (spaces give no tokens, so nothing
# stops it early) while the forward pass stays cheap: a wide window for another thread.
SETUP = """
import sys, threading
import numpy as np
import coarch

embedder = coarch.Embedder(threads=1, precision="fp32")

def fresh_texts(tag):
    return [" " * 2_000_000 + f"{tag} word{i} token{7 * i}" for i in range(24)]

def overwrite(texts):
    # Frees the strs the list held, then allocates strs of the same size with other content:
    # the freed memory is reused, so a stale pointer reads the new text (or faults).
    texts.clear()
    texts.extend(fresh_texts("different"))

expected = embedder.encode(fresh_texts("original"))
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(SETUP) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_another_thread_emptying_the_list_changes_nothing() -> None:
    result = _run(
        """
        texts = fresh_texts("original")
        out = np.empty((len(texts), embedder.dim), dtype=np.float32)
        idle = sys.getrefcount(texts)

        def mutate():
            # The call references the list (its argument tuple) until it returns: once that is
            # seen, the encode is in its GIL-free part, the only place where it lets this
            # thread run.
            while sys.getrefcount(texts) <= idle:
                pass
            overwrite(texts)

        sys.setswitchinterval(1e-4)
        mutator = threading.Thread(target=mutate)
        mutator.start()
        embedder._core.encode_into(texts, out)
        mutator.join()
        assert texts[0].startswith(" ") and texts[0].endswith("different word0 token0")
        print("max difference", float(np.abs(out - expected).max()))
        assert np.array_equal(out, expected)
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max difference 0.0" in result.stdout


def test_a_progress_callback_emptying_the_list_changes_nothing() -> None:
    result = _run(
        """
        # The reference is batched as the run is: rows of other batch shapes may differ in the
        # last bit (the GEMM's blocking follows the batch).
        expected = embedder.encode(fresh_texts("original"), batch_tokens=16)
        texts = fresh_texts("original")
        calls = []

        def progress(done, total):
            calls.append(done)
            if len(calls) == 1:
                overwrite(texts)

        vectors = embedder.encode(texts, batch_tokens=16, progress=progress)
        assert len(calls) > 1, calls
        print("max difference", float(np.abs(vectors - expected).max()))
        assert np.array_equal(vectors, expected)
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max difference 0.0" in result.stdout


def test_a_tuple_and_a_generator_give_the_list_result(embedder: coarch.Embedder) -> None:
    texts = [f"def handler_{i}(event):\n    return event.payload[{i}]" for i in range(9)]
    expected = embedder.encode(texts)
    np.testing.assert_array_equal(embedder.encode(tuple(texts)), expected)
    np.testing.assert_array_equal(embedder.encode(t for t in texts), expected)


def test_texts_that_are_not_iterable_are_refused(embedder: coarch.Embedder) -> None:
    out = np.empty((1, embedder.dim), dtype=np.float32)
    with pytest.raises(TypeError, match="texts must be a sequence of str, not int"):
        embedder._core.encode_into(5, out)  # type: ignore[arg-type]

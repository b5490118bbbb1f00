"""Each Embedder's thread count: libtorch's intra-op pool runs each encode with the threads of
the Embedder that encodes, whatever other Embedders of the process were given.

The count is read through the core (backend_info()["torch_threads"], libtorch's own reading)
from the progress callback, which runs in the encoding thread between batches: what libtorch
uses during that encode. No timing.
"""

from __future__ import annotations

import threading

import numpy as np

import coarch
from coarch import _core

TEXTS = [f"def handler_{i}(event):\n    return event.payload[{i}] * {i}" for i in range(12)]


def threads_seen(embedder: coarch.Embedder) -> tuple[np.ndarray, set[int]]:
    seen: set[int] = set()
    vectors = embedder.encode(
        TEXTS,
        batch_tokens=64,
        progress=lambda done, total: seen.add(_core.backend_info()["torch_threads"]),
    )
    return vectors, seen


def test_a_one_thread_embedder_leaves_the_others_their_threads() -> None:
    two = coarch.Embedder(threads=2, precision="fp32")
    one = coarch.Embedder(threads=1, precision="fp32")  # as search's query embedder is
    assert (two.threads, one.threads) == (2, 1)
    assert threads_seen(two)[1] == {2}
    assert threads_seen(one)[1] == {1}
    assert threads_seen(two)[1] == {2}
    assert two.threads == 2


def test_concurrent_encodes_each_keep_their_threads() -> None:
    embedders = {threads: coarch.Embedder(threads=threads, precision="fp32") for threads in (1, 2)}
    alone = {threads: threads_seen(e)[0] for threads, e in embedders.items()}
    start = threading.Barrier(len(embedders))
    results: dict[int, tuple[np.ndarray, set[int]]] = {}
    errors: list[BaseException] = []

    def encode(threads: int) -> None:
        try:
            start.wait(timeout=60)
            for _ in range(3):
                results[threads] = threads_seen(embedders[threads])
                assert results[threads][1] == {threads}
        except AssertionError as error:  # reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=encode, args=(threads,)) for threads in embedders]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not errors, errors
    assert set(results) == set(embedders)
    for threads, (vectors, seen) in results.items():
        assert seen == {threads}
        np.testing.assert_allclose(vectors, alone[threads], rtol=0, atol=1e-5)

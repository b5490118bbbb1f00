"""Sentence vectors from the C core: `Embedder` turns texts into L2-normalised float32 rows."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coarch import _core
from coarch.cpu import cap_threads
from coarch.errors import MemoryLimitError, ModelError, PrecisionError
from coarch.models import model_id, resolve_model_path

if TYPE_CHECKING:
    from coarch.memory import MemoryManager

ProgressCallback = Callable[[int, int], object]

PRECISION_ENV = "COARCH_PRECISION"
# auto: bf16 where the CPU and libtorch run it natively (_core.bf16_native: from cpuid and
# libtorch's oneDNN, never from a timing), else fp32.
# Measured on 2 cores with AMX: 2.8x the fp32 throughput, every vector within cosine 0.99994
# of sentence-transformers', search MRR@10 within 0.003 of fp32 (README, Precision).
DEFAULT_PRECISION = "auto"
PRECISIONS = ("fp32", "bf16", "auto")
# Threads of a query embedder (get_embedder). A query is a few dozen tokens: splitting that work
# costs more than it saves, and far more when the cores are busy (fp32, measured on 2 busy
# cores: 20 ms with 1 thread, 170 ms with 2; bf16, one thread, idle: 7 ms a query).
QUERY_THREADS = 1


def choose_precision(precision: str | None, device: str = "cpu") -> tuple[str, str]:
    """The precision an Embedder on `device` will use, "fp32" or "bf16", and why: the one place
    that decides it (the core takes only the result). None reads $COARCH_PRECISION, else the
    default; "auto" is bf16 on a CUDA device, and on a CPU where _core.bf16_native() finds it
    native (the reason is then that check's finding). Raises PrecisionError for another name."""
    chosen = precision or os.environ.get(PRECISION_ENV) or DEFAULT_PRECISION
    if chosen not in PRECISIONS:
        raise PrecisionError(
            f"precision must be fp32, bf16 or auto, not {chosen!r}",
            hint="use fp32, bf16 or auto (COARCH_PRECISION has the same values)",
        )
    if chosen != "auto":
        return chosen, f"{chosen} was asked for"
    if _runs_on_cuda(device):
        return "bf16", "auto on a CUDA device: bf16"
    native, reason = _core.bf16_native()
    return ("bf16" if native else "fp32"), reason


def resolve_precision(precision: str | None, device: str = "cpu") -> str:
    """The precision an Embedder will use: "fp32" or "bf16" (see choose_precision)."""
    return choose_precision(precision, device)[0]


def _runs_on_cuda(device: str) -> bool:
    """Whether the core runs an Embedder for `device` on CUDA ("auto": when one is present)."""
    return device == "cuda" or (device == "auto" and bool(_core.backend_info()["cuda_available"]))


class Embedder:
    """A BERT-family sentence encoder (all-MiniLM-L6-v2 by default) running in coarch's C core.

    `model` is None for the packaged default model (or $COARCH_MODEL), or a local folder with
    config.json, vocab.txt and model.safetensors. `threads` defaults to the cores this process
    may use; more than those is capped to them, with a warning. `max_seq_length` caps the tokens
    per text (default: the model's). `memory` is a MemoryManager whose budget sizes each batch
    and whose hooks run between batches.
    `precision` is "fp32", "bf16" or "auto" (bf16 where the CPU and libtorch run it natively);
    None reads $COARCH_PRECISION, else auto.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        max_seq_length: int | None = None,
        memory: MemoryManager | None = None,
        device: str = "cpu",
        precision: str | None = None,
    ) -> None:
        self.model_path: Path = resolve_model_path(model)
        resolved, self._precision_reason = choose_precision(precision, device)
        try:
            self._core = _core.Embedder(
                str(self.model_path),
                threads=cap_threads(threads) or 0,
                max_seq_length=max_seq_length or 0,
                memory=memory,
                device=device,
                precision=resolved,
            )
        except _core.ModelError as error:
            raise ModelError(str(error), hint="check the model folder") from None
        except _core.MemoryLimitError as error:
            raise MemoryLimitError(str(error)) from None
        self.memory = memory
        self._model_id: str | None = None
        self._line_counter: _core.Tokenizer | None = None

    @property
    def dim(self) -> int:
        """Width of the vectors (384 for all-MiniLM-L6-v2)."""
        return int(self._core.dim)

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text, [CLS] and [SEP] included; longer texts are truncated."""
        return int(self._core.max_seq_length)

    @property
    def threads(self) -> int:
        """libtorch's intra-op threads during this Embedder's encodes (set for each encode)."""
        return int(self._core.threads)

    @property
    def device(self) -> str:
        return str(self._core.device)

    @property
    def precision(self) -> str:
        """The precision of the matrix products: "fp32" or "bf16"."""
        return str(self._core.precision)

    @property
    def precision_reason(self) -> str:
        """Why that precision was chosen (for "auto": what the run-time check found)."""
        return self._precision_reason

    @property
    def config(self) -> dict[str, object]:
        """The model's configuration as loaded from its folder."""
        return dict(self._core.config)

    @property
    def model_id(self) -> str:
        """A stable identity of the model's files: indexes built with another id are rebuilt."""
        if self._model_id is None:
            self._model_id = model_id(self.model_path)
        return self._model_id

    def encode(
        self,
        texts: Sequence[str],
        batch_tokens: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Vectors of `texts` as a float32 array of shape (len(texts), dim), L2-normalised.

        Batches are cut by a budget of padded tokens (`batch_tokens`, else the MemoryManager's
        or the default). `progress(done, total)` is called after each batch. Ctrl-C between
        batches raises KeyboardInterrupt. A non-str item raises TypeError naming its index.
        The texts are copied at the call: changing `texts` meanwhile changes nothing.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of str, not a single str")
        items = texts if isinstance(texts, (list, tuple)) else list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        try:
            self._core.encode_into(items, out, batch_tokens=batch_tokens or 0, progress=progress)
        except _core.MemoryLimitError as error:
            raise MemoryLimitError(str(error)) from None
        return out

    def tokenize(self, text: str) -> list[int]:
        """Token ids the model sees for `text`: [CLS] ... [SEP], at most max_seq_length."""
        return list(self._core.tokenize(text))

    def count_tokens(self, text: str) -> int:
        """Tokens of the whole `text`, [CLS] and [SEP] included, without truncation."""
        return int(self._core.count_tokens(text))

    def count_line_tokens(self, text: str) -> list[int]:
        """count_tokens of each line of `text` (text.split("\n")), in one call into the core:
        what the chunker asks for every line of a file."""
        if self._line_counter is None:
            # The model's vocabulary and casing, as the core's Embedder loads them.
            lowercase = bool(self._core.config.get("do_lower_case", True))
            self._line_counter = _core.Tokenizer(self.model_path / "vocab.txt", lowercase)
        return self._line_counter.count_lines(text)

    def id_to_token(self, token_id: int) -> str:
        return str(self._core.id_to_token(token_id))

    def release_memory(self) -> None:
        """Frees the reusable batch buffers (they are regrown by the next encode)."""
        self._core.release_scratch()

    def __repr__(self) -> str:
        return (
            f"Embedder(model={str(self.model_path)!r}, dim={self.dim}, "
            f"max_seq_length={self.max_seq_length}, threads={self.threads}, "
            f"precision={self.precision!r})"
        )


_EMBEDDERS: dict[tuple[str, int, str], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(
    model_path: Path, model_id: str, max_seq_length: int = 0, precision: str = "fp32"
) -> Embedder:
    """The process-wide query Embedder of a model in a precision (loaded on first use, then
    reused): a long-lived process pays the model load once, whatever index it searches. Queries
    must be embedded in the precision of the index's vectors, hence the precision in the key."""
    key = (model_id, max_seq_length, precision)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            embedder = Embedder(
                model_path,
                threads=QUERY_THREADS,
                max_seq_length=max_seq_length or None,
                precision=precision,
            )
            _EMBEDDERS[key] = embedder
        return embedder

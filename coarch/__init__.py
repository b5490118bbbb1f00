"""coarch: local code search with a bounded-memory, resumable, incremental indexer.

>>> import coarch
>>> with coarch.Index("/path/to/repo") as index:
...     index.build()
...     hits = index.search("where do we retry failed uploads")
>>> coarch.Embedder().encode(["def retry_upload(): ..."]).shape
(1, 384)
"""

import os

# libgomp reads this once, when libtorch loads it with coarch._core. Its default lets idle
# threads spin between parallel regions; on a busy machine (a CI runner, a laptop compiling)
# the spinning threads steal the cores the working ones need, and encoding ran 6x slower at a
# load of 8. Sleeping threads cost a wake-up per region, which is nothing next to a batch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from coarch.cpu import choose_openblas_core

# OpenBLAS picks its kernels when libtorch loads it; on CPUs it does not know it falls back to
# SSE3 ones, 3x slower. See coarch/cpu.py.
choose_openblas_core()

from typing import TYPE_CHECKING, Any

from coarch._version import __version__
from coarch.errors import (
    ClusterError,
    CoarchError,
    ConfigError,
    CorruptIndexError,
    DiskFullError,
    IndexingInterrupted,
    IndexingTerminated,
    IndexLockedError,
    IndexNotFoundError,
    MemoryLimitError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
    UsageError,
)

if TYPE_CHECKING:
    from coarch.embedder import Embedder
    from coarch.hit import Hit
    from coarch.index import Index
    from coarch.indexer import IndexOptions, IndexSummary
    from coarch.memory import MemoryManager, MemoryPressure
    from coarch.models import default_model_path
    from coarch.progress import IndexProgress
    from coarch.registry import known_indexes, search_all

# The rest of the API is imported on first use: `coarch._core` loads libtorch (0.6 s idle,
# seconds on a busy machine), which `coarch mcp` must not pay before it answers `initialize`,
# nor the CLI's commands that never embed.
_LAZY = {
    "Embedder": "coarch.embedder",
    "Hit": "coarch.hit",
    "Index": "coarch.index",
    "IndexOptions": "coarch.indexer",
    "IndexProgress": "coarch.progress",
    "IndexSummary": "coarch.indexer",
    "MemoryManager": "coarch.memory",
    "MemoryPressure": "coarch.memory",
    "default_model_path": "coarch.models",
    "known_indexes": "coarch.registry",
    "search_all": "coarch.registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coarch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ClusterError",
    "CoarchError",
    "ConfigError",
    "CorruptIndexError",
    "DiskFullError",
    "Embedder",
    "Hit",
    "Index",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexOptions",
    "IndexProgress",
    "IndexSummary",
    "IndexingInterrupted",
    "IndexingTerminated",
    "MemoryLimitError",
    "MemoryManager",
    "MemoryPressure",
    "ModelError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "UsageError",
    "__version__",
    "default_model_path",
    "known_indexes",
    "search_all",
]

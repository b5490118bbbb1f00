"""coarch: local code search with a bounded-memory, resumable, incremental indexer.

    >>> import coarch
    >>> embedder = coarch.Embedder()            # the packaged all-MiniLM-L6-v2
    >>> embedder.encode(["def retry_upload(): ..."]).shape
    (1, 384)
"""

from coarch._version import __version__
from coarch.embedder import Embedder
from coarch.memory import MemoryManager, MemoryPressure
from coarch.errors import (
    CoarchError,
    MemoryLimitError,
    ModelError,
    ModelNotFoundError,
)
from coarch.models import default_model_path

__all__ = [
    "CoarchError",
    "Embedder",
    "MemoryManager",
    "MemoryPressure",
    "MemoryLimitError",
    "ModelError",
    "ModelNotFoundError",
    "__version__",
    "default_model_path",
]

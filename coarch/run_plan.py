"""A run's plan, decided before anything is written: the model, the precision and whether
(why) the index is rebuilt; and the loading of that model under the run's memory limit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coarch.chunking import CHUNKER_VERSION
from coarch.embedder import PRECISION_ENV, resolve_precision
from coarch.memory import manager_for
from coarch.models import model_id, resolve_model_path

if TYPE_CHECKING:
    from coarch.embedder import Embedder
    from coarch.indexer import IndexOptions
    from coarch.store import Store


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, decided from the index's meta and the options before anything is
    written: the model, the precision, and whether (why) the index is rebuilt."""

    model_path: Path
    model_id: str
    chunker_id: str
    precision: str  # fp32 or bf16, as resolved
    precision_request: str | None  # what goes to the Embedder (auto's reason stays its own)
    precision_reason: str | None  # the index's recorded reason, kept with its precision
    rebuild: str | None


def plan_run(store: Store, options: IndexOptions) -> RunPlan:
    """The plan of a run on `store`. Raises ModelNotFoundError for a missing model folder and
    ConfigError for a bad precision; reads, never writes."""
    model_path = resolve_model_path(options.model)
    wanted_model = model_id(model_path)
    meta = store.meta()
    # An index keeps its precision unless one is asked for (flag or environment); a new
    # index gets the default (auto). The request itself goes to the Embedder, so that the
    # reason recorded is auto's finding rather than "bf16 was asked for".
    held = store.precision()
    asked = options.precision or os.environ.get(PRECISION_ENV)
    kept = not asked and held is not None
    request = asked or held
    precision = resolve_precision(request)
    rebuild = None
    if options.full:
        rebuild = "--full"
    elif meta.get("model_id") and meta["model_id"] != wanted_model:
        rebuild = f"model changed ({meta['model_id']} -> {wanted_model})"
    elif held is not None and held != precision:
        # Vectors of two precisions are never mixed in one index: bf16 rows differ from
        # fp32 ones (cosine about 0.99995), enough to reorder close results.
        rebuild = f"precision changed ({held} -> {precision})"
    return RunPlan(
        model_path,
        wanted_model,
        f"v{CHUNKER_VERSION} target={options.target_tokens or 'default'}",
        precision,
        request,
        meta.get("precision_reason") if kept else None,
        rebuild,
    )


@dataclass
class LoadedModel:
    """The run's Embedder and the MemoryManager it runs under (None without one)."""

    embedder: Embedder
    memory: Any


def load_model(plan: RunPlan, options: IndexOptions) -> LoadedModel:
    """Loads the plan's model under the options' memory limit: raises ModelError for a folder
    that cannot be used, MemoryLimitError for a limit too small for the model, ConfigError for
    bad memory settings."""
    from coarch.embedder import Embedder

    memory = manager_for(options.memory_limit_mb, options.profile)
    embedder = Embedder(
        plan.model_path, threads=options.threads, memory=memory, precision=plan.precision_request
    )
    return LoadedModel(embedder, memory)

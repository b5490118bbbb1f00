"""Where a repository's index lives: one folder per repository under the user cache folder.

Default: `$XDG_CACHE_HOME/coarch/<name>-<sha1(realpath)[:12]>/` (platformdirs' user cache
folder); `--index DIR` or $COARCH_INDEX_DIR overrides it. Commands run without a path find the
index of the nearest enclosing folder that has one."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import hashlib
import logging
import os
from pathlib import Path

import platformdirs

from coarch.errors import UsageError

log = logging.getLogger(__name__)

INDEX_DIR_ENV = "COARCH_INDEX_DIR"
DB_FILE = "index.sqlite"
FAISS_FILE = "vectors.faiss"
REBUILD_SUFFIX = ".rebuild"
# Names coarch writes into an index folder (anything else makes a folder without a coarch
# database someone else's).
_OWN_NAMES = (
    "lock",
    DB_FILE,
    f"{DB_FILE}-wal",
    f"{DB_FILE}-shm",
    f"{DB_FILE}-journal",
    FAISS_FILE,
    ".vectors-*.tmp",
    f"{DB_FILE}.corrupt-*",
)
_FAISS_MAGICS = (b"IxM2", b"IwFl")  # the FAISS layouts coarch writes (flat, IVF)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


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


def rebuild_dir(index_dir: Path) -> Path:
    """The sibling folder where a full rebuild of `index_dir` is built before the swap."""
    return index_dir.with_name(index_dir.name + REBUILD_SUFFIX)


def check_index_folder(index_dir: Path) -> None:
    """Raises UsageError unless `index_dir` is missing, empty, or holds a coarch index (or only
    files coarch writes): coarch never writes into a folder of files it did not create."""
    from coarch.store import database_owner

    if not index_dir.exists():
        return
    if not index_dir.is_dir():
        raise UsageError(f"index folder is not a folder: {index_dir}")
    owner = database_owner(index_dir / DB_FILE)
    if owner == "coarch":
        return
    if owner == "foreign":
        _refuse(index_dir, f"{DB_FILE} is not a coarch index")
    strangers = sorted(
        n
        for n in os.listdir(index_dir)
        if not any(fnmatch.fnmatchcase(n, own) for own in _OWN_NAMES)
    )
    if strangers:
        _refuse(index_dir, f"it holds files coarch did not create ({', '.join(strangers[:3])})")
    faiss = index_dir / FAISS_FILE
    if faiss.is_file() and not _starts_with(faiss, _FAISS_MAGICS):
        _refuse(index_dir, f"{FAISS_FILE} is not a FAISS file coarch wrote")


def _refuse(index_dir: Path, why: str) -> None:
    raise UsageError(
        f"refusing to write into {index_dir}: {why}",
        hint="pass --index a new or empty folder, or one coarch created",
    )


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head in magics


def exchange_folders(a: Path, b: Path) -> None:
    """Swaps two folders' names atomically (Linux renameat2 RENAME_EXCHANGE): a reader sees
    one folder or the other at each name, never neither. Elsewhere (or on a filesystem
    without it) two renames, with a moment where `b` does not exist."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(a))
        log.debug("renameat2 exchange unavailable (%s): two renames", os.strerror(code))
    parked = a.with_name(a.name + ".swap")
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)

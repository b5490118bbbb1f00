"""Is the index up to date with the files? The one place that decides, before a search, whether
to re-index first or to answer at once and say how stale the answer is.

The check is the indexer's own: list the files (git or the ignore rules, with the discovery
settings the index was built with) and compare each one's size and mtime with the store; no
file is read. When at most `max_files` files are new, changed or deleted, they are re-indexed
first (an incremental build: the unchanged files cost one stat each). When more changed, or
another process holds the index lock, the search answers from what is committed and the
result says how many files are stale. The lock is never waited for.

A long-lived Index (the MCP server) can follow changes instead (Index.follow_changes): a
ChangeGate holds a coarch.notify.ChangeNotifier, and while it reports no event since a check
that found the index fresh, a search answers "fresh" without listing anything. A full check is
still made every FULL_CHECK_SECONDS, for changes that notifications miss (another host writing
to a network file system, writes through mmap, git's own index).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coarch.changes import compare
from coarch.discovery import Discovery, DiscoveryOptions, DiscoveryReport, check_root
from coarch.errors import CoarchError, ConfigError, IndexingInterrupted, IndexLockedError
from coarch.indexer import META_MAX_FILE_SIZE, META_USE_GIT, IndexOptions
from coarch.settings import env_number
from coarch.store import Store

if TYPE_CHECKING:
    from coarch.index import Index
    from coarch.notify import ChangeNotifier

log = logging.getLogger(__name__)

REFRESH_ENV = "COARCH_REFRESH_MAX_FILES"
# Re-indexing a changed file costs the model load (about 1 s) plus its chunks' embedding; a
# few dozen files keep a search's answer within a few seconds, more are left to `coarch index`
# (or `coarch watch`) so that a search never turns into a long build.
DEFAULT_REFRESH_MAX_FILES = 20
# A followed index is listed at least this often (seconds) even without notifications.
FULL_CHECK_SECONDS = 30.0


@dataclass(frozen=True)
class Pending:
    """Files new, changed (by size or mtime) or deleted since the index was built."""

    new: int = 0
    changed: int = 0
    deleted: int = 0

    @property
    def total(self) -> int:
        return self.new + self.changed + self.deleted


@dataclass(frozen=True)
class Freshness:
    """How fresh the index was when a search answered.

    `state`: "fresh" (nothing changed), "refreshed" (`refreshed_files` re-indexed first),
    "stale" (`stale_files` changed and were not re-indexed: `reason` says why) or "unknown"
    (the indexed folder is gone, or no check was made). `listed`: whether the files were
    listed for this answer (False when notifications showed nothing changed since a check
    that found the index fresh)."""

    state: str
    stale_files: int = 0
    refreshed_files: int = 0
    reason: str | None = None
    listed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refresh_max_files(explicit: int | None = None) -> int:
    """The most changed files a search re-indexes first: the explicit value, else
    $COARCH_REFRESH_MAX_FILES, else 20. 0 never re-indexes (the search only reports)."""
    if explicit is not None:
        return max(0, explicit)
    value = env_number(REFRESH_ENV, DEFAULT_REFRESH_MAX_FILES, int, "a whole number")
    if value < 0:
        raise ConfigError(f"{REFRESH_ENV} must be 0 or more, not {value}")
    return value


def discovery_options(
    store: Store, index_dir: Path, max_file_size: int, use_git: bool
) -> DiscoveryOptions:
    """The discovery settings the index was built with (recorded by the indexer), else the
    given ones."""
    recorded_size = store.get_meta(META_MAX_FILE_SIZE)
    recorded_git = store.get_meta(META_USE_GIT)
    if recorded_size and recorded_size.isdigit():
        max_file_size = int(recorded_size)
    if recorded_git in ("0", "1"):
        use_git = recorded_git == "1"
    return DiscoveryOptions(max_file_size=max_file_size, use_git=use_git, exclude=(str(index_dir),))


def pending_changes(root: Path, store: Store, options: DiscoveryOptions) -> Pending | None:
    """What changed under `root` since the index in `store` was built (coarch.changes: the
    indexer's own rule); None when the folder is gone (nothing to compare with)."""
    try:
        root = check_root(root)
    except CoarchError:
        return None
    candidates = Discovery(root, options, DiscoveryReport()).candidates()
    changes = compare(candidates, store.file_states())
    return Pending(changes.new, changes.changed, len(changes.deleted))


class ChangeGate:
    """Whether a followed index is still as fresh as its last check found it: no notification
    since that check began, and the check less than FULL_CHECK_SECONDS old. One owner (the
    Index's searches, which a long-lived caller serialises)."""

    def __init__(self, notifier: ChangeNotifier) -> None:
        self.notifier = notifier
        self._fresh_since: float | None = None  # monotonic start of the last fresh check

    def still_fresh(self) -> bool:
        """True when no listing is needed. Drains the notifications either way, so that a
        check that follows sees only what comes after it began."""
        if self.notifier.changed():
            self._fresh_since = None
            return False
        return (
            self._fresh_since is not None
            and time.monotonic() - self._fresh_since < FULL_CHECK_SECONDS
        )

    def checked(self, started: float, found: Freshness) -> None:
        """Records a check that began at `started` (monotonic, after still_fresh)."""
        fresh = found.state in ("fresh", "refreshed") and self.notifier.active
        self._fresh_since = started if fresh else None

    def close(self) -> None:
        self.notifier.close()


def ensure_fresh(
    index: Index, max_files: int | None = None, gate: ChangeGate | None = None
) -> Freshness:
    """Re-indexes what changed when it is little (see the module docstring), else says how
    stale the index is. Never blocks on another indexer; a failed refresh is logged and the
    search goes on with what is committed. Ctrl-C during a refresh raises IndexingInterrupted
    (the work done is kept). With `gate`, nothing is listed while it vouches that nothing
    changed."""
    if gate is None:
        return _check(index, max_files)
    if gate.still_fresh():
        return Freshness("fresh")
    started = time.monotonic()
    found = _check(index, max_files)
    gate.checked(started, found)
    return found


def _check(index: Index, max_files: int | None) -> Freshness:
    """Lists the files, compares them with the store and re-indexes a few changed ones."""
    limit = refresh_max_files(max_files)
    store = index.open_store()
    root = Path(store.get_meta("root") or index.root)
    options = discovery_options(
        store, index.index_dir, index.options.max_file_size, index.options.use_git
    )
    t0 = time.perf_counter()
    pending = pending_changes(root, store, options)
    log.debug("listed %s in %.1f ms: %s", root, 1000 * (time.perf_counter() - t0), pending)
    if pending is None:
        return Freshness("unknown", reason=f"the indexed folder {root} is gone", listed=True)
    if pending.total == 0:
        return Freshness("fresh", listed=True)
    if pending.total > limit:
        return _stale(
            pending,
            root,
            f"{pending.total} files changed (more than {limit} are left to `coarch index`)",
        )
    settings = _refresh_settings(index, store, options)
    mismatch = _model_mismatch(settings, store)
    if mismatch:
        return _stale(pending, root, mismatch)
    try:
        index.build(progress=None, settings=settings)
    except IndexLockedError as exc:
        if exc.pid == os.getpid():
            return _stale(pending, root, "an index run in this process is in progress")
        return _stale(
            pending,
            root,
            f"another process is indexing (pid {exc.pid})"
            if exc.pid
            else "another process is indexing",
        )
    except IndexingInterrupted:
        raise
    except (CoarchError, OSError) as exc:
        log.warning("could not re-index the %d changed files: %s", pending.total, exc)
        return Freshness("stale", stale_files=pending.total, reason=str(exc), listed=True)
    log.info("re-indexed %d changed files before searching", pending.total)
    return Freshness("refreshed", refreshed_files=pending.total, listed=True)


def _stale(pending: Pending, root: Path, reason: str) -> Freshness:
    log.warning(
        "%d files changed since the index was built (%s): results may be stale; "
        "run `coarch index %s`",
        pending.total,
        reason,
        root,
    )
    return Freshness("stale", stale_files=pending.total, reason=reason, listed=True)


def _refresh_settings(index: Index, store: Store, discovery: DiscoveryOptions) -> IndexOptions:
    """The Index's settings for an incremental run that lists the files as the index's own
    runs did and embeds with the index's model (the Index's, else the one recorded)."""
    recorded_model = store.get_meta("model_path")
    model = index.options.model
    if model is None and recorded_model and Path(recorded_model).is_dir():
        model = recorded_model
    return replace(
        index.options,
        full=False,
        model=model,
        max_file_size=discovery.max_file_size,
        use_git=discovery.use_git,
    )


def _model_mismatch(settings: IndexOptions, store: Store) -> str | None:
    """Why a run with `settings` would rebuild the whole index instead of updating it (another
    model), or None."""
    from coarch.models import model_id, resolve_model_path

    recorded = store.get_meta("model_id")
    if not recorded:
        return "the index has no model recorded"
    try:
        wanted = model_id(resolve_model_path(settings.model))
    except CoarchError as exc:
        return str(exc)
    if wanted != recorded:
        return "the model asked for is not the one the index was built with"
    return None

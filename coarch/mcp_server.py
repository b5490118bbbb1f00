"""`coarch mcp`: a stdio MCP server (the official `mcp` SDK) that searches one repository from a
warm process.

A coding agent calls search many times per task; a `coarch search` process pays libtorch and
the model each time (about 1 s idle, several seconds on a busy machine), the server once. Tools:

- `search(query, k, mode, lang, path)`: hits and how fresh the index was (coarch.freshness
  re-indexes a few changed files first; the server's index follows file notifications, so a
  search with nothing changed lists no files); read-only as far as the files are concerned.
- `index_status()`: what `coarch status --json --memory` gives; read-only.
- `index(full)`: an incremental (or full) build in a worker thread, with
  `notifications/progress` when the client sent a progress token; a cancelled request stops
  it as Ctrl-C does (the batch in hand is committed). Searches during it read the last
  committed state.

Every tool has an input and an output schema and answers with `structuredContent` plus its
JSON as text. Anticipated failures (no index yet, bad arguments, another indexer) are tool
errors (`isError`, one line with the hint); the server keeps running. Path globs and every path
returned stay inside the served root. stdout carries only protocol messages: coarch logs go to
stderr.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, create_model

from coarch._version import __version__
from coarch.discovery import check_root
from coarch.errors import CoarchError, IndexingInterrupted, IndexNotFoundError
from coarch.hit import Hit
from coarch.location import DB_FILE, resolve_index_dir
from coarch.search_options import DEFAULT_K, MAX_K

if TYPE_CHECKING:
    from coarch.index import Index
    from coarch.progress import IndexProgress

log = logging.getLogger(__name__)

SERVER_NAME = "coarch"
# Progress notifications at most this often: the indexer reports after every model batch.
PROGRESS_INTERVAL = 0.25
# Seconds after the handshake at which the model loads when the client has not listed tools.
HANDSHAKE_GRACE = 1.0


# ---- schemas ------------------------------------------------------------------------------------


def _hit_model() -> type[BaseModel]:
    """HitOut: coarch.hit.Hit's fields but `explain`, all required, so the two never differ."""
    fields: dict[str, Any] = {
        name: (hint, ...) for name, hint in get_type_hints(Hit).items() if name != "explain"
    }
    doc = "One search hit; `path` is relative to the served root, lines are 1-based inclusive."
    return create_model("HitOut", __doc__=doc, __module__=__name__, **fields)


if TYPE_CHECKING:
    HitOut = BaseModel
else:
    HitOut = _hit_model()
HIT_FIELDS = tuple(HitOut.model_fields)


class FreshnessOut(BaseModel):
    """How fresh the index was when the search answered (see coarch.freshness)."""

    state: Literal["fresh", "refreshed", "stale", "unknown"]
    stale_files: int = Field(description="files changed since the index and not re-indexed")
    refreshed_files: int = Field(description="changed files re-indexed before this search")
    reason: str | None = None
    listed: bool = Field(
        default=False,
        description=(
            "whether the files were listed for this search (false: file notifications showed "
            "nothing changed since the last listing found the index fresh)"
        ),
    )


def _inline_parts(schema: dict[str, Any]) -> None:
    """SearchOut's JSON schema with the hit and freshness schemas written in place, not as
    `$ref`s: a client validates every result against it (the SDK's client does, with
    jsonschema), and resolving the references was most of that cost (about 1.8 -> 1.0 ms
    per 10-hit result, measured on this project's 2-core machine)."""
    properties = schema["properties"]
    properties["hits"]["items"] = HitOut.model_json_schema()
    properties["freshness"] = FreshnessOut.model_json_schema()


class SearchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra=_inline_parts)

    root: str
    query: str
    mode: str
    hits: list[HitOut]
    freshness: FreshnessOut


class IndexOut(BaseModel):
    """What an `index` run did."""

    root: str
    files_total: int
    files_indexed: int
    files_unchanged: int
    files_removed: int
    chunks_embedded: int
    chunks_total: int
    seconds: float
    rebuild_reason: str | None


# ---- the service: the server's state, callable without MCP --------------------------------------


class CoarchService:
    """One served root: its index for searching (one Searcher, behind a lock: a Searcher is not
    thread-safe; it follows file changes, so that a search with nothing changed lists no
    files) and, separately, the runs of `index` (one at a time). Nothing that loads libtorch
    is imported before the first search or `warm`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None,
        options: dict[str, Any] | None = None,
        refresh_max_files: int | None = None,
    ) -> None:
        self.root = check_root(root)
        self.index_dir_arg = index_dir
        self.options = options or {}
        self.refresh_max_files = refresh_max_files
        self.index_dir = resolve_index_dir(self.root, index_dir)
        self._search_index: Index | None = None  # made under the search lock
        self._search_lock = threading.Lock()
        self._build_lock = threading.Lock()

    def _searching_index(self) -> Index:
        """The Index searches use (the caller holds the search lock), following changes once
        it has an index to check against."""
        if self._search_index is None:
            from coarch.index import Index

            self._search_index = Index(self.root, index_dir=self.index_dir_arg, **self.options)
        if (self.index_dir / DB_FILE).is_file():
            self._search_index.follow_changes()
        return self._search_index

    def close(self) -> None:
        with self._search_lock:
            if self._search_index is not None:
                self._search_index.close()

    # -- search --

    def search(
        self, query: str, k: int, mode: str, lang: list[str] | None, path: list[str] | None
    ) -> SearchOut:
        for glob in path or ():
            check_glob(glob)
        with self._search_lock:
            index = self._searching_index()
            try:
                hits = index.search(
                    query,
                    k=k,
                    mode=mode,
                    lang=lang,
                    path=path,
                    refresh_max_files=self.refresh_max_files,
                )
            except IndexNotFoundError as exc:
                raise ToolError(self._no_index_message(exc)) from None
            freshness = index.freshness
        return SearchOut(
            root=str(self.root),
            query=query,
            mode=mode,
            # Fields read one by one: Hit.to_dict (dataclasses.asdict) deep-copies every value.
            hits=[
                HitOut(**{name: getattr(h, name) for name in HIT_FIELDS})
                for h in hits
                if inside_root(h.path)
            ],
            freshness=FreshnessOut(**freshness.as_dict()),
        )

    def warm(self) -> None:
        """Loads the model, opens the index and makes the first freshness check (re-indexing
        a few changed files, as a search would): a first search that comes once the check
        found the index fresh lists no files."""
        if not (self.index_dir / DB_FILE).is_file():
            return
        with self._search_lock:
            self._searching_index().search("warm up", k=1, refresh_max_files=self.refresh_max_files)

    def _no_index_message(self, exc: CoarchError) -> str:
        return (
            f"{exc.message}; call the `index` tool to build it (progress is reported), or "
            f"run `coarch index {self.root}`"
        )

    # -- status --

    def status(self) -> dict[str, Any]:
        from coarch.index import Index

        with Index(self.root, index_dir=self.index_dir_arg, **self.options) as index:
            try:
                status = index.status(memory=True)
            except IndexNotFoundError as exc:
                raise ToolError(self._no_index_message(exc)) from None
        # The JSON `coarch status --json --memory` writes: the same dict, serialised.
        out: dict[str, Any] = json.loads(json.dumps(status, default=str))
        return out

    # -- index --

    def build(
        self, full: bool, progress: Callable[[IndexProgress], None] | None, stop: threading.Event
    ) -> IndexOut:
        if not self._build_lock.acquire(blocking=False):
            raise ToolError("an index run of this server is already in progress; wait for it")
        from coarch.index import Index

        try:
            with Index(self.root, index_dir=self.index_dir_arg, **self.options) as index:
                summary = index.build(progress=progress, full=full, stop=stop)
        except CoarchError as exc:
            raise ToolError(one_line(exc)) from None
        finally:
            self._build_lock.release()
        # IndexOut's fields are IndexSummary's, named alike.
        fields = {name: getattr(summary, name) for name in IndexOut.model_fields}
        return IndexOut(**{**fields, "seconds": round(summary.seconds, 3)})

    def wait_for_build(self) -> None:
        """Returns once no `index` run of this server is in progress."""
        with self._build_lock:
            pass


def one_line(exc: CoarchError) -> str:
    return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")


def check_glob(glob: str) -> None:
    """Refuses a path glob that names something outside the served root: absolute, `~`, or
    climbing out with `..`."""
    text = glob.removeprefix("!")
    if not text.strip():
        raise ToolError("empty path glob")
    pure = PurePosixPath(text.replace("\\", "/"))
    if text.startswith(("/", "~")) or pure.is_absolute() or ".." in pure.parts:
        raise ToolError(
            f"path {glob!r} is outside the served root; give a glob relative to it "
            "(e.g. 'src/**', '*.py', '!tests/')"
        )


def inside_root(path: str) -> bool:
    """Whether a hit's POSIX path, relative to the root, stays inside it."""
    return not path.startswith("/") and ".." not in path.split("/")


# ---- the MCP server ------------------------------------------------------------------------------

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
# `index` writes only coarch's own index (never the user's files) and can be repeated.
WRITES_INDEX = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


def build_server(service: CoarchService) -> MCPServer[Any]:
    """The MCP server over `service`, its tools registered."""

    warmer = _Warmer(service)

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    server: MCPServer[Any] = MCPServer(
        name=SERVER_NAME,
        version=__version__,
        lifespan=lifespan,
        log_level="WARNING",
        instructions=(
            f"Code search over {service.root}: `search` finds code by meaning or identifier "
            "(path:lines, score, snippet). The index refreshes itself before a search when few "
            "files changed; call `index` to update it after large changes."
        ),
    )
    server.middleware.append(warmer.after_handshake)

    @server.tool(
        annotations=READ_ONLY,
        description=(
            "Search the repository's code by meaning (natural language) or by identifier "
            "(`parse_config`, `HttpClient.send`: its definition comes first). Returns hits with "
            "path (relative to the repository), start_line, end_line, score, language, symbol and "
            "snippet, plus how fresh the index was."
        ),
    )
    async def search(
        query: Annotated[str, Field(min_length=1, description="words or an identifier")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="number of hits")] = DEFAULT_K,
        mode: Annotated[
            Literal["hybrid", "semantic", "keyword"],
            Field(description="hybrid (default): meaning and keywords fused; semantic; keyword"),
        ] = "hybrid",
        lang: Annotated[
            list[str] | None, Field(description="only these languages (python, py, ts, ...)")
        ] = None,
        path: Annotated[
            list[str] | None,
            Field(
                description="only paths matching these globs, relative to the repository "
                "(.gitignore rules; '!glob' excludes)"
            ),
        ] = None,
    ) -> SearchOut:
        found: SearchOut = await _in_thread(service.search, query, k, mode, lang, path)
        return found

    @server.tool(
        annotations=READ_ONLY,
        description=(
            "What the index holds: location, files, chunks, model, precision, last run, files "
            "pending (new, changed, deleted) and the memory manager's readings; the same JSON as "
            "`coarch status --json --memory`."
        ),
    )
    async def index_status() -> dict[str, Any]:
        out: dict[str, Any] = await _in_thread(service.status)
        return out

    @server.tool(
        annotations=WRITES_INDEX,
        description=(
            "Build or update the repository's index (incremental: only new and changed files are "
            "embedded; full=true rebuilds from scratch). Reports progress when the request has a "
            "progress token; cancelling the request stops it after committing the work in hand. "
            "Searches during a run answer from the last committed state."
        ),
    )
    async def index(ctx: Context, full: bool = False) -> IndexOut:
        return await _run_build(service, ctx, full)

    return server


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs blocking coarch work off the event loop, turning coarch errors into tool errors."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))
    except ToolError:
        raise
    except CoarchError as exc:
        raise ToolError(one_line(exc)) from None


async def _run_build(service: CoarchService, ctx: Context, full: bool) -> IndexOut:
    """The build in a worker thread; its progress goes to the client from the event loop, and a
    cancelled request sets the indexer's stop event, then waits for its commit."""
    stop = threading.Event()
    reporter = _ProgressReporter(ctx)
    try:
        out: IndexOut = await anyio.to_thread.run_sync(
            functools.partial(service.build, full, reporter, stop), abandon_on_cancel=True
        )
        return out
    except anyio.get_cancelled_exc_class():
        stop.set()
        with anyio.CancelScope(shield=True):
            # The run commits what it has and gives up the index lock before we answer.
            await anyio.to_thread.run_sync(service.wait_for_build)
        raise
    except IndexingInterrupted as exc:
        raise ToolError(one_line(exc)) from None


class _ProgressReporter:
    """IndexProgress from the indexer's thread -> `notifications/progress` (throttled)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._last = 0.0

    def __call__(self, p: IndexProgress) -> None:
        now = time.monotonic()
        if p.phase != "done" and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        total = max(p.chunks_estimate, p.chunks_embedded + p.chunks_reused, 1)
        done = p.chunks_embedded + p.chunks_reused
        message = (
            f"{p.phase}: {p.files_done}/{p.files_to_read} files, {p.chunks_embedded} "
            f"chunks embedded"
        )
        with contextlib.suppress(Exception):  # a client gone away must not stop the run
            anyio.from_thread.run(self.ctx.report_progress, float(done), float(total), message)


class _Warmer:
    """Loads the model and opens the index in a background thread once the client has its
    tool list: loading libtorch holds the interpreter for a second or more, and neither
    `initialize` nor `tools/list` (what a client waits for at start-up, with a timeout) should
    wait for it. A client that lists no tools gets the warm-up HANDSHAKE_GRACE seconds after
    the handshake; a search that comes first loads the model itself (a search during the
    warm-up waits on the search lock)."""

    def __init__(self, service: CoarchService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._started = False

    async def after_handshake(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "tools/list":
            self.start()
        elif ctx.method == "notifications/initialized":
            timer = threading.Timer(HANDSHAKE_GRACE, self.start)
            timer.daemon = True
            timer.start()
        return result

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._warm, name="coarch-warm", daemon=True).start()

    def _warm(self) -> None:
        try:
            self.service.warm()
        except Exception as exc:  # noqa: BLE001  (best effort; searches report errors)
            log.debug("warm-up failed: %s", exc)


def serve(
    root: str | os.PathLike[str],
    index_dir: str | os.PathLike[str] | None = None,
    options: dict[str, Any] | None = None,
    refresh_max_files: int | None = None,
) -> None:
    """Serves `root` over stdio until the client closes the connection."""
    service = CoarchService(Path(root), index_dir, options, refresh_max_files)
    build_server(service).run("stdio")

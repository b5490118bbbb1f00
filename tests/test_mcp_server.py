"""`coarch mcp` through the official SDK's stdio client: a real server process, the real model,
a real (tiny) indexed tree."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

import coarch
from coarch import cli_agents

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "src/upload.py": "def retry_upload(path, attempts=3):\n"
    '    """Retry failed uploads with exponential backoff."""\n'
    "    for attempt in range(attempts):\n"
    "        pass\n",
    "src/config.py": "def parse_config(text):\n"
    '    """Parse the configuration file into a dict."""\n'
    '    return dict(line.split("=", 1) for line in text.splitlines())\n',
    "README.md": "# demo\n\nA tiny project for the MCP tests.\n",
}


def make_tree(root: Path, files: dict[str, str] = FILES) -> Path:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


@pytest.fixture()
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    root = make_tree(tmp_path / "repo")
    index_dir = tmp_path / "index"
    with coarch.Index(root, index_dir=index_dir, checkpoint_every=0) as index:
        index.build()
    return root, index_dir


def server_params(root: Path, index_dir: Path, *extra: str) -> StdioServerParameters:
    env = {"PYTHONPATH": str(REPO), "COARCH_CHECKPOINT_FREQUENCY": "0"}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "coarch", "mcp", str(root), "--index", str(index_dir), *extra],
        env=env,
        cwd=str(root),
    )


@asynccontextmanager
async def session_for(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    # The server's stderr (its logs) goes to the test's, shown when a test fails.
    async with (
        stdio_client(params, errlog=sys.stderr) as (read, write),
        ClientSession(read, write, read_timeout_seconds=60) as session,
    ):
        await session.initialize()
        yield session


def run(
    params: StdioServerParameters, scenario: Callable[[ClientSession], Awaitable[None]]
) -> None:
    async def main() -> None:
        async with session_for(params) as session:
            await scenario(session)

    anyio.run(main)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    # The text copy holds the same JSON.
    assert json.loads(result.content[0].text) == data
    return data


def error_text(result: Any) -> str:
    assert result.is_error
    text: str = result.content[0].text
    return text


# ---- tests ----------------------------------------------------------------------------------------


def test_tools_listed_with_schemas_and_hints(indexed: tuple[Path, Path]) -> None:
    async def scenario(session: ClientSession) -> None:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"search", "index_status", "index"}
        search = tools["search"]
        assert search.input_schema["required"] == ["query"]
        assert set(search.input_schema["properties"]) == {"query", "k", "mode", "lang", "path"}
        assert "hits" in search.output_schema["properties"]
        assert "freshness" in search.output_schema["properties"]
        assert search.annotations.read_only_hint is True
        assert tools["index_status"].annotations.read_only_hint is True
        assert tools["index"].annotations.read_only_hint is False
        assert tools["index"].output_schema is not None

    run(server_params(*indexed), scenario)


def test_search_answers_hits_and_freshness(indexed: tuple[Path, Path]) -> None:
    async def scenario(session: ClientSession) -> None:
        t0 = time.monotonic()
        first = structured(await session.call_tool("search", {"query": "parse_config"}))
        assert time.monotonic() - t0 < 5  # the first call on a fresh server is answered
        assert first["hits"][0]["path"] == "src/config.py"
        assert first["hits"][0]["symbol"] == "parse_config"
        assert first["hits"][0]["start_line"] == 1
        assert first["freshness"]["state"] == "fresh"
        semantic = structured(
            await session.call_tool(
                "search", {"query": "retry failed uploads", "k": 1, "mode": "semantic"}
            )
        )
        assert [h["path"] for h in semantic["hits"]] == ["src/upload.py"]
        only_md = structured(
            await session.call_tool("search", {"query": "tiny project", "path": ["*.md"]})
        )
        assert {h["path"] for h in only_md["hits"]} == {"README.md"}

    run(server_params(*indexed), scenario)


def test_search_refreshes_a_changed_file_first(indexed: tuple[Path, Path]) -> None:
    root, index_dir = indexed

    async def scenario(session: ClientSession) -> None:
        await session.call_tool("search", {"query": "parse_config"})
        (root / "src" / "zebra.py").write_text("def feed_the_zebras():\n    return 'hay'\n")
        got = structured(await session.call_tool("search", {"query": "feed_the_zebras"}))
        assert got["freshness"]["state"] == "refreshed"
        assert got["freshness"]["refreshed_files"] == 1
        assert got["hits"][0]["path"] == "src/zebra.py"

    run(server_params(root, index_dir), scenario)


def test_warm_searches_list_no_files_until_one_changes(indexed: tuple[Path, Path]) -> None:
    root, index_dir = indexed

    async def scenario(session: ClientSession) -> None:
        first = structured(await session.call_tool("search", {"query": "parse_config"}))
        assert first["freshness"] == {
            "state": "fresh",
            "stale_files": 0,
            "refreshed_files": 0,
            "reason": None,
            "listed": True,
        }
        for query in ("retry_upload", "tiny project"):
            got = structured(await session.call_tool("search", {"query": query}))
            assert (got["freshness"]["state"], got["freshness"]["listed"]) == ("fresh", False)
        (root / "src" / "config.py").write_text(
            "def parse_config(text):\n    return {}\n\n"
            "def merge_config_layers(base, override):\n    return {**base, **override}\n"
        )
        got = structured(await session.call_tool("search", {"query": "merge_config_layers"}))
        assert (got["freshness"]["state"], got["freshness"]["listed"]) == ("refreshed", True)
        assert "merge_config_layers" in got["hits"][0]["snippet"]

    run(server_params(root, index_dir), scenario)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")
def test_warm_up_makes_the_first_check_so_the_first_search_lists_nothing(
    indexed: tuple[Path, Path],
) -> None:
    from coarch.mcp_server import CoarchService

    root, index_dir = indexed
    service = CoarchService(root, index_dir)
    try:
        service.warm()
        got = service.search("parse_config", 10, "hybrid", None, None)
        assert (got.freshness.state, got.freshness.listed) == ("fresh", False)
        assert got.hits[0].path == "src/config.py"
    finally:
        service.close()


def test_server_module_loads_no_libtorch_before_the_first_search() -> None:

    from coarch import mcp_server, search

    loaded = _heavy_modules_after(
        "import coarch.mcp_server, coarch.cli", ("coarch._core", "numpy", "coarch.index")
    )
    assert loaded == "[]"
    assert (mcp_server.DEFAULT_K, mcp_server.MAX_K) == (search.DEFAULT_K, search.MAX_K)


def test_the_cli_parser_loads_nothing_heavy() -> None:

    # `coarch mcp` builds every subcommand's parser before the server answers `initialize`.
    loaded = _heavy_modules_after(
        "import coarch.cli; coarch.cli.build_parser()",
        ("coarch._core", "numpy", "coarch.search", "coarch.store"),
    )
    assert loaded == "[]"


def _heavy_modules_after(code: str, modules: tuple[str, ...]) -> str:
    """The sorted list (as printed) of `modules` loaded after running `code` in a fresh
    interpreter."""
    import subprocess

    probe = f"import sys; {code}; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO)},
        check=True,
    ).stdout
    return out.strip()


def test_many_changes_answer_at_once_and_count_stale_files(indexed: tuple[Path, Path]) -> None:
    root, index_dir = indexed
    for i in range(3):
        (root / f"new_{i}.py").write_text(f"def added_{i}():\n    return {i}\n")

    async def scenario(session: ClientSession) -> None:
        got = structured(await session.call_tool("search", {"query": "added_1"}))
        assert got["freshness"]["state"] == "stale"
        assert got["freshness"]["stale_files"] == 3
        assert "new_1.py" not in {h["path"] for h in got["hits"]}

    run(server_params(root, index_dir, "--refresh-max-files", "2"), scenario)


def test_bad_arguments_and_outside_paths_are_tool_errors(indexed: tuple[Path, Path]) -> None:
    async def scenario(session: ClientSession) -> None:
        bad_k = await session.call_tool("search", {"query": "x", "k": 0})
        assert bad_k.is_error
        bad_mode = await session.call_tool("search", {"query": "x", "mode": "fuzzy"})
        assert bad_mode.is_error
        for glob in ("../*", "/etc/*", "!../secret/**", "src/../../x"):
            text = error_text(await session.call_tool("search", {"query": "x", "path": [glob]}))
            assert "outside the served root" in text
        # The server is still there and answers.
        ok = structured(await session.call_tool("search", {"query": "parse_config"}))
        assert ok["hits"]

    run(server_params(*indexed), scenario)


def test_missing_index_is_an_error_then_index_builds_it_with_progress(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo")
    index_dir = tmp_path / "index"
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def scenario(session: ClientSession) -> None:
        text = error_text(await session.call_tool("search", {"query": "parse_config"}))
        assert "no index for" in text and "`index` tool" in text
        assert "no index for" in error_text(await session.call_tool("index_status", {}))
        built = structured(await session.call_tool("index", {}, progress_callback=on_progress))
        assert built["files_indexed"] == len(FILES)
        assert built["chunks_total"] >= len(FILES)
        assert progress, "no notifications/progress during index"
        assert progress[-1][0] == progress[-1][1]  # the last one says done
        hits = structured(await session.call_tool("search", {"query": "parse_config"}))["hits"]
        assert hits[0]["path"] == "src/config.py"
        status = structured(await session.call_tool("index_status", {}))
        assert status["files"] == len(FILES)
        assert status["index_dir"] == str(index_dir)
        assert "memory" in status

    run(server_params(root, index_dir), scenario)


def test_search_during_index_reads_the_committed_state(indexed: tuple[Path, Path]) -> None:
    root, index_dir = indexed
    # Enough new files that the run lasts well past its first progress notification.
    body = "".join(f"def helper_{j}(x):\n    return x * {j} + len(str(x))\n\n" for j in range(12))
    for i in range(30):
        (root / "gen" / f"mod_{i}.py").parent.mkdir(exist_ok=True)
        (root / "gen" / f"mod_{i}.py").write_text(f'"""Module {i}."""\n' + body)
    seen: dict[str, Any] = {}

    async def scenario(session: ClientSession) -> None:
        indexing = anyio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            if message and message.startswith("indexing"):
                indexing.set()

        async def build() -> None:
            seen["index"] = structured(
                await session.call_tool("index", {}, progress_callback=on_progress)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(build)
            with anyio.fail_after(60):
                await indexing.wait()
            got = structured(await session.call_tool("search", {"query": "parse_config"}))
            seen["search_during"] = got
            seen["index_done_before_search"] = "index" in seen
        after = structured(await session.call_tool("search", {"query": "helper_7"}))
        seen["after"] = after

    # A limit above the files changed: the search tries to refresh and finds the lock held.
    run(server_params(root, index_dir, "--refresh-max-files", "100"), scenario)
    during = seen["search_during"]
    assert not seen["index_done_before_search"]
    assert during["hits"][0]["path"] == "src/config.py"
    # The server's own run holds the lock: the search says how stale it is instead of waiting.
    assert during["freshness"]["state"] == "stale"
    assert during["freshness"]["stale_files"] > 0
    assert during["freshness"]["reason"] == "an index run in this process is in progress"
    assert seen["index"]["files_indexed"] == 30
    assert seen["after"]["hits"][0]["path"].startswith("gen/")
    assert seen["after"]["freshness"]["state"] == "fresh"


def test_cancelled_index_stops_after_committing_and_resumes(indexed: tuple[Path, Path]) -> None:
    root, index_dir = indexed
    body = "".join(f"def helper_{j}(x):\n    return x * {j} + len(str(x))\n\n" for j in range(12))
    for i in range(60):
        (root / "gen" / f"mod_{i}.py").parent.mkdir(exist_ok=True)
        (root / "gen" / f"mod_{i}.py").write_text(f'"""Module {i}."""\n' + body)
    seen: dict[str, Any] = {}

    async def scenario(session: ClientSession) -> None:
        indexing = anyio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            # Cancel once a first model batch is embedded (and so committed: checkpoints
            # every 0 s), long before the run's end.
            if message and int(message.split(", ")[-1].split()[0]) > 0:
                indexing.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(session.call_tool, "index", {}, progress_callback=on_progress)
            )
            with anyio.fail_after(60):
                await indexing.wait()
            tg.cancel_scope.cancel()  # the client sends notifications/cancelled
        with anyio.fail_after(60):
            while True:
                status = structured(await session.call_tool("index_status", {}))
                # The run records its state, then gives the lock up.
                if status["last_run"]["state"] != "running" and status["locked_by"] is None:
                    break
                await anyio.sleep(0.2)
        seen["status"] = status
        seen["resumed"] = structured(await session.call_tool("index", {}))

    run(server_params(root, index_dir), scenario)
    assert seen["status"]["last_run"]["state"] == "interrupted"
    assert seen["status"]["locked_by"] is None
    # The next run indexes exactly what the stopped one had not committed.
    committed = seen["status"]["files"] - len(FILES)
    assert committed > 0
    assert seen["resumed"]["files_indexed"] == 60 - committed
    assert seen["resumed"]["files_total"] == len(FILES) + 60


def test_print_config_for_clients(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coarch.cli import main

    root = make_tree(tmp_path / "repo")
    assert main(["mcp", str(root), "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    entry = config["mcpServers"]["coarch"]
    assert entry["args"][-2:] == ["mcp", str(root.resolve())]
    assert main(["mcp", str(root), "--print-config", "--client", "vscode"]) == 0
    assert json.loads(capsys.readouterr().out)["servers"]["coarch"]["type"] == "stdio"
    assert main(["mcp", str(root), "--print-config", "--client", "opencode"]) == 0
    opencode = json.loads(capsys.readouterr().out)["mcp"]["coarch"]
    assert opencode["command"][-2:] == ["mcp", str(root.resolve())]
    assert cli_agents.server_command(root, None)[-2:] == ["mcp", str(root)]

"""The commands for coding agents, `coarch mcp` and `coarch watch`, registered in coarch.cli.

They follow cli.py's rules (results on stdout, logs and errors
on stderr; for `mcp`, stdout is the protocol's alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from coarch.cli_options import add_command, add_common, add_shared, seconds
from coarch.errors import EXIT_OK, UsageError

# The clients whose configuration `coarch mcp --print-config` writes. Claude Code (.mcp.json),
# Claude Desktop, Cursor (.cursor/mcp.json) and Windsurf read `mcpServers`; VS Code
# (.vscode/mcp.json) reads `servers`; OpenCode (opencode.json) reads `mcp`.
CONFIG_CLIENTS = ("claude", "cursor", "vscode", "opencode")


def _served_root(path: str | None) -> Path:
    """PATH, else the nearest indexed folder from here up, else the current folder."""
    from coarch.discovery import check_root
    from coarch.location import find_indexed_root

    if path is not None:
        return check_root(path)
    return check_root(find_indexed_root(Path.cwd()) or Path.cwd())


# ---- coarch mcp ----------------------------------------------------------------------------------


def add_mcp_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "mcp",
        "serve a repository's search to coding agents (MCP over stdio)",
        """
        Run an MCP server on stdin/stdout for a coding agent (Claude Code, Cursor, Codex,
        OpenCode ...): tools search, index_status and index, answered from one warm process.
        stdout carries only protocol messages; logs go to stderr. --print-config prints the
        client configuration instead.""",
    )
    p.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="repository to serve (default: the nearest indexed folder from here "
        "up, else the current folder)",
    )
    add_shared(
        p,
        "--index",
        "--model",
        "--memory-limit",
        "--threads",
        model="model folder for `index` (default: the packaged all-MiniLM-L6-v2, or $COARCH_MODEL)",
        threads="threads for the model when indexing (default: the cores available)",
    )
    p.add_argument(
        "--refresh-max-files",
        type=int,
        metavar="N",
        default=None,
        help="re-index at most N changed files before a search (default: "
        "$COARCH_REFRESH_MAX_FILES or 20; 0: only report them)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the JSON that registers this server with a client, and exit",
    )
    p.add_argument(
        "--client",
        choices=CONFIG_CLIENTS,
        default="claude",
        help="client for --print-config: claude and cursor (`mcpServers`), vscode "
        "(`servers`), opencode (`mcp`); default: claude",
    )
    add_common(p)


def run_mcp(args: argparse.Namespace) -> int:
    root = _served_root(args.path)
    if args.print_config:
        config = client_config(args.client, root, args.index)
        sys.stdout.write(json.dumps(config, indent=2) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    from coarch.mcp_server import serve

    if args.refresh_max_files is not None and args.refresh_max_files < 0:
        raise UsageError(f"--refresh-max-files must be 0 or more, not {args.refresh_max_files}")
    options: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "memory_limit_mb": args.memory_limit,
    }
    serve(root, index_dir=args.index, options=options, refresh_max_files=args.refresh_max_files)
    return EXIT_OK


def server_command(root: Path, index_dir: str | None) -> list[str]:
    """The command line a client runs to start this server, in this environment: its `coarch`
    script when it has one, else this Python with `-m coarch` (a `coarch` elsewhere on PATH
    may be another installation)."""
    script = Path(sys.executable).with_name("coarch")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "coarch"]
    argv += ["mcp", str(root)]
    if index_dir is not None:
        argv += ["--index", str(Path(index_dir).expanduser().absolute())]
    return argv


def client_config(client: str, root: Path, index_dir: str | None) -> dict[str, Any]:
    """The configuration snippet of `client` that starts `coarch mcp` on `root`."""
    argv = server_command(root, index_dir)
    # A client starts servers with a minimal environment: carry the path this coarch came from.
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else None
    if client == "opencode":
        entry: dict[str, Any] = {"type": "local", "command": argv, "enabled": True}
        if env:
            entry["environment"] = env
        return {"$schema": "https://opencode.ai/config.json", "mcp": {"coarch": entry}}
    entry = {"command": argv[0], "args": argv[1:]}
    if env:
        entry["env"] = env
    if client == "vscode":
        return {"servers": {"coarch": {"type": "stdio", **entry}}}
    return {"mcpServers": {"coarch": entry}}


# ---- coarch watch --------------------------------------------------------------------------------


def add_watch_parser(sub: Any) -> None:
    p = add_command(
        sub,
        "watch",
        "keep a repository's index fresh while files change",
        """
        Index the repository, then follow file changes and re-index what changed (debounced:
        a burst of changes such as a branch switch is one batch; ignored files are left
        alone, as by `coarch index`). One line per batch on stdout (JSON Lines with --json).
        Ctrl-C or SIGTERM stops it after committing the batch in hand (exit 130 or 143).""",
    )
    p.add_argument(
        "path",
        nargs="?",
        default=".",
        metavar="PATH",
        help="folder to watch (default: the current folder)",
    )
    add_shared(p, "--index", "--model", "--memory-limit", "--profile", "--threads")
    p.add_argument(
        "--step",
        type=seconds,
        default=0.2,
        metavar="SECONDS",
        help="a batch is indexed once no change came for SECONDS (default: 0.2)",
    )
    p.add_argument(
        "--debounce",
        type=seconds,
        default=2.0,
        metavar="SECONDS",
        help="and after SECONDS at most (default: 2)",
    )
    add_shared(p, "--no-git", "--json", json="one JSON object per batch on stdout")
    add_common(p)


def run_watch(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from coarch.watch import Watcher, WatchUpdate

    def report(update: WatchUpdate) -> None:
        if args.json:
            line = json.dumps(asdict(update))
        elif update.locked_by:
            line = (
                f"{update.files_changed} files changed; index locked by pid "
                f"{update.locked_by}, will retry"
            )
        elif update.files_changed == 0:
            return
        else:
            line = (
                f"{update.files_changed} files changed: {update.files_indexed} indexed, "
                f"{update.files_removed} removed, {update.chunks_embedded} chunks embedded "
                f"({update.seconds:.2f}s)"
            )
        if not args.quiet or args.json:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    options: dict[str, Any] = {
        "model": args.model,
        "threads": args.threads,
        "memory_limit_mb": args.memory_limit,
        "profile": args.profile,
        "use_git": not args.no_git,
    }
    watcher = Watcher(
        args.path,
        index_dir=args.index,
        options=options,
        step_ms=max(1, int(args.step * 1000)),
        debounce_ms=max(1, int(args.debounce * 1000)),
        on_update=report,
    )
    watcher.run()
    return EXIT_OK

"""The search's modes and bounds on k, apart from coarch.search: the CLI's parser and the MCP
server's schemas need them before anything heavy loads (coarch.search imports numpy and the
store: about 0.15 s idle, over a second on a busy machine, before a server's first answer)."""

from __future__ import annotations

MODES: tuple[str, ...] = ("hybrid", "semantic", "keyword")
DEFAULT_K = 10
MAX_K = 1000

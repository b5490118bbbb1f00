"""`Hit`: one search result, as coarch.search returns it and `--json` and the MCP server show it.

Kept apart from coarch.search (and free of numpy) so that the MCP server can derive its output
schema from these fields without importing the search machinery before its first answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result.

    `path` is relative to the indexed root (POSIX separators); lines are 1-based and inclusive.
    `score` is higher-is-better and only comparable within one search: cosine similarity in
    `semantic` mode, BM25 (sign flipped) in `keyword` mode, and in `hybrid` mode the fused and
    re-ranked score scaled to (0, 1], plus 1 to 5 for a definition of the identifier queried (so
    definitions come first, surest first). `snippet` is the chunk's source text.
    """

    path: str
    start_line: int
    end_line: int
    score: float
    language: str | None
    symbol: str | None
    snippet: str
    # Only when asked (search(..., explain=True)): the hit's rank and score in each retriever
    # ("semantic", "keyword": None when that list missed it), its fused score, the re-rank
    # rules that changed its score and by how much, and its definition tier (identifier
    # queries; None when it defines nothing queried).
    explain: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `--json`: the fields above, `explain` only when asked."""
        fields = asdict(self)
        if self.explain is None:
            del fields["explain"]
        return fields

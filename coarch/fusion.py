"""Fusing the semantic and keyword rankings of hybrid search into one, by kind of query.

Two rankings come in, each a list of chunk ids best first with that retriever's scores. How much
each deserves depends on the query: a plain sentence ("retry a failed upload") is the semantic
side's strength, a bare identifier (`parse_config`) the keyword side's, and a sentence that
names code ("call parse_config before connect") needs both. `query_kind` tells them apart and
`fusion_for` gives each kind its fusion. Sentences and mixes use `ScoreFusion`: each list's
scores scaled to [0, 1] by its own range, then summed with equal weights. Unlike reciprocal rank
fusion (`RRF`: a chunk scores the sum of weight / (k + rank) over its lists) it keeps how far
ahead a retriever's first hit is: a clear semantic winner is not pulled down by a keyword list
of near-equal BM25 scores. Measured with scripts/sweep_fusion.py on the evaluation (800
description queries in four languages): equal-weight score fusion beat plain RRF (k=60) and
every weighted RRF tried, on sentences and on mixes, and lost in no language. Bare identifiers
keep RRF: their definition comes first by the identifier rule of coarch.search whatever the
fusion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from coarch.identifiers import parse_identifier

__all__ = ["RRF", "Ranked", "ScoreFusion", "fusion_for", "query_kind"]

QUERY_KINDS = ("sentence", "mix", "identifier")

# A word that is code rather than English: snake_case, camelCase, a dotted path or a call.
_CODE_WORD = re.compile(r"\b(?:\w+_\w+|[a-z]+[A-Z]\w*|[A-Z]\w*[a-z][A-Z]\w*|\w+\.\w+\(?|\w+\(\))")


@dataclass
class Ranked:
    """A ranked list from one retriever: chunk ids best first, with that retriever's scores."""

    ids: list[int]
    scores: list[float]


def query_kind(query: str) -> str:
    """ "identifier" for a bare identifier (`parse_config`, `HttpClient.send`), "mix" for a
    sentence that names code, else "sentence"."""
    if parse_identifier(query) is not None and len(query.split()) == 1:
        return "identifier"
    return "mix" if _CODE_WORD.search(query) else "sentence"


class Fusion(Protocol):
    def fuse(self, semantic: Ranked, keyword: Ranked) -> dict[int, float]:
        """Fused scores, in (0, 1], of every chunk in either list."""
        ...


@dataclass(frozen=True)
class RRF:
    """Weighted reciprocal rank fusion (Cormack et al. 2009): `k` damps the weight of the very
    top ranks; the weights say how far each list is trusted."""

    semantic_weight: float = 1.0
    keyword_weight: float = 1.0
    k: int = 60

    def fuse(self, semantic: Ranked, keyword: Ranked) -> dict[int, float]:
        fused: dict[int, float] = {}
        for ranked, weight in ((semantic, self.semantic_weight), (keyword, self.keyword_weight)):
            for rank, chunk_id in enumerate(ranked.ids):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (self.k + rank + 1)
        best = (self.semantic_weight + self.keyword_weight) / (self.k + 1)
        return {cid: score / best for cid, score in fused.items()}


@dataclass(frozen=True)
class ScoreFusion:
    """Each list's scores scaled to [0, 1] by its own min and max, then a weighted sum (a chunk
    absent from a list gets 0 there)."""

    semantic_weight: float = 0.5

    def fuse(self, semantic: Ranked, keyword: Ranked) -> dict[int, float]:
        fused: dict[int, float] = {}
        weights = ((semantic, self.semantic_weight), (keyword, 1.0 - self.semantic_weight))
        for ranked, weight in weights:
            if not ranked.scores:
                continue
            low, high = min(ranked.scores), max(ranked.scores)
            span = high - low or 1.0
            for chunk_id, score in zip(ranked.ids, ranked.scores):
                value = weight * (score - low) / span
                fused[chunk_id] = fused.get(chunk_id, 0.0) + value
        return {cid: max(score, 1e-6) for cid, score in fused.items()}


# The fusion of each kind of query (see the module docstring). Equal weights are no tuned
# constant: the sweep's best on both kinds.
_BY_KIND: dict[str, Fusion] = {
    "sentence": ScoreFusion(0.5),
    "mix": ScoreFusion(0.5),
    "identifier": RRF(),
}


def fusion_for(kind: str) -> Fusion:
    """The fusion used for a kind of query (one of QUERY_KINDS)."""
    return _BY_KIND[kind]

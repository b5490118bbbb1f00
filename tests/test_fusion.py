"""coarch.fusion: kinds of query, weighted reciprocal rank fusion and normalised-score fusion."""

from __future__ import annotations

import pytest

from coarch.fusion import RRF, Ranked, ScoreFusion, fusion_for, query_kind


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("parse_config", "identifier"),
        ("HttpClient.send", "identifier"),
        ("getConnectionPool()", "identifier"),
        ("retry a failed upload with backoff", "sentence"),
        ("where is the config parsed", "sentence"),
        ("call parse_config before connecting", "mix"),
        ("why does getConnectionPool block", "mix"),
        ("what os.path.join returns", "mix"),
    ],
)
def test_query_kind(query: str, kind: str) -> None:
    assert query_kind(query) == kind


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    semantic = Ranked([1, 2, 3], [0.9, 0.8, 0.7])
    keyword = Ranked([3, 4], [12.0, 3.0])
    fused = RRF(semantic_weight=1.0, keyword_weight=2.0, k=10).fuse(semantic, keyword)
    best = 3.0 / 11
    assert fused[1] == pytest.approx((1 / 11) / best)
    assert fused[3] == pytest.approx((1 / 13 + 2 / 11) / best)
    assert fused[4] == pytest.approx((2 / 12) / best)
    assert max(fused.values()) <= 1.0
    # The keyword list weighs double: its first beats the semantic list's first.
    assert fused[3] > fused[4] > fused[1]


def test_equal_weights_are_plain_rrf() -> None:
    semantic = Ranked([1, 2], [0.9, 0.1])
    keyword = Ranked([2, 1], [5.0, 1.0])
    fused = RRF().fuse(semantic, keyword)
    assert fused[1] == pytest.approx(fused[2])
    assert fused[1] == pytest.approx((1 / 61 + 1 / 62) / (2 / 61))


def test_score_fusion_normalises_each_list() -> None:
    semantic = Ranked([1, 2, 3], [0.9, 0.5, 0.1])
    keyword = Ranked([3, 2], [40.0, 20.0])
    fused = ScoreFusion(semantic_weight=0.5).fuse(semantic, keyword)
    assert fused[1] == pytest.approx(0.5)  # top of semantic, absent from keyword
    assert fused[2] == pytest.approx(0.25)  # middle of semantic, bottom of keyword
    assert fused[3] == pytest.approx(0.5)  # bottom of semantic, top of keyword
    assert all(v > 0 for v in fused.values())
    assert ScoreFusion().fuse(Ranked([], []), Ranked([], [])) == {}


def test_every_kind_has_a_fusion() -> None:
    assert fusion_for("sentence") == ScoreFusion(0.5) == fusion_for("mix")
    assert fusion_for("identifier") == RRF()
    with pytest.raises(KeyError):
        fusion_for("poem")

from __future__ import annotations

import math

import pytest

from hybrid_rerank.connector.fusion import (
    FusedHit,
    fuse,
    interpolate,
    min_max_fusion,
    min_max_normalize,
    reciprocal_rank_fusion,
    z_score_fusion,
)

BM25 = [("a", 10.0), ("b", 5.0), ("c", 1.0)]
VECTOR = [("b", 0.9), ("d", 0.8)]


def as_pairs(hits: list[FusedHit]) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in hits]


def assert_fused(hits: list[FusedHit], expected: list[tuple[str, float]]) -> None:
    assert [h.id for h in hits] == [doc_id for doc_id, _ in expected]
    assert [h.score for h in hits] == pytest.approx([score for _, score in expected])


def test_rrf_hand_computed() -> None:
    fused = reciprocal_rank_fusion([BM25, VECTOR], k=60)
    assert_fused(fused, [("b", 1 / 62 + 1 / 61), ("a", 1 / 61), ("d", 1 / 62), ("c", 1 / 63)])


def test_rrf_rank_constant_changes_scores() -> None:
    assert_fused(reciprocal_rank_fusion([BM25], k=1), [("a", 1 / 2), ("b", 1 / 3), ("c", 1 / 4)])


def test_rrf_ranks_by_score_not_by_input_order() -> None:
    shuffled = [("c", 1.0), ("a", 10.0), ("b", 5.0)]
    assert reciprocal_rank_fusion([shuffled]) == reciprocal_rank_fusion([BM25])


def test_min_max_hand_computed() -> None:
    assert_fused(
        min_max_fusion([BM25, VECTOR], weights=[0.5, 0.5]),
        [("b", 0.5 * 4 / 9 + 0.5), ("a", 0.5), ("c", 0.0), ("d", 0.0)],
    )


def test_min_max_weights_are_convex() -> None:
    fused = dict(as_pairs(min_max_fusion([BM25, VECTOR], weights=[3, 1])))
    assert fused["a"] == pytest.approx(0.75)
    assert fused["b"] == pytest.approx(0.75 * 4 / 9 + 0.25)


def test_z_score_hand_computed() -> None:
    mean = 16 / 3
    std = math.sqrt(((10 - mean) ** 2 + (5 - mean) ** 2 + (1 - mean) ** 2) / 3)
    z = {doc_id: (score - mean) / std for doc_id, score in BM25}
    # Absent from a leg -> that leg's lowest z-score (-1 for the vector leg, z["c"] for BM25).
    assert_fused(
        z_score_fusion([BM25, VECTOR], weights=[0.5, 0.5]),
        [
            ("b", 0.5 * z["b"] + 0.5 * 1.0),
            ("a", 0.5 * z["a"] + 0.5 * -1.0),
            ("c", 0.5 * z["c"] + 0.5 * -1.0),
            ("d", 0.5 * z["c"] + 0.5 * -1.0),
        ],
    )


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_ties_break_by_document_id(method: str) -> None:
    legs = [[("z", 1.0), ("m", 1.0)], [("a", 2.0), ("b", 2.0)]]
    ids = [h.id for h in fuse(method, legs)]  # type: ignore[arg-type]
    assert ids == sorted(ids, key=lambda i: (-dict(as_pairs(fuse(method, legs)))[i], i))  # type: ignore[arg-type]
    assert ids.index("a") < ids.index("b") and ids.index("m") < ids.index("z")


@pytest.mark.parametrize("method", ["rrf", "minmax", "zscore"])
def test_an_empty_leg_leaves_the_other_legs_order(method: str) -> None:
    assert [h.id for h in fuse(method, [BM25, []])] == ["a", "b", "c"]  # type: ignore[arg-type]
    assert fuse(method, [[], []]) == []  # type: ignore[arg-type]


def test_a_single_hit_leg_normalises_to_one() -> None:
    assert min_max_normalize([("x", 3.2)]) == {"x": 1.0}
    assert_fused(
        min_max_fusion([[("x", 3.2)], VECTOR], weights=[0.5, 0.5]), [("b", 0.5), ("x", 0.5), ("d", 0.0)]
    )
    assert_fused(z_score_fusion([[("x", 3.2)]]), [("x", 0.0)])


def test_a_document_in_one_leg_only_keeps_that_legs_share() -> None:
    fused = dict(as_pairs(reciprocal_rank_fusion([BM25, VECTOR])))
    assert fused["d"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63)


def test_inputs_are_not_mutated_and_duplicates_keep_the_best_score() -> None:
    leg = [("a", 1.0), ("a", 3.0), ("b", 2.0)]
    before = list(leg)
    assert_fused(reciprocal_rank_fusion([leg], k=60), [("a", 1 / 61), ("b", 1 / 62)])
    assert leg == before


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rank constant"):
        reciprocal_rank_fusion([BM25], k=0)
    with pytest.raises(ValueError, match="weights"):
        min_max_fusion([BM25, VECTOR], weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        min_max_fusion([BM25, VECTOR], weights=[-1.0, 2.0])
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse("borda", [BM25])  # type: ignore[arg-type]


def test_weights_may_be_zero_but_not_all_zero() -> None:
    # BM25 weight 0: the vector leg alone decides (b 1, d 0), the BM25-only documents score 0.
    assert_fused(
        min_max_fusion([BM25, VECTOR], weights=[0, 1]), [("b", 1.0), ("a", 0.0), ("c", 0.0), ("d", 0.0)]
    )
    with pytest.raises(ValueError, match="positive sum"):
        min_max_fusion([BM25, VECTOR], weights=[0, 0])


def test_without_weights_the_convex_fusions_weigh_legs_equally() -> None:
    assert as_pairs(min_max_fusion([BM25, VECTOR])) == as_pairs(
        min_max_fusion([BM25, VECTOR], weights=[1, 1])
    )
    assert_fused(
        min_max_fusion([BM25, VECTOR]), [("b", 0.5 * 4 / 9 + 0.5), ("a", 0.5), ("c", 0.0), ("d", 0.0)]
    )
    assert min_max_fusion([]) == [] and z_score_fusion([]) == []  # no legs, nothing to weigh


def test_weights_reach_every_method() -> None:
    # Weights 3 : 1 are normalized to 0.75 and 0.25.
    assert_fused(
        fuse("rrf", [BM25, VECTOR], rrf_k=1, weights=[3, 1]),
        [("a", 0.75 / 2), ("b", 0.75 / 3 + 0.25 / 2), ("c", 0.75 / 4), ("d", 0.25 / 3)],
    )
    assert_fused(
        reciprocal_rank_fusion([BM25, VECTOR], k=1, weights=[1, 3]),
        [("b", 0.25 / 3 + 0.75 / 2), ("d", 0.75 / 3), ("a", 0.25 / 2), ("c", 0.25 / 4)],
    )
    with pytest.raises(ValueError, match="1 weights given for 2 legs"):
        reciprocal_rank_fusion([BM25, VECTOR], weights=[1.0])
    mean = 16 / 3
    std = math.sqrt(((10 - mean) ** 2 + (5 - mean) ** 2 + (1 - mean) ** 2) / 3)
    z = {doc_id: (score - mean) / std for doc_id, score in BM25}
    assert_fused(
        fuse("zscore", [BM25, VECTOR], weights=[3, 1]),
        [
            ("a", 0.75 * z["a"] - 0.25),
            ("b", 0.75 * z["b"] + 0.25),
            ("c", 0.75 * z["c"] - 0.25),
            ("d", 0.75 * z["c"] - 0.25),
        ],
    )
    assert_fused(
        fuse("minmax", [BM25, VECTOR], weights=[3, 1]),
        [("a", 0.75), ("b", 0.75 * 4 / 9 + 0.25), ("c", 0.0), ("d", 0.0)],
    )


def test_the_default_rrf_constant_is_60() -> None:
    assert_fused(fuse("rrf", [BM25]), [("a", 1 / 61), ("b", 1 / 62), ("c", 1 / 63)])


def test_an_empty_first_leg_leaves_the_later_legs_in_z_score_fusion() -> None:
    assert_fused(z_score_fusion([[], VECTOR], weights=[0.5, 0.5]), [("b", 0.5), ("d", -0.5)])


def test_interpolation_weights_outside_zero_to_one_are_refused() -> None:
    for weight in (-0.1, 1.5, 2.0, float("nan")):
        with pytest.raises(ValueError) as refused:
            interpolate({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, weight)
        assert str(refused.value) == f"the rerank interpolation weight must be in [0, 1], got {weight}"


def test_interpolation_at_the_ends_and_with_a_missing_first_stage_score() -> None:
    rerank = {"a": 1.0, "b": 3.0}
    # z over two documents is -1 and 1. Weight 1: the rerank z-scores alone; 0: the first stage alone.
    assert interpolate(rerank, {"a": 5.0, "b": 0.0}, 1.0) == pytest.approx({"a": -1.0, "b": 1.0})
    assert interpolate(rerank, {"a": 5.0, "b": 0.0}, 0.0) == pytest.approx({"a": 1.0, "b": -1.0})
    # A document without a first-stage score counts 0 there: b (0) is below a (0.5), c (1.5) above.
    mixed = interpolate({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.5, "c": 1.5}, 0.5)
    zr = math.sqrt(1.5)  # z of 1, 2, 3 is -1.2247, 0, 1.2247
    # First stage 0.5, 0, 1.5: mean 2/3, std sqrt(((1/6)^2 + (2/3)^2 + (5/6)^2) / 3) = 0.6236.
    std = math.sqrt(((0.5 - 2 / 3) ** 2 + (2 / 3) ** 2 + (1.5 - 2 / 3) ** 2) / 3)
    zf = {"a": (0.5 - 2 / 3) / std, "b": (0 - 2 / 3) / std, "c": (1.5 - 2 / 3) / std}
    assert mixed == pytest.approx(
        {"a": 0.5 * -zr + 0.5 * zf["a"], "b": 0.5 * zf["b"], "c": 0.5 * zr + 0.5 * zf["c"]}
    )

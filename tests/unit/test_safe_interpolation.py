"""The safe default rerank weight (connector/lab/safe_interpolation.py) on hand-computed curves: the largest
weight, no larger than the tuned one, up to which the smoothed document-disjoint dev curve never falls more
than the tolerance below the first stage."""

from __future__ import annotations

import pytest

from hybrid_rerank.connector.lab.safe_interpolation import (
    MIN_UNSEEN_QUERIES,
    SAFE_TOLERANCE,
    default_weight,
    safe_weight,
    smoothed_curve,
)

GRID = [round(i * 0.05, 2) for i in range(21)]


def curve_of(values: list[float]) -> dict[float, float]:
    assert len(values) == len(GRID)
    return dict(zip(GRID, values, strict=True))


def test_smoothing_averages_each_weight_with_its_neighbours() -> None:
    smoothed = smoothed_curve({0.0: 0.3, 0.5: 0.6, 1.0: 0.0})
    assert smoothed == pytest.approx({0.0: 0.45, 0.5: 0.3, 1.0: 0.3})


def test_the_weight_stops_where_the_smoothed_curve_leaves_the_first_stage() -> None:
    # flat at 0.8 up to 0.2, then 0.004 lower per step. Smoothed: at 0.2 (0.8 + 0.8 + 0.796) / 3 = 0.79867,
    # within 0.002 of 0.8; at 0.25 (0.8 + 0.796 + 0.792) / 3 = 0.796, below 0.798: the safe weight is 0.2.
    falling = curve_of([0.8] * 5 + [0.8 - 0.004 * i for i in range(1, 17)])
    assert safe_weight(falling, tuned=0.4) == 0.2
    assert safe_weight(falling, tuned=0.1) == 0.1  # never above the tuned weight
    assert safe_weight(falling, tuned=0.4, tolerance=0.0) == 0.15  # 0.79867 < 0.8 at 0.2


def test_a_lone_dip_is_smoothed_away_but_a_deep_one_stops_the_weight_for_good() -> None:
    # A dip of 0.0045 at 0.1 averages to 0.0015 below the first stage: within the tolerance.
    shallow = curve_of([0.8, 0.8, 0.7955] + [0.8] * 18)
    assert safe_weight(shallow, tuned=1.0) == 1.0
    # A dip of 0.009 averages to 0.003 below: the weight stops before it, though the curve climbs after.
    deep = curve_of([0.8, 0.8, 0.791] + [0.81] * 18)
    assert safe_weight(deep, tuned=1.0) == 0.0  # the dip's neighbour 0.05 averages (0.8+0.8+0.791)/3 = 0.797
    assert safe_weight(curve_of([0.8, 0.8, 0.8, 0.791] + [0.81] * 17), tuned=1.0) == 0.05


def test_a_curve_that_never_falls_keeps_the_tuned_weight() -> None:
    rising = curve_of([0.70 + 0.001 * i for i in range(21)])
    assert safe_weight(rising, tuned=0.65) == 0.65
    with pytest.raises(ValueError, match="weight 0"):
        safe_weight({0.5: 0.8, 1.0: 0.7}, tuned=0.5)


def test_the_default_is_the_safe_weight_when_enough_unseen_queries_judge_it() -> None:
    falling = curve_of([0.8] * 5 + [0.8 - 0.004 * i for i in range(1, 17)])
    weight, why = default_weight(0.4, falling, MIN_UNSEEN_QUERIES)
    assert weight == 0.2 and why.startswith("safe") and str(SAFE_TOLERANCE) in why
    weight, why = default_weight(0.4, falling, MIN_UNSEEN_QUERIES - 1)
    assert weight == 0.4 and "too few" in why


def test_the_shipped_models_recorded_unseen_curve_gives_a_lower_default() -> None:
    """The shipped scifact-minilm-l6-reranker-int8 was tuned to 0.4 on SciFact dev; its 47 document-disjoint
    dev queries (the curve its hybrid_rerank.json records, to 4 places) dip from 0.05 on, and fall more than
    0.002 below the first stage from 0.3 on (smoothed: 0.7905 at 0.25, 0.7892 at 0.3 against 0.7923)."""
    unseen = curve_of(
        [
            *(0.7923, 0.7919, 0.7918, 0.7915, 0.7929, 0.7894, 0.7892, 0.7889, 0.7904, 0.7875, 0.7875),
            *(0.7827, 0.7692, 0.7663, 0.7713, 0.7632, 0.7540, 0.7407, 0.7234, 0.7129, 0.6760),
        ]
    )
    assert default_weight(0.4, unseen, 47)[0] == 0.25
    assert safe_weight(unseen, 0.4, tolerance=0.001) == 0.15

"""The safe default rerank weight (connector/lab/safe_interpolation.py) on hand-computed per-query curves:
the largest weight, no larger than the tuned one, up to which the document-disjoint dev queries never fall
below the first stage by more than the standard error of their mean gain (smoothed over the grid)."""

from __future__ import annotations

import math

import pytest

from hybrid_rerank.connector.lab.safe_interpolation import (
    MIN_UNSEEN_QUERIES,
    default_weight,
    harm_margins,
    per_query_curve,
    safe_weight,
    smoothed_curve,
)

GRID = [round(i * 0.05, 2) for i in range(21)]
QUERIES = 20


def harmed(losers_from: dict[float, int], loss: float = 0.5) -> dict[float, list[float]]:
    """20 queries at nDCG 0.5 at every weight, except that from each weight in `losers_from` on, that many
    of them lose `loss`."""
    curve = {}
    for weight in GRID:
        losers = max([n for w, n in losers_from.items() if weight >= w], default=0)
        curve[weight] = [0.5 - loss] * losers + [0.5] * (QUERIES - losers)
    return curve


def test_smoothing_averages_each_weight_with_its_neighbours() -> None:
    assert smoothed_curve({0.0: 0.3, 0.5: 0.6, 1.0: 0.0}) == pytest.approx({0.0: 0.45, 0.5: 0.3, 1.0: 0.3})


def test_the_margin_is_the_mean_gain_plus_its_standard_error() -> None:
    # gains 0.1, -0.1, 0, -0.2: mean -0.05; sample std sqrt(0.05 / 3) = 0.1291; standard error 0.06455
    margins = harm_margins({0.0: [0.5, 0.5, 0.5, 0.5], 0.5: [0.6, 0.4, 0.5, 0.3]})
    assert margins[0.0] == 0.0
    assert margins[0.5] == pytest.approx(-0.05 + math.sqrt(0.05 / 3) / 2)
    with pytest.raises(ValueError, match="weight 0"):
        harm_margins({0.5: [0.5], 1.0: [0.4]})


def test_one_query_alone_cannot_stop_the_weight_two_can() -> None:
    # One query losing x: mean -x/n, standard error x/n: margin 0 (harm not shown). Two losing x: mean -2x/n,
    # standard error x * sqrt(2 (n-2) / (n-1)) / n = 1.376 x/n for n = 20: margin -0.0156 for x = 0.5.
    one = harmed({0.25: 1})
    assert harm_margins(one)[0.25] == pytest.approx(0.0, abs=1e-12)
    assert safe_weight(one, tuned=1.0) == 1.0
    two = harmed({0.25: 1, 0.4: 2})
    assert harm_margins(two)[0.4] == pytest.approx((-2 + math.sqrt(2 * 18 / 19)) * 0.5 / QUERIES)
    # smoothed at 0.35: (0 + 0 - 0.0156) / 3 < 0, at 0.3 all three neighbours are 0: the safe weight is 0.3
    assert safe_weight(two, tuned=1.0) == 0.3
    assert safe_weight(two, tuned=0.2) == 0.2  # never above the tuned weight


def test_a_curve_where_every_query_gains_keeps_the_tuned_weight() -> None:
    rising = {w: [0.5 + w * 0.1 + 0.01 * i for i in range(QUERIES)] for w in GRID}
    assert safe_weight(rising, tuned=0.65) == 0.65
    assert default_weight(0.65, rising)[0] == 0.65


def test_the_default_is_the_safe_weight_when_enough_unseen_queries_judge_it() -> None:
    weight, why = default_weight(0.5, harmed({0.25: 1, 0.4: 2}))
    assert weight == 0.3 and why.startswith("safe: above 0.3 the 20 unseen-document dev queries")
    few = {w: values[: MIN_UNSEEN_QUERIES - 1] for w, values in harmed({0.1: 5}).items()}
    weight, why = default_weight(0.5, few)
    assert weight == 0.5 and "too few" in why


def test_the_per_query_curve_reranks_as_the_pipeline_does() -> None:
    # First stage a then b; the reranker prefers b, the relevant one: nDCG@10 1/log2(3) at weight 0, 1 at 1.
    curve = per_query_curve(
        {"q": {"a": 0.0, "b": 1.0}}, {"q": [("a", 1.0), ("b", 0.5)]}, {"q": {"b": 1}}, [0.0, 1.0]
    )
    assert curve[0.0] == pytest.approx([1 / math.log2(3)]) and curve[1.0] == pytest.approx([1.0])

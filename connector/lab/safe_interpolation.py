"""A default rerank weight that stays safe where the model's training domain is not the index's.

`tune_interpolation` picks the weight with the best smoothed dev nDCG@10. Its dev queries come from the
training domain, where the reranker is at its best; on another domain the reranker's own order is worse and
the same weight can end below the first stage. The dev queries whose relevant documents no training query
cites (document-disjoint, "unseen documents") are the nearest thing to another domain that the training data
holds, and their curve falls sooner than the whole dev split's.

The rule: the largest grid weight, no larger than the tuned one, up to which the unseen-document queries
never fall below the first stage (weight 0) by more than the noise of their own mean. Per weight w, each
query's nDCG@10 at w minus at 0; the margin is the mean of those differences plus their standard error
(one query alone can never make it negative: its effect on the mean equals its standard error); the margin
is smoothed with its grid neighbours' and must stay >= 0 from 0 up to the chosen weight. A fixed tolerance
would not do: on ~50 queries one query losing its top document moves the mean by 0.008, more than the gains
being judged. No label of the target domain is read: every curve comes from the training split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from hybrid_rerank.connector.lab.evaluation import evaluate_run
from hybrid_rerank.connector.stages import rerank_order

MIN_UNSEEN_QUERIES = 20  # fewer unseen-document dev queries give a curve too noisy to judge by
PerQueryCurve = Mapping[float, Sequence[float]]  # weight -> each query's nDCG@10, in one order for all


def per_query_curve(
    rerank: Mapping[str, Mapping[str, float]],
    first: Mapping[str, Sequence[tuple[str, float]]],
    qrels: Mapping[str, Mapping[str, int]],
    grid: Sequence[float],
) -> dict[float, list[float]]:
    """Each query's nDCG@10 (in `first`'s order) at each weight of `grid`, reranked as the pipeline does."""
    curve: dict[float, list[float]] = {}
    for weight in grid:
        curve[weight] = [
            evaluate_run({q: rerank_order(ranked, rerank[q], len(rerank[q]), weight)[0]}, {q: qrels[q]})[
                "ndcg@10"
            ]
            for q, ranked in first.items()
        ]
    return curve


def smoothed_curve(curve: Mapping[float, float]) -> dict[float, float]:
    """Each weight's value averaged with its grid neighbours' (the ends with their one neighbour)."""
    weights = sorted(curve)
    result: dict[float, float] = {}
    for index, weight in enumerate(weights):
        window = weights[max(index - 1, 0) : index + 2]
        result[weight] = sum(curve[w] for w in window) / len(window)
    return result


def harm_margins(per_query: PerQueryCurve) -> dict[float, float]:
    """Per weight: the mean per-query gain over weight 0 plus its standard error (< 0: harm beyond noise)."""
    if 0.0 not in per_query:
        raise ValueError("the curve must include weight 0 (the first stage alone)")
    base = list(per_query[0.0])
    margins: dict[float, float] = {}
    for weight, values in per_query.items():
        gains = [v - b for v, b in zip(values, base, strict=True)]
        count = len(gains)
        mean = sum(gains) / count if count else 0.0
        spread = math.sqrt(sum((g - mean) ** 2 for g in gains) / (count - 1)) if count > 1 else 0.0
        margins[weight] = mean + spread / math.sqrt(count) if count else 0.0
    return margins


def safe_weight(per_query: PerQueryCurve, tuned: float) -> float:
    """The largest grid weight <= `tuned` up to which the smoothed harm margin never goes below 0."""
    smoothed = smoothed_curve(harm_margins(per_query))
    chosen = 0.0
    for weight in sorted(smoothed):
        if weight == 0.0:
            continue
        if weight > tuned + 1e-9 or smoothed[weight] < -1e-9:  # (rounding: one query alone gives 0)
            break
        chosen = weight
    return chosen


def default_weight(tuned: float, unseen: PerQueryCurve) -> tuple[float, str]:
    """The weight to ship as the model's default, and why: the safe one when enough unseen-document dev
    queries judge it, else the tuned one (with the reason)."""
    count = len(unseen.get(0.0, ()))
    if count < MIN_UNSEEN_QUERIES:
        return tuned, (
            f"tuned ({count} unseen-document dev queries, fewer than {MIN_UNSEEN_QUERIES}: too few to judge)"
        )
    safe = safe_weight(unseen, tuned)
    if safe == tuned:
        return tuned, f"tuned (its {count} unseen-document dev queries show no harm up to it)"
    return safe, (
        f"safe: above {safe} the {count} unseen-document dev queries fall below the first stage by more "
        "than the standard error (smoothed over neighbouring weights)"
    )

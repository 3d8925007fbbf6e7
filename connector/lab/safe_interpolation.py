"""A default rerank weight that stays safe where the model's training domain is not the index's.

`tune_interpolation` picks the weight with the best smoothed dev nDCG@10. Its dev queries come from the
training domain, where the reranker is at its best; on another domain the reranker's own order is worse and
the same weight can end below the first stage. The queries of the dev split whose relevant documents no
training query cites (document-disjoint, "unseen documents") are the nearest thing to another domain that
the training data holds, and their curve falls sooner than the whole dev split's.

The rule: the largest weight, no larger than the tuned one, up to which the smoothed unseen-document curve
never falls more than `tolerance` below the first stage (weight 0). `tolerance` absorbs dev noise: on ~50
queries, a few relevant documents swapping places low in the top 10 move nDCG@10 by about 0.001-0.002. No
label of the target domain is read: the curve comes from the training split alone.
"""

from __future__ import annotations

from collections.abc import Mapping

SAFE_TOLERANCE = 0.002  # nDCG@10 below the first stage that still counts as "not below" (dev noise)
MIN_UNSEEN_QUERIES = 20  # fewer unseen-document dev queries give a curve too noisy to judge by


def smoothed_curve(curve: Mapping[float, float]) -> dict[float, float]:
    """Each weight's nDCG@10 averaged with its grid neighbours' (the ends with their one neighbour)."""
    weights = sorted(curve)
    result: dict[float, float] = {}
    for index, weight in enumerate(weights):
        window = weights[max(index - 1, 0) : index + 2]
        result[weight] = sum(curve[w] for w in window) / len(window)
    return result


def safe_weight(
    unseen_curve: Mapping[float, float], tuned: float, tolerance: float = SAFE_TOLERANCE
) -> float:
    """The largest grid weight <= `tuned` such that the smoothed `unseen_curve` stays at or above its value
    at weight 0 (the first stage) minus `tolerance` at every weight from 0 up to it."""
    weights = sorted(unseen_curve)
    if not weights or weights[0] != 0.0:
        raise ValueError("the curve must start at weight 0 (the first stage alone)")
    smoothed = smoothed_curve(unseen_curve)
    floor = unseen_curve[0.0] - tolerance
    chosen = 0.0
    for weight in weights[1:]:
        if weight > tuned + 1e-9 or smoothed[weight] < floor:
            break
        chosen = weight
    return chosen


def default_weight(
    tuned: float, unseen_curve: Mapping[float, float], unseen_queries: int
) -> tuple[float, str]:
    """The weight to ship as the model's default, and why: the safe one when the unseen-document curve has
    enough queries to judge by, else the tuned one (with the reason)."""
    if unseen_queries < MIN_UNSEEN_QUERIES:
        return tuned, (
            f"tuned ({unseen_queries} unseen-document dev queries, fewer than {MIN_UNSEEN_QUERIES}: "
            "too few to judge safety by)"
        )
    safe = safe_weight(unseen_curve, tuned)
    if safe == tuned:
        return tuned, "tuned (the unseen-document dev curve stays at the first stage up to it)"
    return safe, (
        f"safe: the tuned weight {tuned} falls below the first stage on the unseen-document dev queries "
        f"(smoothed, tolerance {SAFE_TOLERANCE})"
    )

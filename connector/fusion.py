"""Rank fusion of recall legs (BM25, k-NN, ...) as pure functions.

A leg is a sequence of `(doc_id, score)` pairs; higher scores are better. Every function returns a new list
of `FusedHit`, best first, with ties broken by document id, and never mutates its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

FusionMethod = Literal["rrf", "minmax", "zscore"]
Leg = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class FusedHit:
    id: str
    score: float


def rank_leg(leg: Leg) -> list[tuple[str, float]]:
    """The leg best first (ties by id), each id once with its best score."""
    best: dict[str, float] = {}
    for doc_id, score in leg:
        if doc_id not in best or score > best[doc_id]:
            best[doc_id] = score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def _checked_weights(weights: Sequence[float] | None, n_legs: int) -> list[float]:
    if weights is None:
        return [1.0 / n_legs] * n_legs if n_legs else []
    if len(weights) != n_legs:
        raise ValueError(f"{len(weights)} weights given for {n_legs} legs")
    if any(w < 0 or math.isnan(w) for w in weights) or (n_legs and sum(weights) <= 0):
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    total = sum(weights)
    return [w / total for w in weights]


def _sorted_hits(scores: dict[str, float]) -> list[FusedHit]:
    return [FusedHit(doc_id, score) for doc_id, score in sorted(scores.items(), key=lambda i: (-i[1], i[0]))]


def reciprocal_rank_fusion(
    legs: Sequence[Leg], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[FusedHit]:
    """RRF (Cormack et al. 2009): sum over legs of weight / (k + rank), rank starting at 1.

    Without weights every leg counts 1, as in the original formulation.
    """
    if k <= 0:
        raise ValueError(f"the RRF rank constant must be positive, got {k}")
    leg_weights = [1.0] * len(legs) if weights is None else _checked_weights(weights, len(legs))
    scores: dict[str, float] = {}
    for weight, leg in zip(leg_weights, legs, strict=True):
        for rank, (doc_id, _) in enumerate(rank_leg(leg), start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight / (k + rank)
    return _sorted_hits(scores)


def min_max_normalize(leg: Leg) -> dict[str, float]:
    """Scores mapped onto [0, 1]; a leg whose scores are all equal (or a single hit) maps to 1."""
    ranked = rank_leg(leg)
    if not ranked:
        return {}
    high, low = ranked[0][1], ranked[-1][1]
    span = high - low
    return {doc_id: (score - low) / span if span > 0 else 1.0 for doc_id, score in ranked}


def min_max_fusion(legs: Sequence[Leg], *, weights: Sequence[float] | None = None) -> list[FusedHit]:
    """Convex combination of min-max normalized scores; a document absent from a leg gets 0 there."""
    leg_weights = _checked_weights(weights, len(legs))
    scores: dict[str, float] = {}
    for weight, leg in zip(leg_weights, legs, strict=True):
        for doc_id, norm in min_max_normalize(leg).items():
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * norm
    return _sorted_hits(scores)


def z_score_normalize(leg: Leg) -> dict[str, float]:
    """(score - mean) / standard deviation; all zeros when the scores do not vary."""
    ranked = rank_leg(leg)
    if not ranked:
        return {}
    values = [score for _, score in ranked]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {doc_id: (score - mean) / std if std > 0 else 0.0 for doc_id, score in ranked}


def z_score_fusion(legs: Sequence[Leg], *, weights: Sequence[float] | None = None) -> list[FusedHit]:
    """Weighted sum of z-scores. A document absent from a leg gets that leg's lowest z-score: it ranked no
    better than the leg's worst hit, and 0 would place it at the leg's average."""
    leg_weights = _checked_weights(weights, len(legs))
    normalized = [z_score_normalize(leg) for leg in legs]
    all_ids = {doc_id for norm in normalized for doc_id in norm}
    scores: dict[str, float] = {}
    for weight, norm in zip(leg_weights, normalized, strict=True):
        if not norm:
            continue
        floor = min(norm.values())
        for doc_id in all_ids:
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * norm.get(doc_id, floor)
    return _sorted_hits(scores)


def fuse(
    method: FusionMethod,
    legs: Sequence[Leg],
    *,
    rrf_k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[FusedHit]:
    """Dispatch on the configured method name."""
    if method == "rrf":
        return reciprocal_rank_fusion(legs, k=rrf_k, weights=weights)
    if method == "minmax":
        return min_max_fusion(legs, weights=weights)
    if method == "zscore":
        return z_score_fusion(legs, weights=weights)
    raise ValueError(f"unknown fusion method {method!r}: use rrf, minmax or zscore")


def interpolate(rerank: Mapping[str, float], first: Mapping[str, float], weight: float) -> dict[str, float]:
    """weight * z(rerank) + (1 - weight) * z(first stage), both z-scored over the documents the reranker
    scored, so neither scale dominates. weight 1 is the rerank order alone, 0 the first-stage order."""
    if not 0.0 <= weight <= 1.0 or math.isnan(weight):
        raise ValueError(f"the rerank interpolation weight must be in [0, 1], got {weight}")
    reranked = z_score_normalize(list(rerank.items()))
    fused = z_score_normalize([(doc_id, first.get(doc_id, 0.0)) for doc_id in rerank])
    return {doc_id: weight * reranked[doc_id] + (1.0 - weight) * fused[doc_id] for doc_id in rerank}

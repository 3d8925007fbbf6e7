"""How near a query is to the reranker's training domain, and the rerank weight that follows.

A rerank model's default weight (`interpolation_weight` in its hybrid_rerank.json) is the safe one
(`connector/lab/safe_interpolation.py`): it holds where the model's training domain is not the index's. A
model may also record the fingerprint of its training domain (`training_domain`): the bi-encoder that made
it, the normalised mean of its training queries' vectors (the centroid), the cosine to the centroid above
which all but `IN_DOMAIN_QUANTILE` of its own training queries lie (the threshold), and the weight tuned on
its dev queries (`in_domain_weight`). `DomainGuard.decide` then gives a query as near the centroid as the
training queries the tuned weight, and any other query the safe default, with a note. No label of the
target domain is read: the fingerprint comes from the training queries alone, the decision from the query's
own vector (which the dense leg computes anyway).

Without a fingerprint, with another bi-encoder than the one that made it, or with no query vector (BM25
alone), every query gets the safe default: the guard can only ever raise the weight where it recognises the
training domain, never lower it below what the model ships.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IN_DOMAIN_QUANTILE = 0.05  # the share of the training queries themselves that the guard calls off-domain
FINGERPRINT_KEY = "training_domain"


def _unit(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def fingerprint(
    query_vectors: np.ndarray, embedder: str, in_domain_weight: float, quantile: float = IN_DOMAIN_QUANTILE
) -> dict[str, Any]:
    """The `training_domain` record of a model trained on queries whose bi-encoder vectors (`embedder`'s)
    are `query_vectors` (one row per query), for hybrid_rerank.json."""
    rows = np.asarray(query_vectors, dtype=np.float64)
    if rows.ndim != 2 or len(rows) < 2:
        raise ValueError("a training-domain fingerprint needs the vectors of at least two training queries")
    units = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    centroid = _unit(units.mean(axis=0))
    similarities = units @ centroid
    return {
        "embedder": embedder,
        "centroid": [round(float(x), 6) for x in centroid],
        "threshold": round(float(np.quantile(similarities, quantile)), 6),
        "quantile": quantile,
        "queries": len(rows),
        "in_domain_weight": in_domain_weight,
    }


@dataclass(frozen=True)
class DomainDecision:
    weight: float
    in_domain: bool | None  # None: the guard could not judge (no fingerprint, another bi-encoder, no vector)
    similarity: float | None = None
    note: str | None = None  # for people, when the query got the safe default though a fingerprint exists


@dataclass(frozen=True)
class DomainGuard:
    embedder: str
    centroid: np.ndarray
    threshold: float
    in_domain_weight: float

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> DomainGuard | None:
        """The guard a model's hybrid_rerank.json describes, or None when it records no usable fingerprint."""
        record = metadata.get(FINGERPRINT_KEY)
        if not isinstance(record, Mapping):
            return None
        try:
            centroid = _unit([float(x) for x in record["centroid"]])
            threshold, weight = float(record["threshold"]), float(record["in_domain_weight"])
            embedder = str(record["embedder"])
        except (KeyError, TypeError, ValueError):
            return None
        if not centroid.size or not 0.0 <= weight <= 1.0:
            return None
        return cls(embedder, centroid, threshold, weight)

    def decide(
        self, default: float, vector: Sequence[float] | np.ndarray | None, embedder: str
    ) -> DomainDecision:
        """The weight for one query: `in_domain_weight` when its vector (from `embedder`) is as near the
        training centroid as the training queries are, else `default` (the model's safe weight)."""
        if embedder != self.embedder:
            return DomainDecision(
                default,
                None,
                note=f"domain guard off: the fingerprint is {self.embedder}'s, not {embedder}'s",
            )
        if vector is None:
            return DomainDecision(default, None)
        unit = _unit(vector)
        if unit.shape != self.centroid.shape:
            return DomainDecision(default, None, note="domain guard off: the query vector's size differs")
        similarity = float(unit @ self.centroid)
        if similarity >= self.threshold:
            return DomainDecision(self.in_domain_weight, True, similarity)
        return DomainDecision(
            default,
            False,
            similarity,
            f"query outside the reranker's training domain (cosine {similarity:.3f} to its centroid, below "
            f"{self.threshold:.3f}): rerank weight {default} instead of {self.in_domain_weight}",
        )


def load_domain_guard(folder: str | Path | None) -> DomainGuard | None:
    """The guard a rerank model's folder records (hybrid_rerank.json), when the folder is here (local, or
    the shipped model, or a cached hub model); None otherwise: every query then gets the safe weight."""
    if folder is None:
        return None
    from hybrid_rerank.workers.runtime.models import read_rerank_metadata

    return DomainGuard.from_metadata(read_rerank_metadata(folder))

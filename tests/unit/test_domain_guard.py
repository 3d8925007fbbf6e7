"""The training-domain guard (connector/domain.py) on hand-made vectors: the fingerprint's centroid and
threshold, the tuned weight for a query as near the centroid as the training queries, the safe default for
any other, and for anything the guard cannot judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.domain import FINGERPRINT_KEY, DomainGuard, fingerprint, load_domain_guard

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def training_vectors() -> np.ndarray:
    # Twenty queries at angles 0..19 degrees from the x axis in the x-y plane, of different lengths (the
    # length must not matter): the centroid is the unit vector at 9.5 degrees.
    angles = np.radians(np.arange(20))
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(20)], axis=1) * np.arange(1, 21)[:, None]


def test_the_fingerprint_is_the_unit_centroid_and_the_low_quantile_of_the_training_queries() -> None:
    record = fingerprint(training_vectors(), EMBEDDER, 0.4, quantile=0.05)
    centroid = np.array(record["centroid"])
    assert centroid == pytest.approx(
        [math.cos(math.radians(9.5)), math.sin(math.radians(9.5)), 0.0], abs=1e-6
    )
    # Cosines to the centroid: cos(|a - 9.5|) for a = 0..19; their 5% quantile (numpy's linear) lies
    # between the two lowest, cos(9.5) twice (a = 0 and 19), so it is cos(9.5 degrees).
    assert record["threshold"] == pytest.approx(math.cos(math.radians(9.5)), abs=1e-6)
    assert record["queries"] == 20 and record["in_domain_weight"] == 0.4 and record["embedder"] == EMBEDDER
    json.dumps(record)  # it goes into hybrid_rerank.json as it is
    with pytest.raises(ValueError, match="at least two"):
        fingerprint(training_vectors()[:1], EMBEDDER, 0.4)


def guard() -> DomainGuard:
    loaded = DomainGuard.from_metadata({FINGERPRINT_KEY: fingerprint(training_vectors(), EMBEDDER, 0.4)})
    assert loaded is not None
    return loaded


def at(degrees: float, z: float = 0.0) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees)), z]


def test_a_query_as_near_as_the_training_queries_gets_the_tuned_weight_any_other_the_safe_default() -> None:
    near = guard().decide(0.25, at(12.0), EMBEDDER)  # 2.5 degrees from the centroid
    assert (near.weight, near.in_domain, near.note) == (0.4, True, None)
    assert near.similarity == pytest.approx(math.cos(math.radians(2.5)))
    far = guard().decide(0.25, at(40.0), EMBEDDER)  # 30.5 degrees away: farther than every training query
    assert (far.weight, far.in_domain) == (0.25, False)
    assert far.note is not None and "outside the reranker's training domain" in far.note
    assert "rerank weight 0.25 instead of 0.4" in far.note
    off_plane = guard().decide(0.25, at(9.5, z=1.0), EMBEDDER)  # 45 degrees out of the training plane
    assert off_plane.in_domain is False and off_plane.weight == 0.25


def test_what_the_guard_cannot_judge_gets_the_safe_default() -> None:
    other = guard().decide(0.25, at(9.5), "intfloat/e5-small-v2")
    assert (other.weight, other.in_domain) == (0.25, None)
    assert other.note is not None and "not intfloat/e5-small-v2's" in other.note
    assert guard().decide(0.25, None, EMBEDDER) == guard().decide(0.25, None, EMBEDDER)
    assert guard().decide(0.25, None, EMBEDDER).weight == 0.25  # BM25 alone: no query vector
    assert guard().decide(0.25, [1.0, 0.0], EMBEDDER).in_domain is None  # a vector of another size
    for broken in ({}, {FINGERPRINT_KEY: {"centroid": [1.0]}}, {FINGERPRINT_KEY: "x"}):
        assert DomainGuard.from_metadata(broken) is None
    record = fingerprint(training_vectors(), EMBEDDER, 0.4) | {"in_domain_weight": 1.5}
    assert DomainGuard.from_metadata({FINGERPRINT_KEY: record}) is None


def test_the_guard_is_read_from_the_model_folder(tmp_path: Path) -> None:
    record = fingerprint(training_vectors(), EMBEDDER, 0.4)
    (tmp_path / "hybrid_rerank.json").write_text(
        json.dumps({"interpolation_weight": 0.05, FINGERPRINT_KEY: record})
    )
    loaded = load_domain_guard(tmp_path)
    assert loaded is not None and loaded.decide(0.05, at(12.0), EMBEDDER).weight == 0.4
    assert load_domain_guard(tmp_path / "absent") is None and load_domain_guard(None) is None

"""The training-domain guard in the pipeline: a query as near the reranker's training centroid as its training
queries gets the model's tuned in-domain weight, any other query keeps the model's (safe) default weight and
says so in `domain_note`; RERANK_INTERPOLATION, when set, is never second-guessed. The weights' effect on
the order is the hand-computed one of test_pipeline_assembly (weight 0.4 vs 0: the first stage)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.domain import DomainGuard
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from tests.unit.test_pipeline_assembly import (
    FIRST_STAGE,
    ORDER_AT_04,
    RERANK,
    KeywordEmbedder,
    TableReranker,
    indexed,
)

MOON_AXIS = np.array([1.0, 0.0, 0.0, 0.0])  # KeywordEmbedder's vector of "moon"
STAR_AXIS = np.array([0.0, 0.0, 1.0, 0.0])


def pipeline(tmp_path: Path, guard: DomainGuard | None, rerank_weight: float | None = None) -> SearchPipeline:
    backend = indexed(EmbeddedBackend(tmp_path, "domain"))
    options = SearchOptions(rerank_depth=4, top_k=6, fusion="rrf", rrf_k=1, rerank_weight=rerank_weight)
    safe_default = TableReranker(RERANK, tuned_weight=0.0)  # the model ships weight 0 (its safe default)
    return SearchPipeline(backend, cast(Embedder, KeywordEmbedder()), safe_default, options, None, guard)


def guard(centroid: np.ndarray, embedder: str = KeywordEmbedder.model_name) -> DomainGuard:
    return DomainGuard(embedder, centroid, threshold=0.9, in_domain_weight=0.4)


def test_a_query_of_the_training_domain_gets_the_tuned_weight(tmp_path: Path) -> None:
    result = pipeline(tmp_path, guard(MOON_AXIS)).search("moon")
    assert [h.id for h in result.hits] == ORDER_AT_04
    assert result.reranked and result.domain_note is None
    assert result.to_json()["domain_note"] is None


def test_a_query_off_the_training_domain_keeps_the_safe_weight_and_says_so(tmp_path: Path) -> None:
    result = pipeline(tmp_path, guard(STAR_AXIS)).search("moon")
    assert [h.id for h in result.hits] == FIRST_STAGE  # weight 0: the first-stage order
    assert result.reranked
    note = result.domain_note
    assert (
        note is not None and "outside the reranker's training domain" in note and "0.0 instead of 0.4" in note
    )
    assert result.to_json()["domain_note"] == note


def test_without_a_guard_or_with_another_bi_encoders_fingerprint_the_model_weight_stands(
    tmp_path: Path,
) -> None:
    assert [h.id for h in pipeline(tmp_path / "a", None).search("moon").hits] == FIRST_STAGE
    other = pipeline(tmp_path / "b", guard(MOON_AXIS, embedder="another-model")).search("moon")
    assert [h.id for h in other.hits] == FIRST_STAGE
    assert other.domain_note is not None and "another-model" in other.domain_note


def test_a_set_rerank_interpolation_is_never_changed_by_the_guard(tmp_path: Path) -> None:
    result = pipeline(tmp_path, guard(STAR_AXIS), rerank_weight=0.4).search("moon")
    assert [h.id for h in result.hits] == ORDER_AT_04 and result.domain_note is None


@pytest.mark.parametrize("centroid", [MOON_AXIS, STAR_AXIS])
def test_the_factory_reads_the_guard_from_the_model_folder(tmp_path: Path, centroid: np.ndarray) -> None:
    import json

    from hybrid_rerank.connector.factory import domain_guard
    from hybrid_rerank.connector.settings import load_settings

    folder = tmp_path / "model"
    folder.mkdir()
    record = {"embedder": "e", "centroid": centroid.tolist(), "threshold": 0.5, "in_domain_weight": 0.3}
    (folder / "hybrid_rerank.json").write_text(json.dumps({"training_domain": record}))
    built = domain_guard(load_settings(rerank_model=str(folder)))
    assert (
        built is not None and built.in_domain_weight == 0.3 and built.centroid.tolist() == centroid.tolist()
    )
    assert domain_guard(load_settings(rerank_model="none")) is None

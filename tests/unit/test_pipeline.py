"""The search pipeline on the embedded backend with the real MiniLM bi-encoder and a tiny cross-encoder."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import IndexMismatchError, IndexMissingError, InvalidQueryError
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.workers.client import InProcessReranker, Reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome
from hybrid_rerank.workers.scorer import CrossEncoderScorer

DOCS = [
    Document(
        "moon",
        "The moon shows phases because sunlight hits it from changing angles.",
        "Lunar phases",
        {"topic": "astronomy"},
    ),
    Document(
        "eclipse",
        "A lunar eclipse happens when the earth's shadow falls on the moon.",
        "Eclipse",
        {"topic": "astronomy"},
    ),
    Document(
        "steak",
        "Rest a grilled steak for five minutes so the juices settle.",
        "Resting meat",
        {"topic": "cooking"},
    ),
    Document("bread", "Bread dough rises as yeast ferments sugar into gas.", "Baking", {"topic": "cooking"}),
    Document(
        "db",
        "Databases write a log before changing data so a crash loses nothing.",
        "WAL",
        {"topic": "programming"},
    ),
]


class ReverseReranker(Reranker):
    """A reranker with a known answer: scores documents by reverse id order, and says it was tuned with
    `tuned_weight` (as a worker's reply does)."""

    description = "reverse"

    def __init__(self, tuned_weight: float | None = None, drop: int = 0) -> None:
        self.tuned_weight = tuned_weight
        self.drop = drop  # leave out this many scores, as a broken reranker would

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        ordered = sorted((c.id for c in candidates), reverse=True)
        scores = {doc_id: float(len(ordered) - i) for i, doc_id in enumerate(ordered)}
        for doc_id in ordered[: self.drop]:
            del scores[doc_id]
        return RerankOutcome(scores, model="reverse", interpolation_weight=self.tuned_weight)


class KnownReranker(Reranker):
    """A reranker whose scores are given: `scores[id]` for each candidate, and `tuned_weight` in its reply."""

    description = "known"

    def __init__(self, scores: Mapping[str, float], tuned_weight: float | None = None) -> None:
        self.scores = dict(scores)
        self.tuned_weight = tuned_weight

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        return RerankOutcome(
            {c.id: self.scores[c.id] for c in candidates},
            model="known",
            interpolation_weight=self.tuned_weight,
        )


@pytest.fixture
def backend(tmp_path: Path, embedder: Embedder) -> EmbeddedBackend:
    store = EmbeddedBackend(tmp_path, "pipeline")
    report = index_documents(store, embedder, DOCS)
    assert report.bulk.ok and report.bulk.written == len(DOCS)
    return store


def make(
    backend: EmbeddedBackend, embedder: Embedder, reranker: object = None, **options: object
) -> SearchPipeline:
    return SearchPipeline(backend, embedder, reranker, SearchOptions(**options))  # type: ignore[arg-type]


def test_every_hit_carries_every_stage_score(
    backend: EmbeddedBackend, embedder: Embedder, tiny_cross_encoder_dir: Path
) -> None:
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=64)
    result = make(backend, embedder, InProcessReranker(scorer), rerank_depth=3).search("moon phases", k=5)
    assert result.reranked and result.rerank_note is None
    assert set(result.timings_ms) == {
        "embed_query",
        "recall",
        "bm25",
        "knn",
        "fusion",
        "rerank",
        "total",
    }
    head, tail = result.hits[:3], result.hits[3:]
    assert all(h.rerank_score is not None for h in head)
    assert [h.rerank_score for h in head] == sorted((h.rerank_score for h in head), reverse=True)  # type: ignore[type-var]
    assert all(h.rerank_score is None for h in tail)
    assert {h.fused_rank for h in head} == {1, 2, 3}  # the top-M of the first stage were reranked
    moon = next(h for h in result.hits if h.id == "moon")
    assert moon.bm25_score is not None and moon.vector_score is not None and moon.bm25_rank == 1


def test_rerank_reorders_only_the_top_m(backend: EmbeddedBackend, embedder: Embedder) -> None:
    pipeline = make(backend, embedder, ReverseReranker(), rerank_depth=3)
    first_stage = pipeline.search("moon phases", k=5, rerank=False)
    reranked = pipeline.search("moon phases", k=5)
    top3 = sorted((h.id for h in first_stage.hits[:3]), reverse=True)
    assert [h.id for h in reranked.hits[:3]] == top3
    assert [h.id for h in reranked.hits[3:]] == [h.id for h in first_stage.hits[3:]]
    assert not first_stage.reranked and "turned off" in (first_stage.rerank_note or "")


def test_the_rerank_weight_mixes_in_the_first_stage(backend: EmbeddedBackend, embedder: Embedder) -> None:
    first_stage = make(backend, embedder, ReverseReranker(), rerank_depth=3).search(
        "moon phases", k=5, rerank=False
    )
    kept = make(backend, embedder, ReverseReranker(), rerank_depth=3, rerank_weight=0.0).search(
        "moon phases", k=5
    )
    assert kept.reranked and [h.id for h in kept.hits] == [h.id for h in first_stage.hits]
    assert all(
        h.rerank_score is not None for h in kept.hits[:3]
    )  # scored, then outweighed by the first stage
    reversed_ = make(backend, embedder, ReverseReranker(), rerank_depth=3, rerank_weight=1.0).search(
        "moon phases", k=5
    )
    assert [h.id for h in reversed_.hits[:3]] == sorted((h.id for h in first_stage.hits[:3]), reverse=True)


def test_the_models_tuned_weight_from_the_reply_is_used_unless_overridden(
    backend: EmbeddedBackend, embedder: Embedder
) -> None:
    """The weight travels in the reranker's outcome (a worker's reply), so the searching side never reads a
    model folder that may exist only on worker machines; RERANK_INTERPOLATION still wins."""
    first = [h.id for h in make(backend, embedder).search("lunar eclipse", k=5, rerank=False).hits]
    reversed_top3 = sorted(first[:3], reverse=True)
    assert reversed_top3 != first[:3]  # otherwise this test could not tell the weights apart
    tuned_to_first = make(backend, embedder, ReverseReranker(tuned_weight=0.0), rerank_depth=3)
    assert [h.id for h in tuned_to_first.search("lunar eclipse", k=5).hits] == first
    untuned = make(backend, embedder, ReverseReranker(tuned_weight=None), rerank_depth=3)
    assert [h.id for h in untuned.search("lunar eclipse", k=3).hits] == reversed_top3
    overridden = make(backend, embedder, ReverseReranker(tuned_weight=0.0), rerank_depth=3, rerank_weight=1.0)
    assert [h.id for h in overridden.search("lunar eclipse", k=3).hits] == reversed_top3


def zscores(values: Mapping[str, float]) -> dict[str, float]:
    """z = (x - mean) / sd, sd the population standard deviation (divided by n); all 0 when sd is 0."""
    mean = sum(values.values()) / len(values)
    sd = math.sqrt(sum((x - mean) ** 2 for x in values.values()) / len(values))
    return {key: (x - mean) / sd if sd > 0 else 0.0 for key, x in values.items()}


def mixed(rerank: Mapping[str, float], first: Mapping[str, float], weight: float) -> dict[str, float]:
    """final = w * z(rerank) + (1 - w) * z(first stage), both z-scored over the reranked head."""
    z_rerank, z_first = zscores(rerank), zscores(first)
    return {key: weight * z_rerank[key] + (1 - weight) * z_first[key] for key in rerank}


def ordered(final: Mapping[str, float], first_order: Sequence[str]) -> list[str]:
    """Best final score first; ties keep the first-stage order."""
    return sorted(final, key=lambda key: (-final[key], first_order.index(key)))


def smallest_gap(final: Mapping[str, float]) -> float:
    values = sorted(final.values())
    return min(b - a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("how", ["option", "tuned"])
def test_an_intermediate_weight_mixes_the_fused_score_not_the_fused_rank(
    backend: EmbeddedBackend, embedder: Embedder, how: str
) -> None:
    """At w = 0.4 (the shipped model's weight) the head is ordered by 0.4 z(rerank) + 0.6 z(fused score),
    computed here from each hit's fused score and the reranker's known scores. The rerank scores are chosen
    so that mixing the fused *rank* (z of -rank, evenly spaced) orders the head differently."""
    query, depth, weight = "moon phases", 4, 0.4
    first = make(backend, embedder).search(query, k=5, rerank=False).hits
    assert len(first) == 5
    first_order = [h.id for h in first]
    head = first_order[:depth]
    fused = {h.id: h.fused_score for h in first[:depth]}
    by_rank = {doc_id: -float(rank) for rank, doc_id in enumerate(head, start=1)}
    chosen: dict[str, float] | None = None
    for values in itertools.permutations([0.0, 1.0, 2.0, 3.0]):
        rerank = dict(zip(head, values, strict=True))
        final, rank_mixed = mixed(rerank, fused, weight), mixed(rerank, by_rank, weight)
        orders = [ordered(final, first_order), ordered(rank_mixed, first_order), ordered(rerank, first_order)]
        if (
            len({tuple(o) for o in [*orders, head]})
            == 4  # score-mixed, rank-mixed, rerank alone, first stage
            and min(smallest_gap(final), smallest_gap(rank_mixed)) > 0.05  # no near-ties to flip
        ):
            chosen = rerank
            break
    assert chosen is not None, f"no rerank scores tell the fused score from its rank here: {fused}"
    expected = mixed(chosen, fused, weight)
    expected_order = ordered(expected, first_order)

    options: dict[str, object] = {"rerank_depth": depth}
    if how == "option":  # RERANK_INTERPOLATION set; the reply's own weight is overridden
        reranker, options["rerank_weight"] = KnownReranker(chosen, tuned_weight=1.0), weight
    else:  # the weight the model was tuned with, from the reply
        reranker = KnownReranker(chosen, tuned_weight=weight)
    result = make(backend, embedder, reranker, **options).search(query, k=5)

    assert result.reranked
    assert [h.id for h in result.hits] == expected_order + first_order[depth:]
    assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
    for hit in result.hits[:depth]:
        assert hit.fused_score == pytest.approx(fused[hit.id], abs=1e-12)
        assert hit.rerank_score == chosen[hit.id]
        assert hit.score == pytest.approx(expected[hit.id], abs=1e-9)
    tail = result.hits[depth]
    assert tail.rerank_score is None and tail.score == tail.fused_score == first[depth].fused_score
    # The same scores mixed with the fused rank would give another order: this test tells them apart.
    assert [h.id for h in result.hits[:depth]] != ordered(mixed(chosen, by_rank, weight), first_order)


def test_a_reply_missing_scores_degrades_visibly(backend: EmbeddedBackend, embedder: Embedder) -> None:
    result = make(backend, embedder, ReverseReranker(drop=1), rerank_depth=3).search("moon phases", k=3)
    assert not result.reranked and "no score for 1 candidate" in (result.rerank_note or "")
    assert [h.fused_rank for h in result.hits] == [1, 2, 3]


def test_a_failed_reranker_degrades_visibly(
    backend: EmbeddedBackend, embedder: Embedder, tmp_path: Path
) -> None:
    broken = InProcessReranker(CrossEncoderScorer(str(tmp_path / "missing-model")))
    result = make(backend, embedder, broken).search("moon phases", k=3)
    assert not result.reranked
    assert "could not load rerank model" in (result.rerank_note or "")
    assert [h.rerank_score for h in result.hits] == [None, None, None]
    assert [h.fused_rank for h in result.hits] == [1, 2, 3]


def test_no_reranker_configured_is_said(backend: EmbeddedBackend, embedder: Embedder) -> None:
    result = make(backend, embedder, None).search("bread")
    assert not result.reranked and "RERANK_MODEL" in (result.rerank_note or "")


def test_paraphrase_is_found_by_the_vector_leg(backend: EmbeddedBackend, embedder: Embedder) -> None:
    result = make(backend, embedder).search("how do storage engines survive power loss", k=2, rerank=False)
    assert result.hits[0].id == "db"
    assert result.hits[0].vector_rank == 1


def test_filters_hold_for_every_hit(backend: EmbeddedBackend, embedder: Embedder) -> None:
    result = make(backend, embedder, ReverseReranker()).search("moon", k=5, filters={"topic": "cooking"})
    assert {h.id for h in result.hits} == {"steak", "bread"}


@pytest.mark.parametrize("fusion", ["rrf", "minmax", "zscore"])
def test_each_fusion_method_runs(backend: EmbeddedBackend, embedder: Embedder, fusion: str) -> None:
    result = make(backend, embedder, fusion=fusion).search("rest the steak", k=1)
    assert result.hits[0].id == "steak"


def test_bad_queries_and_missing_or_mismatched_index(
    backend: EmbeddedBackend, embedder: Embedder, tmp_path: Path
) -> None:
    with pytest.raises(InvalidQueryError):
        make(backend, embedder).search("   ")
    with pytest.raises(IndexMissingError):
        make(EmbeddedBackend(tmp_path, "absent"), embedder).search("moon")
    other = EmbeddedBackend(tmp_path, "other")
    other.create_index("some-other-model", 384)
    with pytest.raises(IndexMismatchError, match="not comparable"):
        make(other, embedder).search("moon")

"""Paging with reranking on, on every backend: pages 1..n of k hits are the first n*k hits of one search, in
order, with no overlap, and every page reranks the same head. The query vector is fixed and the reranker is
deterministic, so no model is needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.pipeline import Hit, SearchOptions, SearchPipeline
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome
from tests.contract.conftest import BackendFactory

HybridMode = Literal["client", "server"]
MODEL = "test-model"
QUERY = "moon"
N_DOCS = 12
FILLER = [
    "orbit",
    "tide",
    "crater",
    "phase",
    "eclipse",
    "earth",
    "night",
    "light",
    "dust",
    "rock",
    "sky",
    "ice",
]
# "moon" 1 to 4 times beside a word of its own, so BM25 ranks by repetition; the vectors turn away from the
# query by 7 degrees per document in another order, so the two legs disagree and fusion decides.
DOCS = [
    Document(f"p{i:02d}", " ".join(["moon"] * (1 + i % 4) + [FILLER[i]]), f"Doc {i}") for i in range(N_DOCS)
]
ANGLES = [math.radians(7 * ((5 * i) % N_DOCS)) for i in range(N_DOCS)]
VECTORS = np.array([[math.cos(a), math.sin(a), 0, 0] for a in ANGLES], dtype=np.float32)
QUERY_VECTOR = np.array([1, 0, 0, 0], dtype=np.float32)


class FixedQueryEmbedder:
    """Stands in for the bi-encoder: every query embeds to QUERY_VECTOR."""

    model_name = MODEL
    dimension = 4

    def embed_query(self, query: str) -> np.ndarray:
        return QUERY_VECTOR.copy()


class ReverseIdReranker(Reranker):
    """Deterministic scores (higher for a later id), and a record of every head it was sent."""

    description = "reverse id"

    def __init__(self) -> None:
        self.heads: list[list[str]] = []

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        self.heads.append([c.id for c in candidates])
        return RerankOutcome({c.id: float(int(c.id[1:])) for c in candidates}, model="reverse-id")


@pytest.fixture
def backend(make_backend: BackendFactory, index_name: str) -> Backend:
    store = make_backend(index_name)
    store.create_index(MODEL, 4)
    report = store.bulk_index(DOCS, VECTORS)
    assert report.ok and report.written == N_DOCS
    store.commit()
    return store


def pipeline(
    backend: Backend, reranker: Reranker, mode: HybridMode, fusion: FusionMethod, depth: int, weight: float
) -> SearchPipeline:
    options = SearchOptions(
        recall_depth=N_DOCS, rerank_depth=depth, rerank_weight=weight, hybrid_mode=mode, fusion=fusion
    )
    return SearchPipeline(backend, cast(Embedder, FixedQueryEmbedder()), reranker, options)


def fingerprint(hit: Hit) -> tuple[str, int, float, float, float | None]:
    return (hit.id, hit.rank, hit.score, hit.fused_score, hit.rerank_score)


@pytest.mark.parametrize(("k", "pages", "depth"), [(2, 5, 5), (3, 4, 7)])
@pytest.mark.parametrize("weight", [1.0, 0.4])
def test_pages_with_rerank_are_slices_of_one_search(
    backend: Backend, k: int, pages: int, depth: int, weight: float
) -> None:
    modes: list[tuple[HybridMode, FusionMethod]] = [("client", "zscore")]
    if isinstance(backend, OpenSearchBackend):  # server-side fusion: OpenSearch only; z-score from 3.x
        modes.append(("server", "minmax"))
        if backend.major_version() >= 3:
            modes.append(("server", "zscore"))
    for mode, fusion in modes:
        reranker = ReverseIdReranker()
        search = pipeline(backend, reranker, mode, fusion, depth, weight)
        first_stage = [h.id for h in search.search(QUERY, k=N_DOCS, rerank=False).hits]
        assert sorted(first_stage) == sorted(d.id for d in DOCS), mode
        whole = search.search(QUERY, k=pages * k)
        assert whole.reranked, (mode, whole.rerank_note)
        assert [h.id for h in whole.hits[:depth]] != first_stage[:depth], mode  # the rerank reorders the head
        assert [h.id for h in whole.hits[depth:]] == first_stage[depth : pages * k], mode  # the rest stays

        reranker.heads.clear()
        paged = [search.search(QUERY, k=k, offset=page * k) for page in range(pages)]
        assert all(p.reranked and len(p.hits) == k for p in paged), mode
        hits = [h for p in paged for h in p.hits]
        assert len({h.id for h in hits}) == pages * k, mode  # no page repeats another's hit
        assert [fingerprint(h) for h in hits] == [fingerprint(h) for h in whole.hits], mode
        # every page sent the reranker the same head, the first-stage top `depth`, whatever its offset
        assert reranker.heads == [first_stage[:depth]] * pages, mode
        past_the_end = search.search(QUERY, k=k, offset=N_DOCS)
        assert past_the_end.hits == [], mode

"""Searching without texts, on every backend: the recall legs (and OpenSearch's server-side hybrid query) give
ids and scores alone, ranked and filtered as with texts, and a search fetches the texts in one request for the
reranked head and the returned page only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Backend, LegHit, bare
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from tests.contract.conftest import BackendFactory
from tests.contract.test_backend_contract import DOCS, VECTORS
from tests.contract.test_passages_contract import built, unit
from tests.unit.test_pipeline_assembly import KeywordEmbedder, TableReranker

BY_ID = {doc.id: doc for doc in DOCS}
MOON = np.array([1, 0, 0, 0], dtype=np.float32)  # KeywordEmbedder's vector of "moon"


@pytest.fixture
def backend(make_backend: BackendFactory, index_name: str) -> Backend:
    store = make_backend(index_name)
    store.create_index(KeywordEmbedder.model_name, KeywordEmbedder.dimension)
    assert store.bulk_index(DOCS, VECTORS).ok
    store.commit()
    return store


def ranked(hits: Sequence[LegHit]) -> list[tuple[str, float]]:
    return [(h.document.id, h.score) for h in hits]


def test_legs_without_texts_rank_and_filter_as_with_them_and_carry_ids_alone(backend: Backend) -> None:
    for filters in (None, {"topic": "astronomy"}, {"year": 2021}):
        full = backend.recall("moon", MOON, 10, filters)
        lean = backend.recall("moon", MOON, 10, filters, texts=False)
        assert ranked(lean.bm25) == ranked(full.bm25) and ranked(lean.knn) == ranked(full.knn)
        assert all(h.document == bare(h.document.id) for h in [*lean.bm25, *lean.knn])
        assert all(h.document == BY_ID[h.document.id] for h in [*full.bm25, *full.knn])
        assert ranked(backend.bm25("moon", 10, filters, texts=False)) == ranked(full.bm25)
        assert ranked(backend.knn(MOON, 10, filters, texts=False)) == ranked(full.knn)
    lean = backend.recall("moon", MOON, 10, {"topic": "astronomy"}, texts=False)
    assert {h.document.id for h in lean.bm25} == {"d1", "d4"}  # the filter holds on both legs
    assert {h.document.id for h in lean.knn} == {"d1", "d4", "d5"}


def test_documents_brings_what_a_hit_shows_in_one_call(backend: Backend) -> None:
    assert backend.documents(["d5", "d1", "nope"]) == {"d1": BY_ID["d1"], "d5": BY_ID["d5"]}
    assert backend.documents(["d5"])["d5"].metadata == {"topic": ["astronomy", "chinese"], "year": 2019}
    assert backend.documents([]) == {}


def test_a_passage_index_names_the_matched_passage_without_texts(
    make_backend: BackendFactory, index_name: str
) -> None:
    store, spans = built(make_backend, index_name)
    full, lean = store.knn(unit((0, 1.0)), 10), store.knn(unit((0, 1.0)), 10, texts=False)
    assert [(h.document.id, h.passage) for h in lean] == [(h.document.id, h.passage) for h in full]
    assert lean[0].passage == spans[2] and lean[0].document == bare("long")


def test_server_side_hybrid_without_texts_ranks_as_with_them(backend: Backend) -> None:
    if backend.name != "opensearch":
        pytest.skip("server-side hybrid search is OpenSearch's (neural-search)")
    options: dict[str, Any] = {"fusion": "minmax", "bm25_weight": 0.5, "rrf_k": 60}
    full = backend.hybrid("moon", MOON, 10, {"topic": "astronomy"}, **options)
    lean = backend.hybrid("moon", MOON, 10, {"topic": "astronomy"}, texts=False, **options)
    assert [(h.document.id, h.score, h.bm25_score, h.vector_score) for h in lean] == [
        (h.document.id, h.score, h.bm25_score, h.vector_score) for h in full
    ]
    assert {h.document.id for h in lean} == {"d1", "d4", "d5"}
    assert all(h.document == bare(h.document.id) for h in lean)


class FetchRecorder:
    """The backend, with the ids of each `documents` call recorded."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.fetched: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def documents(self, ids: Sequence[str]) -> dict[str, Document]:
        self.fetched.append(list(ids))
        return self.inner.documents(ids)


@pytest.mark.parametrize("mode", ["client", "server"])
def test_a_search_fetches_texts_once_for_the_head_and_the_page_alone(backend: Backend, mode: str) -> None:
    if mode == "server" and backend.name != "opensearch":
        pytest.skip("server-side hybrid search is OpenSearch's (neural-search)")
    recorder = FetchRecorder(backend)
    reranker = TableReranker({"d1": 0.1, "d2": 0.2, "d3": 0.3, "d4": 0.4, "d5": 0.5})
    options = SearchOptions(recall_depth=5, rerank_depth=2, top_k=1, fusion="minmax", hybrid_mode=mode)
    legs = SearchPipeline(cast(Backend, recorder), cast(Embedder, KeywordEmbedder()), reranker, options)
    with_texts = legs.search("moon", offset=3)  # the default: the legs bring the texts, nothing is fetched
    assert recorder.fetched == [] and with_texts.hits[0].document == BY_ID[with_texts.hits[0].id]
    options = replace(options, recall_texts="fetch")
    pipeline = SearchPipeline(cast(Backend, recorder), cast(Embedder, KeywordEmbedder()), reranker, options)
    result = pipeline.search("moon", offset=3)
    assert [h.id for h in result.hits] == [h.id for h in with_texts.hits]
    pool = [hit.id for hit in pipeline.search("moon", k=5, rerank=False).first_stage]
    assert len(pool) == 5
    head, page = pool[:2], pool[3:4]
    assert recorder.fetched[0] == head + page  # one call; pool[2] and pool[4] never fetched
    assert [c.id for c in reranker.requests[1][1]] == head
    assert reranker.requests[1] == reranker.requests[0]  # the same candidates, texts and all, either way
    assert [c.text for c in reranker.requests[1][1]] == [BY_ID[i].full_text for i in head]
    assert [h.id for h in result.hits] == page and result.hits[0].document == BY_ID[page[0]]
    assert [h.document for h in result.first_stage] == [BY_ID[i] for i in page]
    assert recorder.fetched[1] == pool  # not reranked: the page alone
    reranked_page = pipeline.search("moon", k=2)
    assert recorder.fetched[2] == head and reranked_page.hits[0].document == BY_ID[reranked_page.hits[0].id]
    many = pipeline.search_many(["moon"], k=1, filters={"topic": "astronomy"})
    assert len(recorder.fetched[3]) == 2 and set(recorder.fetched[3]) <= {"d1", "d4", "d5"}  # the head
    assert many[0].hits[0].document == BY_ID[many[0].hits[0].id] and many[0].hits[0].id in recorder.fetched[3]

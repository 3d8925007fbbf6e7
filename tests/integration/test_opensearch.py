"""The OpenSearch backend against a real node started by scripts/opensearch: bad input, re-indexing behind
the alias, both hybrid modes and pagination. On 2.19 always; on 3.x too with
HYBRID_RERANK_OPENSEARCH_LINES=both (the conformance suite runs on both lines by default)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import pytest
from opensearchpy import OpenSearch

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import (
    BackendUnavailableError,
    ConfigurationError,
    IndexMismatchError,
    IndexMissingError,
)
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome
from tests.integration import engine_checks as checks
from tests.integration.engine_checks import unit

pytestmark = pytest.mark.integration
HybridMode = Literal["client", "server"]
# each OpenSearch line and the session fixture that serves its node
LINES = {"2.19": "opensearch_url", "3.x": "opensearch3_url"}
TESTED_LINES = list(LINES) if os.environ.get("HYBRID_RERANK_OPENSEARCH_LINES") == "both" else ["2.19"]

DOCS = [
    Document(
        "moon",
        "The moon shows phases because sunlight hits it from changing angles.",
        "Lunar phases",
        {"topic": "astronomy", "year": 2020},
    ),
    Document(
        "eclipse",
        "A lunar eclipse happens when the earth's shadow falls on the moon.",
        "Eclipse",
        {"topic": "astronomy", "year": 2021},
    ),
    Document(
        "tides",
        "The moon's gravity pulls the oceans and makes the tides.",
        "Tides",
        {"topic": "astronomy", "year": 2019},
    ),
    Document(
        "steak",
        "Rest a grilled steak for five minutes so the juices settle.",
        "Resting meat",
        {"topic": "cooking", "year": 2021},
    ),
    Document(
        "bread",
        "Bread dough rises as yeast ferments sugar into gas.",
        "Baking",
        {"topic": "cooking", "year": 2018},
    ),
    Document(
        "db",
        "Databases write a log before changing data so a crash loses nothing.",
        "WAL",
        {"topic": "programming", "year": 2022},
    ),
    Document("zh", "月球绕着地球运行，月相随之变化。", "月球", {"topic": "astronomy", "year": 2020}),
]


@pytest.fixture(params=TESTED_LINES)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of a node of each tested OpenSearch line."""
    return str(request.getfixturevalue(LINES[request.param]))


@pytest.fixture
def client(url: str) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[url], timeout=60)
    yield client
    client.close()


@pytest.fixture
def name(client: OpenSearch) -> Iterator[str]:
    index = f"it-{uuid.uuid4().hex[:12]}"
    yield index
    client.indices.delete(index=f"{index}-v*", ignore_unavailable=True)


@pytest.fixture
def backend(client: OpenSearch, name: str, url: str) -> OpenSearchBackend:
    return OpenSearchBackend(client, name, url=url)


@pytest.fixture
def indexed(backend: OpenSearchBackend, embedder: Embedder) -> OpenSearchBackend:
    report = index_documents(backend, embedder, DOCS)
    assert report.bulk.ok and report.bulk.written == len(DOCS)
    return backend


def test_wrong_vector_dimension_fails_that_document_only(backend: OpenSearchBackend) -> None:
    checks.wrong_dimension_fails_that_document_only(backend)


def test_field_type_conflict_fails_that_document_only(backend: OpenSearchBackend) -> None:
    backend.create_index("m", 4)
    docs = [
        Document("a", "first", metadata={"year": 2020}),
        Document("b", "second", metadata={"year": "soon"}),
    ]
    report = backend.bulk_index(docs, np.stack([unit(4), unit(4, 1)]))
    assert report.written == 1
    assert report.failures[0].doc_id == "b" and "mapper_parsing_exception" in report.failures[0].reason


def test_oversized_documents_are_refused_per_document(backend: OpenSearchBackend) -> None:
    checks.oversized_documents_are_refused_per_document(backend)


def test_missing_index_is_a_clear_error(backend: OpenSearchBackend) -> None:
    assert backend.index_info() is None
    with pytest.raises(IndexMissingError, match="hybrid-rerank index"):
        backend.recall("moon", unit(4), 5)
    with pytest.raises(IndexMissingError):
        backend.bm25("moon", 5)


def test_unreachable_node_is_a_clear_error() -> None:
    dead = OpenSearchBackend(
        OpenSearch(hosts=["http://127.0.0.1:9"], timeout=2, max_retries=1), "x", url="http://127.0.0.1:9"
    )
    with pytest.raises(BackendUnavailableError, match="scripts/opensearch start"):
        dead.index_info()


def test_lucene_syntax_in_a_query_is_plain_text(indexed: OpenSearchBackend) -> None:
    hits = indexed.bm25('moon AND (phases OR "tides" ~2 ^3 [a TO b] \\ / * ? : !', 10)
    assert hits and hits[0].document.id in {"moon", "tides", "eclipse"}


def test_chinese_text_is_analysed_with_bigrams(indexed: OpenSearchBackend) -> None:
    assert [h.document.id for h in indexed.bm25("月相", 5)] == ["zh"]


def test_reindex_swaps_the_alias_only_at_commit(indexed: OpenSearchBackend) -> None:
    checks.reindex_swaps_the_alias_only_at_commit(indexed, len(DOCS), "moon")


def test_an_index_built_before_content_hashes_takes_them(
    backend: OpenSearchBackend, client: OpenSearch, name: str
) -> None:
    body = mappings.index_body(dimension=4, embedding_model="m")
    del body["mappings"]["properties"]["content_hash"]  # the mapping before the field existed
    client.indices.create(index=f"{name}-v1", body=body)
    client.indices.put_alias(index=f"{name}-v1", name=name)
    backend.create_index("m", 4)
    hashed = Document("a", "text").hashed()
    assert backend.bulk_index([hashed], np.stack([unit(4)])).ok  # strict mapping: refused without the field
    backend.commit()
    assert backend.content_hashes(["a"]) == {"a": hashed.content_hash}


def test_another_model_without_recreate_is_refused(indexed: OpenSearchBackend) -> None:
    with pytest.raises(IndexMismatchError, match="dimensional"):
        indexed.create_index("all-MiniLM-L6-v2", 768)


@pytest.mark.parametrize(
    ("mode", "fusion"),
    [("client", "zscore"), ("client", "rrf"), ("server", "minmax"), ("server", "rrf"), ("server", "zscore")],
)
def test_hybrid_search_both_ways(
    indexed: OpenSearchBackend, embedder: Embedder, mode: str, fusion: str
) -> None:
    if (mode, fusion) == ("server", "zscore") and indexed.major_version() < 3:
        with pytest.raises(ConfigurationError, match="z-score needs 3"):
            indexed.hybrid(
                "moon", embedder.embed_query("moon"), 5, None, fusion="zscore", bm25_weight=0.5, rrf_k=60
            )
        return
    options = SearchOptions(recall_depth=10, hybrid_mode=mode, fusion=fusion)  # type: ignore[arg-type]
    pipeline = SearchPipeline(indexed, embedder, None, options)
    result = pipeline.search("why does the moon change its shape", k=3, rerank=False)
    assert result.hits[0].id == "moon"
    top = result.hits[0]
    assert top.bm25_score is not None and top.bm25_score > 0
    assert top.vector_score is not None and 0 < top.vector_score <= 1.0
    filtered = pipeline.search("moon", k=10, filters={"topic": "cooking"}, rerank=False)
    assert {h.id for h in filtered.hits} == {"steak", "bread"}


def test_hybrid_modes_agree_on_scores_per_leg(indexed: OpenSearchBackend, embedder: Embedder) -> None:
    """Each hit carries the score of every leg that found it, equal to the engine's own leg (client mode reads
    the legs, server mode the fusion's explanation), and no score where the leg did not find it."""
    query = "moon tides"
    bm25 = {h.document.id: h.score for h in indexed.bm25(query, 10)}
    knn = {h.document.id: h.score for h in indexed.knn(embedder.embed_query(query), 10)}
    everything = {d.id for d in DOCS}
    assert bm25.keys() == {"tides", "moon", "eclipse"} and knn.keys() == everything
    modes: tuple[HybridMode, ...] = ("client", "server")
    for mode in modes:
        options = SearchOptions(recall_depth=10, fusion="minmax", hybrid_mode=mode)
        hits = SearchPipeline(indexed, embedder, None, options).search(query, k=10, rerank=False).hits
        assert {h.id for h in hits} == everything, mode
        with_bm25 = {h.id: h.bm25_score for h in hits if h.bm25_score is not None}
        assert with_bm25 == pytest.approx(bm25, rel=1e-4), mode  # the BM25 matches, and only them
        assert {h.id: h.vector_score for h in hits} == pytest.approx(knn, abs=1e-4), mode


class KnownReranker(Reranker):
    """Deterministic scores, given per document; records the head of every call."""

    description = "known"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.heads: list[list[str]] = []

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        self.heads.append([c.id for c in candidates])
        return RerankOutcome({c.id: self.scores[c.id] for c in candidates}, model="known")


@pytest.mark.parametrize(("mode", "fusion"), [("client", "zscore"), ("server", "minmax")])
def test_pages_never_repeat(
    indexed: OpenSearchBackend, embedder: Embedder, mode: HybridMode, fusion: FusionMethod
) -> None:
    """With reranking on and a head (3) that spans pages of 2: the pages are slices of one search."""
    reranker = KnownReranker({d.id: float(i) for i, d in enumerate(DOCS)})  # later in DOCS scores higher
    options = SearchOptions(
        recall_depth=10, rerank_depth=3, rerank_weight=1.0, hybrid_mode=mode, fusion=fusion
    )
    pipeline = SearchPipeline(indexed, embedder, reranker, options)
    first_stage = [h.id for h in pipeline.search("moon", k=6, rerank=False).hits]
    whole = pipeline.search("moon", k=6)
    assert whole.reranked and [h.id for h in whole.hits[:3]] != first_stage[:3]  # the rerank reorders
    reranker.heads.clear()
    pages = [pipeline.search("moon", k=2, offset=offset) for offset in (0, 2, 4)]
    assert all(page.reranked for page in pages)
    hits = [h for page in pages for h in page.hits]
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids)) == 6
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5, 6]
    assert ids == [h.id for h in whole.hits]
    assert [(h.score, h.rerank_score) for h in hits] == [(h.score, h.rerank_score) for h in whole.hits]
    assert reranker.heads == [first_stage[:3]] * 3  # every page reranked the same head

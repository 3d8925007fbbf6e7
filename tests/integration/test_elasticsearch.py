"""The Elasticsearch backend against a real 8.x node started by scripts/elasticsearch: bad input, analysis
without analysis-common, re-indexing behind the alias, and errors. Hand-made vectors: no model needed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend, make_client
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import (
    BackendUnavailableError,
    ConfigurationError,
    IndexMismatchError,
    IndexMissingError,
)
from tests.integration import engine_checks as checks
from tests.integration.engine_checks import unit

pytestmark = pytest.mark.integration

DOCS = [
    Document("moon", "The moon orbits the earth and shows phases.", "Lunar phases", {"topic": "astronomy"}),
    Document("tides", "Gravity pulls the oceans into tides.", "Tides", {"topic": "astronomy"}),
    Document("steak", "Rest a grilled steak so the juices settle.", "Resting meat", {"topic": "cooking"}),
    Document("zh", "月球绕着地球运行，月相随之变化。", "月球", {"topic": "astronomy"}),
]


@pytest.fixture
def client(elasticsearch_url: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(hosts=[elasticsearch_url], request_timeout=60)
    yield client
    client.close()


@pytest.fixture
def name(client: Elasticsearch) -> Iterator[str]:
    index = f"it-{uuid.uuid4().hex[:12]}"
    yield index
    client.indices.delete(index=f"{index}-v*", ignore_unavailable=True)


@pytest.fixture
def backend(client: Elasticsearch, name: str, elasticsearch_url: str) -> ElasticsearchBackend:
    return ElasticsearchBackend(client, name, url=elasticsearch_url)


@pytest.fixture
def indexed(backend: ElasticsearchBackend) -> ElasticsearchBackend:
    backend.create_index("m", 4)
    report = backend.bulk_index(DOCS, np.stack([unit(4, i) for i in range(len(DOCS))]))
    assert report.ok and report.written == len(DOCS)
    backend.commit()
    return backend


def ids(backend: ElasticsearchBackend, query: str) -> list[str]:
    return [h.document.id for h in backend.bm25(query, 10)]


def test_english_is_stemmed_without_analysis_common(indexed: ElasticsearchBackend) -> None:
    assert ids(indexed, "orbiting") == ["moon"]  # "orbits" and "orbiting" share the stem "orbit"
    assert ids(indexed, "PHASE") == ["moon"]
    assert ids(indexed, "the and of") == []


def test_chinese_is_searched_by_bigrams(indexed: ElasticsearchBackend) -> None:
    assert ids(indexed, "月相") == ["zh"]
    assert ids(indexed, "地球运行") == ["zh"]


def test_documents_come_back_without_the_analysed_copies(
    indexed: ElasticsearchBackend, client: Elasticsearch, name: str
) -> None:
    assert indexed.get(["moon"])["moon"] == DOCS[0]
    raw = client.get(index=name, id="moon")["_source"]
    assert "text_terms" not in raw and raw["text"] == DOCS[0].text


def test_wrong_vector_dimension_fails_that_document_only(backend: ElasticsearchBackend) -> None:
    checks.wrong_dimension_fails_that_document_only(backend)


def test_zero_vector_and_type_conflict_fail_per_document(backend: ElasticsearchBackend) -> None:
    backend.create_index("m", 4)
    docs = [
        Document("a", "first", metadata={"year": 2020}),
        Document("b", "second", metadata={"year": "soon"}),
        Document("zero", "no direction"),
    ]
    report = backend.bulk_index(docs, np.stack([unit(4), unit(4, 1), np.zeros(4, dtype=np.float32)]))
    assert report.written == 1
    reasons = {f.doc_id: f.reason for f in report.failures}
    assert "document_parsing_exception" in reasons["b"]
    assert "zero magnitude" in reasons["zero"]


def test_oversized_documents_are_refused_per_document(backend: ElasticsearchBackend) -> None:
    checks.oversized_documents_are_refused_per_document(backend)


def test_missing_index_is_a_clear_error(backend: ElasticsearchBackend) -> None:
    assert backend.index_info() is None
    with pytest.raises(IndexMissingError, match="hybrid-rerank index"):
        backend.recall("moon", unit(4), 5)
    with pytest.raises(IndexMissingError):
        backend.knn(unit(4), 5)


def test_unreachable_node_is_a_clear_error() -> None:
    dead = ElasticsearchBackend(make_client("http://127.0.0.1:9", timeout=2), "x", url="http://127.0.0.1:9")
    with pytest.raises(BackendUnavailableError, match="scripts/elasticsearch start"):
        dead.index_info()


def test_reindex_swaps_the_alias_only_at_commit(indexed: ElasticsearchBackend) -> None:
    checks.reindex_swaps_the_alias_only_at_commit(indexed, len(DOCS), "moon")
    with pytest.raises(IndexMismatchError, match="dimensional"):
        indexed.create_index("other-model", 4)


def test_a_plain_index_under_the_name_is_not_taken_over(client: Elasticsearch, name: str) -> None:
    client.indices.create(index=f"{name}-v0-plain")
    try:
        store = ElasticsearchBackend(client, f"{name}-v0-plain", url="")
        with pytest.raises(ConfigurationError, match="plain index"):
            store.index_info()
    finally:
        client.indices.delete(index=f"{name}-v0-plain")


def test_server_side_hybrid_says_to_fuse_client_side(indexed: ElasticsearchBackend) -> None:
    with pytest.raises(ConfigurationError, match="HYBRID_MODE=client"):
        indexed.hybrid("moon", unit(4), 5, None, fusion="rrf", bm25_weight=0.5, rrf_k=60)

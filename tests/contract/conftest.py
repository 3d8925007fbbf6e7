"""The Backend conformance suite runs against every backend: each test gets a fresh, uniquely named index,
removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.base import Backend

BackendFactory = Callable[[str], Backend]


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("opensearch", marks=pytest.mark.integration),
        pytest.param("elasticsearch", marks=pytest.mark.integration),
    ]
)
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens a backend on an index named for this test; a second call with the same name reopens it."""
    if request.param == "embedded":
        from hybrid_rerank.connector.backends.embedded import EmbeddedBackend

        yield lambda name: EmbeddedBackend(tmp_path, name)
        return
    if request.param == "elasticsearch":
        yield from _elasticsearch(request)
        return

    from opensearchpy import OpenSearch

    from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend

    url = request.getfixturevalue("opensearch_url")
    client = OpenSearch(hosts=[url], timeout=60)
    names: list[str] = []

    def open_backend(name: str) -> Backend:
        names.append(name)
        return OpenSearchBackend(client, name, url=url)

    yield open_backend
    for name in set(names):
        client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)
    client.close()


@pytest.fixture
def index_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _elasticsearch(request: pytest.FixtureRequest) -> Iterator[BackendFactory]:
    from elasticsearch import Elasticsearch

    from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend

    url = request.getfixturevalue("elasticsearch_url")
    client = Elasticsearch(hosts=[url], request_timeout=60)
    names: list[str] = []

    def open_backend(name: str) -> Backend:
        names.append(name)
        return ElasticsearchBackend(client, name, url=url)

    yield open_backend
    for name in set(names):
        client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)
    client.close()

"""The Backend conformance suite runs against every backend: embedded, OpenSearch 2.19, OpenSearch 3.x and
Elasticsearch 8.x. Each test gets a fresh, uniquely named index, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hybrid_rerank.connector.backends.base import Backend

BackendFactory = Callable[[str], Backend]
ENGINES = ("opensearch", "opensearch3", "elasticsearch")  # each served by the session fixture `<name>_url`


@pytest.fixture(params=["embedded", *(pytest.param(e, marks=pytest.mark.integration) for e in ENGINES)])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens a backend on an index named for this test; a second call with the same name reopens it."""
    if request.param == "embedded":
        from hybrid_rerank.connector.backends.embedded import EmbeddedBackend

        yield lambda name: EmbeddedBackend(tmp_path, name)
        return
    url = request.getfixturevalue(f"{request.param}_url")
    client, open_one = _engine(request.param, url)
    names: list[str] = []

    def open_backend(name: str) -> Backend:
        names.append(name)
        return open_one(name)

    yield open_backend
    for name in set(names):
        client.indices.delete(index=f"{name}-v*", ignore_unavailable=True)
    client.close()


def _engine(engine: str, url: str) -> tuple[Any, BackendFactory]:
    """A client of the node and a factory of backends through it."""
    if engine == "elasticsearch":
        from elasticsearch import Elasticsearch

        from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend

        es = Elasticsearch(hosts=[url], request_timeout=60)
        return es, lambda name: ElasticsearchBackend(es, name, url=url)

    from opensearchpy import OpenSearch

    from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend

    client = OpenSearch(hosts=[url], timeout=60)
    return client, lambda name: OpenSearchBackend(client, name, url=url)


@pytest.fixture
def index_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"

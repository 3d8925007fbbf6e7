"""The Elasticsearch 8.x backend (the official `elasticsearch` client, 8.x): what every engine does comes from
`engine.EngineBackend`; here are the client calls, the mapping and the query dialect of
`elasticsearch_bodies` (BM25 over fields our own tokenizer analysed, the `knn` search option). Fusion is
client-side: no server-side hybrid here. See docs/elasticsearch.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar, Unpack

from elastic_transport import TlsError
from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    Elasticsearch,
    NotFoundError,
    TransportError,
)
from elasticsearch import helpers as bulk_helpers

from hybrid_rerank.connector.backends import elasticsearch_bodies as bodies
from hybrid_rerank.connector.backends.base import Filters, Passage, Vector
from hybrid_rerank.connector.backends.engine import EngineBackend, EngineOptions
from hybrid_rerank.connector.backends.engine_bodies import (
    EngineFailure,
    EngineNames,
    engine_hosts,
    error_reason,
    tls_detail,
    with_passages,
)
from hybrid_rerank.connector.documents import Document

NAMES = EngineNames(
    engine="Elasticsearch",
    url_var="ELASTICSEARCH_URL",
    start_command="scripts/elasticsearch start",
    credential_vars=("ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD", "ELASTICSEARCH_API_KEY"),
    ca_var="ELASTICSEARCH_CA_CERTS",
)


def make_client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    api_key: str | None = None,
    ca_certs: str | None = None,
    verify_certs: bool = True,
    timeout: float = 30.0,
) -> Elasticsearch:
    """A client that retries timeouts and the statuses a busy node answers with; basic authentication or an
    API key when given, and `ca_certs` for the CA that signed the node's certificate."""
    options: dict[str, Any] = {}
    if username:
        options["basic_auth"] = (username, password or "")
    if api_key:
        options["api_key"] = api_key
    if ca_certs:
        options["ca_certs"] = ca_certs
    if not verify_certs:
        options["verify_certs"] = False
    return Elasticsearch(
        hosts=engine_hosts(url),
        request_timeout=timeout,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=(429, 502, 503, 504),
        **options,
    )


def classify(exc: Exception) -> EngineFailure:
    """What an Elasticsearch client exception means for the user (subclasses before their bases)."""
    if isinstance(exc, TlsError):
        return EngineFailure("tls", detail=tls_detail(str(exc)))
    if isinstance(exc, AuthenticationException):
        return EngineFailure("auth", 401)
    if isinstance(exc, AuthorizationException):
        return EngineFailure("forbidden", 403, _reason(exc))
    if isinstance(exc, NotFoundError):
        return EngineFailure("missing", 404)
    if isinstance(exc, ApiError):
        return EngineFailure("refused", exc.meta.status, _reason(exc))
    # ConnectionError, ConnectionTimeout: retried by the client already
    return EngineFailure("unreachable", detail=type(exc).__name__)


def _reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    return error_reason(error) if isinstance(error, dict) else str(exc.message)


class ElasticsearchBackend(EngineBackend):
    name = "elasticsearch"
    names = NAMES
    client_errors = (ApiError, TransportError)
    helpers: ClassVar[ModuleType] = bulk_helpers

    def __init__(self, client: Elasticsearch, index_name: str, **options: Unpack[EngineOptions]) -> None:
        super().__init__(client, index_name, **options)

    def _classify(self, exc: Exception) -> EngineFailure:
        return classify(exc)

    def _meta_problem(self, meta: dict[str, Any]) -> str | None:
        return bodies.tokenizer_mismatch(meta)

    def _index_body(self, embedding_model: str, dimension: int, passages: str) -> dict[str, Any]:
        body = bodies.index_body(
            dimension=dimension,
            embedding_model=embedding_model,
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
        )
        return with_passages(body, passages)

    def _create(self, index: str, body: dict[str, Any]) -> None:
        self.client.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])

    def _update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self.client.indices.update_aliases(actions=actions)

    def _mget(self, index: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = self.client.mget(index=index, ids=ids, source=fields)["docs"]
        return docs

    def _msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        responses: list[dict[str, Any]] = self.client.msearch(searches=searches)["responses"]
        return responses

    def _search_raw(self, body: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.client.search(index=self.alias, body=body).body
        return response

    def _bulk_actions(
        self,
        index: str,
        documents: Sequence[Document],
        vectors: Sequence[Vector],
        passages: Sequence[Sequence[Passage]] | None,
    ) -> Iterator[dict[str, Any]]:
        return bodies.bulk_actions(index, documents, vectors, passages)

    def _bm25_body(self, query: str, size: int, filters: Filters | None, texts: bool) -> dict[str, Any]:
        return bodies.bm25_body(query, size, filters, self.title_boost, texts)

    def _knn_body(
        self, vector: Vector, size: int, filters: Filters | None, passages: bool, texts: bool
    ) -> dict[str, Any]:
        return bodies.knn_body(vector, size, filters, passages, texts)

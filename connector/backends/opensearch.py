"""The OpenSearch backend (opensearch-py): what every engine does comes from `engine.EngineBackend`; here
are the client calls, the mapping (`mappings/index.json`, analysed by the engine) and server-side `hybrid`
search through a search pipeline. Request bodies come from `opensearch_bodies` (pure)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar, Unpack

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc
from opensearchpy import helpers as bulk_helpers

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends import opensearch_bodies as bodies
from hybrid_rerank.connector.backends.base import Filters, HybridHit, Passage, Vector
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
from hybrid_rerank.connector.fusion import FusionMethod

NAMES = EngineNames(
    engine="OpenSearch",
    url_var="OPENSEARCH_URL",
    start_command="scripts/opensearch start",
    credential_vars=("OPENSEARCH_USERNAME", "OPENSEARCH_PASSWORD"),
    ca_var="OPENSEARCH_CA_CERTS",
)


def make_client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    timeout: float = 30.0,
) -> OpenSearch:
    """A client that retries timeouts and the statuses a busy node answers with; `ca_certs` names the CA
    file that signed the node's certificate (the system's CAs otherwise)."""
    auth = (username, password or "") if username else None
    tls: dict[str, Any] = {"ca_certs": ca_certs} if ca_certs else {}
    return OpenSearch(
        hosts=engine_hosts(url),
        http_auth=auth,
        verify_certs=verify_certs,
        timeout=timeout,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=(429, 502, 503, 504),
        **tls,
    )


def classify(exc: Exception) -> EngineFailure:
    """What an opensearch-py exception means for the user (subclasses before their bases)."""
    if isinstance(exc, os_exc.SSLError):
        return EngineFailure("tls", detail=tls_detail(str(exc)))
    if isinstance(exc, os_exc.ConnectionError):  # also ConnectionTimeout: retried by the client already
        return EngineFailure("unreachable", detail=type(exc).__name__)
    if isinstance(exc, os_exc.AuthenticationException):
        return EngineFailure("auth", 401)
    if isinstance(exc, os_exc.AuthorizationException):
        return EngineFailure("forbidden", 403, transport_reason(exc))
    if isinstance(exc, os_exc.NotFoundError):
        return EngineFailure("missing", 404)
    if isinstance(exc, os_exc.TransportError):
        return EngineFailure("refused", exc.status_code, transport_reason(exc))
    return EngineFailure("refused", None, type(exc).__name__)


def transport_reason(exc: os_exc.TransportError) -> str:
    """The node's `type: reason (cause)` for a refused request, else the client's text."""
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    return error_reason(error) if isinstance(error, dict) else str(exc.error)


class OpenSearchBackend(EngineBackend):
    name = "opensearch"
    names = NAMES
    client_errors = (os_exc.TransportError,)
    helpers: ClassVar[ModuleType] = bulk_helpers

    def __init__(
        self,
        client: OpenSearch,
        index_name: str,
        *,
        analyzer: mappings.Analyzer = "english_cjk",
        **options: Unpack[EngineOptions],
    ) -> None:
        super().__init__(client, index_name, **options)
        self.analyzer = analyzer
        self._pipelines: set[str] = set()
        self._major: int | None = None

    # --- the client calls ---------------------------------------------------------------------------------

    def _classify(self, exc: Exception) -> EngineFailure:
        return classify(exc)

    def _index_body(self, embedding_model: str, dimension: int, passages: str) -> dict[str, Any]:
        body = mappings.index_body(
            dimension=dimension,
            embedding_model=embedding_model,
            analyzer=self.analyzer,
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
        )
        return with_passages(body, passages)

    def _create(self, index: str, body: dict[str, Any]) -> None:
        self.client.indices.create(index=index, body=body)

    def _update_aliases(self, actions: list[dict[str, Any]]) -> None:
        self.client.indices.update_aliases(body={"actions": actions})

    def _mget(self, index: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = self.client.mget(index=index, body={"ids": ids}, _source=fields)["docs"]
        return docs

    def _msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        responses: list[dict[str, Any]] = self.client.msearch(body=searches)["responses"]
        return responses

    def _search_raw(self, body: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.client.search(index=self.alias, body=body)
        return response

    def _bulk_actions(
        self,
        index: str,
        documents: Sequence[Document],
        vectors: Sequence[Vector],
        passages: Sequence[Sequence[Passage]] | None,
    ) -> Iterator[dict[str, Any]]:
        return bodies.bulk_actions(index, documents, vectors, passages=passages)

    def _bm25_body(self, query: str, size: int, filters: Filters | None, texts: bool) -> dict[str, Any]:
        return bodies.search_body(bodies.match_query(query, filters, self.title_boost), size, texts)

    def _knn_body(
        self, vector: Vector, size: int, filters: Filters | None, passages: bool, texts: bool
    ) -> dict[str, Any]:
        return bodies.search_body(bodies.knn_query(vector, size, filters, passages), size, texts)

    # --- server-side hybrid search -------------------------------------------------------------------------

    def major_version(self) -> int:
        """The node's major version, asked once: 3.x bodies use what that line adds."""
        if self._major is None:
            info = self._call(lambda: self.client.info(), "read the node's version")
            self._major = int(str(info["version"]["number"]).split(".")[0])
        return self._major

    def hybrid(
        self,
        query: str,
        vector: Vector,
        size: int,
        filters: Filters | None,
        *,
        fusion: FusionMethod,
        bm25_weight: float,
        rrf_k: int,
        texts: bool = True,
    ) -> list[HybridHit]:
        """Server-side `hybrid` query fused by a search pipeline, best first, each hit with its legs' raw
        scores: on 3.x from the legs run beside it in one `_msearch`, on 2.x from the pipeline's score
        explanation (`explain`, much slower)."""
        if self.major_version() >= 3:
            _, pipeline = bodies.search_pipeline(fusion, bm25_weight, rrf_k, z_score=True)
            passages = self._live_passages()
            searches = bodies.hybrid_msearch(
                query, vector, size, filters, self.alias, pipeline, self.title_boost, passages, texts
            )
            responses = self._checked(self._call(lambda: self._msearch(searches), "run the hybrid query"))
            return [
                HybridHit(hit.document, hit.score, bm25, cosine)
                for hit, bm25, cosine in bodies.hybrid_hits(responses)
            ]
        name = self._ensure_pipeline(fusion, bm25_weight, rrf_k)
        body = bodies.hybrid_body(
            query, vector, size, filters, self.title_boost, self._live_passages(), texts
        )
        response = self._call(
            lambda: self.client.search(
                index=self.alias, body=body, params={"search_pipeline": name, "explain": "true"}
            ),
            "run the hybrid query",
        )
        results = []
        for hit in response["hits"]["hits"]:
            bm25, cosine = bodies.leg_scores_from_explanation(hit.get("_explanation") or {})
            results.append(HybridHit(bodies.document_from_hit(hit), float(hit["_score"]), bm25, cosine))
        return results

    def _ensure_pipeline(self, fusion: FusionMethod, bm25_weight: float, rrf_k: int) -> str:
        """The named pipeline 2.x needs (with the score explanation), created once."""
        name, body = bodies.search_pipeline(fusion, bm25_weight, rrf_k, z_score=False)
        body["response_processors"] = [{"hybrid_score_explanation": {}}]
        if name not in self._pipelines:
            self._call(
                lambda: self.client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body=body),
                f"create search pipeline {name} (needs the neural-search plugin)",
            )
            self._pipelines.add(name)
        return name

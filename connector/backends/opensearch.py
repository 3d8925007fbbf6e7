"""The OpenSearch backend (opensearch-py): versioned indexes behind an alias, bulk upserts with per-document
failure reports, BM25 + k-NN recall in one `_msearch`, and server-side `hybrid` search through a pipeline.

Request bodies come from `opensearch_bodies` (pure); this module only does I/O, and maps the client's
exceptions to the connector's in one place (`_call`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_exc

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends import opensearch_bodies as bodies
from hybrid_rerank.connector.backends.base import (
    Backend,
    BulkReport,
    Filters,
    HybridHit,
    IndexInfo,
    LegHit,
    Recall,
    Vector,
    check_index_matches,
    split_sendable,
)
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConnectorError,
    DocumentFailure,
    IndexMismatchError,
    IndexMissingError,
)
from hybrid_rerank.connector.fusion import FusionMethod

T = TypeVar("T")
VERSIONED = re.compile(r"^(?P<alias>.+)-v(?P<n>\d+)$")


def make_client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    verify_certs: bool = True,
    timeout: float = 30.0,
) -> OpenSearch:
    """A client that retries timeouts and the statuses a busy node answers with."""
    auth = (username, password or "") if username else None
    return OpenSearch(
        hosts=[url],
        http_auth=auth,
        verify_certs=verify_certs,
        timeout=timeout,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=(429, 502, 503, 504),
    )


class OpenSearchBackend(Backend):
    name = "opensearch"

    def __init__(
        self,
        client: OpenSearch,
        index_name: str,
        *,
        url: str = "",
        analyzer: mappings.Analyzer = "english_cjk",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 128,
        title_boost: float = 1.0,
        chunk_docs: int = 500,
        chunk_bytes: int = 10_000_000,
        max_document_bytes: int = 5_000_000,
        bulk_retries: int = 3,
    ) -> None:
        if not index_name or index_name != index_name.lower() or VERSIONED.match(index_name):
            raise ConfigurationError(
                f"INDEX_NAME {index_name!r} is not usable on OpenSearch: use lower case, and no '-v<number>' "
                "suffix (that names the versioned indexes behind the alias)"
            )
        self.client = client
        self.alias = index_name
        self.url = url
        self.analyzer = analyzer
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.title_boost = title_boost
        self.chunk_docs = chunk_docs
        self.chunk_bytes = chunk_bytes
        self.max_document_bytes = max_document_bytes
        self.bulk_retries = bulk_retries
        self._write_index: str | None = (
            None  # where bulk writes go; differs from the live one while re-indexing
        )
        self._pipelines: set[str] = set()

    # --- errors: the one place the client's exceptions become ours -------------------------------------

    def _call(self, action: Callable[[], T], what: str) -> T:
        try:
            return action()
        except os_exc.ConnectionError as exc:  # also ConnectionTimeout: retried by the client already
            raise BackendUnavailableError(
                f"cannot reach OpenSearch at {self.url or 'the configured URL'} while trying to {what} "
                f"({type(exc).__name__}); check OPENSEARCH_URL, or start a local node with "
                "`scripts/opensearch start`"
            ) from exc
        except os_exc.NotFoundError as exc:
            raise IndexMissingError(
                f"index {self.alias!r} does not exist on OpenSearch (while trying to {what}); "
                "run `hybrid-rerank index PATH` first"
            ) from exc
        except os_exc.TransportError as exc:
            raise ConnectorError(f"OpenSearch refused to {what}: {exc.status_code} {_reason(exc)}") from exc

    # --- index lifecycle -----------------------------------------------------------------------------------

    def _live_index(self) -> str | None:
        """The concrete index the alias points at, or None when there is no alias yet."""
        if not self._call(lambda: self.client.indices.exists_alias(name=self.alias), "look up the alias"):
            if self._call(lambda: self.client.indices.exists(index=self.alias), "look up the index"):
                raise ConfigurationError(
                    f"{self.alias!r} is a plain index, not an alias managed by hybrid-rerank; pick another "
                    "INDEX_NAME or move that index away"
                )
            return None
        found = self._call(lambda: self.client.indices.get_alias(name=self.alias), "read the alias")
        return str(sorted(found)[-1])

    def _info_of(self, concrete: str) -> IndexInfo:
        mapping = self._call(lambda: self.client.indices.get_mapping(index=concrete), "read the mapping")
        meta = mapping[concrete]["mappings"].get("_meta") or {}
        if "embedding_model" not in meta or "dimension" not in meta:
            raise IndexMismatchError(f"index {concrete!r} was not created by hybrid-rerank (no _meta)")
        count = self._call(lambda: self.client.count(index=concrete), "count documents")["count"]
        return IndexInfo(self.alias, str(meta["embedding_model"]), int(meta["dimension"]), int(count))

    def index_info(self) -> IndexInfo | None:
        live = self._live_index()
        return None if live is None else self._info_of(live)

    def create_index(self, embedding_model: str, dimension: int, *, recreate: bool = False) -> IndexInfo:
        live = self._live_index()
        if live is not None and not recreate:
            info = self._info_of(live)
            check_index_matches(info, embedding_model, dimension)
            self._write_index = live
            return info
        existing = self._call(lambda: self.client.indices.get(index=f"{self.alias}-v*"), "list versions")
        versions = [
            int(m["n"]) for name in existing if (m := VERSIONED.match(name)) and m["alias"] == self.alias
        ]
        target = f"{self.alias}-v{max(versions, default=0) + 1}"
        body = mappings.index_body(
            dimension=dimension,
            embedding_model=embedding_model,
            analyzer=self.analyzer,
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
        )
        self._call(lambda: self.client.indices.create(index=target, body=body), f"create index {target}")
        if live is None:  # nothing to protect: make it live at once
            self._swap_alias(None, target)
        self._write_index = target
        return IndexInfo(self.alias, embedding_model, dimension, 0)

    def commit(self) -> None:
        """Make every write searchable; after a re-index, point the alias at the new index atomically and
        drop the old one, so searches never see a half-built index."""
        target = self._write_target()
        if target is None:
            return
        self._call(lambda: self.client.indices.refresh(index=target), "refresh")
        live = self._live_index()
        if live != target:
            self._swap_alias(live, target)
            if live is not None:
                self._call(lambda: self.client.indices.delete(index=live), f"delete the old index {live}")

    def _swap_alias(self, old: str | None, new: str) -> None:
        actions: list[dict[str, Any]] = [{"add": {"index": new, "alias": self.alias}}]
        if old is not None:
            actions.insert(0, {"remove": {"index": old, "alias": self.alias}})
        self._call(lambda: self.client.indices.update_aliases(body={"actions": actions}), "update the alias")

    def _write_target(self) -> str | None:
        """Where writes go: the index being built by a re-index, else the live one."""
        return self._write_index or self._live_index()

    def _target(self) -> str:
        target = self._write_target()
        if target is None:
            raise IndexMissingError(
                f"index {self.alias!r} does not exist; run `hybrid-rerank index PATH` first"
            )
        return target

    # --- writes --------------------------------------------------------------------------------------------

    def bulk_index(self, documents: Sequence[Document], vectors: Vector) -> BulkReport:
        target = self._target()
        # A wrong dimension is left for the node to refuse, per document; NaN cannot even be sent as JSON.
        accepted, failures = split_sendable(documents, vectors)
        actions = []
        for action in bodies.bulk_actions(target, [d for d, _ in accepted], [v for _, v in accepted]):
            if bodies.action_size_bound(action) <= self.max_document_bytes:
                actions.append(action)
                continue
            size = bodies.action_size(action)
            if size > self.max_document_bytes:
                failures.append(
                    DocumentFailure(
                        action["_id"], f"document is {size:,} bytes, over {self.max_document_bytes:,}"
                    )
                )
            else:
                actions.append(action)
        written = 0

        def run() -> None:
            nonlocal written
            for ok, item in helpers.streaming_bulk(
                self.client,
                actions,
                chunk_size=self.chunk_docs,
                max_chunk_bytes=self.chunk_bytes,
                max_retries=self.bulk_retries,  # 429s are retried with exponential backoff
                initial_backoff=1,
                max_backoff=30,
                raise_on_error=False,
                raise_on_exception=False,
            ):
                if ok:
                    written += 1
                else:
                    failures.append(bodies.failure_from_item(item))

        self._call(run, "write documents")
        return BulkReport(written=written, failures=failures)

    def delete(self, ids: Sequence[str]) -> int:
        target = self._target()
        actions = [{"_op_type": "delete", "_index": target, "_id": doc_id} for doc_id in ids]
        deleted = 0

        def run() -> None:
            nonlocal deleted
            for ok, item in helpers.streaming_bulk(
                self.client, actions, raise_on_error=False, raise_on_exception=False, refresh=True
            ):
                deleted += bool(ok and item["delete"].get("result") == "deleted")

        self._call(run, "delete documents")
        return deleted

    # --- reads ---------------------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        if not ids:
            return {}
        target = self._target()
        response = self._call(
            lambda: self.client.mget(index=target, body={"ids": list(ids)}, _source=bodies.SOURCE_FIELDS),
            "fetch documents",
        )
        return {d["_id"]: bodies.document_from_hit(d) for d in response["docs"] if d.get("found")}

    def recall(self, query: str, vector: Vector, size: int, filters: Filters | None = None) -> Recall:
        """Both legs in one `_msearch` round trip."""
        body = bodies.recall_msearch(query, vector, size, filters, self.alias, self.title_boost)
        response = self._call(lambda: self.client.msearch(body=body), "search")
        legs = response["responses"]
        for leg in legs:
            error = leg.get("error")
            if isinstance(error, dict) and error.get("type") == "index_not_found_exception":
                raise IndexMissingError(
                    f"index {self.alias!r} does not exist; run `hybrid-rerank index PATH` first"
                )
            if error:
                raise ConnectorError(f"OpenSearch search failed: {error}")
        return Recall(
            bm25=bodies.parse_leg(legs[0], vector_leg=False),
            knn=bodies.parse_leg(legs[1], vector_leg=True),
            leg_ms={"bm25": float(legs[0].get("took", 0)), "knn": float(legs[1].get("took", 0))},
        )

    def bm25(self, query: str, size: int, filters: Filters | None = None) -> list[LegHit]:
        body = bodies.search_body(bodies.match_query(query, filters, self.title_boost), size)
        return bodies.parse_leg(self._search(body), vector_leg=False)

    def knn(self, vector: Vector, size: int, filters: Filters | None = None) -> list[LegHit]:
        body = bodies.search_body(bodies.knn_query(vector, size, filters), size)
        return bodies.parse_leg(self._search(body), vector_leg=True)

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
    ) -> list[HybridHit]:
        """Server-side `hybrid` query through a search pipeline this connector creates, best first; the raw
        leg scores come from the pipeline's score explanation."""
        pipeline = self._ensure_pipeline(fusion, bm25_weight, rrf_k)
        body = bodies.hybrid_body(query, vector, size, filters, self.title_boost)
        response = self._call(
            lambda: self.client.search(
                index=self.alias, body=body, params={"search_pipeline": pipeline, "explain": "true"}
            ),
            "run the hybrid query",
        )
        results = []
        for hit in response["hits"]["hits"]:
            bm25, cosine = bodies.leg_scores_from_explanation(hit.get("_explanation") or {})
            results.append(HybridHit(bodies.document_from_hit(hit), float(hit["_score"]), bm25, cosine))
        return results

    def _ensure_pipeline(self, fusion: FusionMethod, bm25_weight: float, rrf_k: int) -> str:
        if fusion == "rrf":
            name, body = f"hybrid-rerank-rrf-{rrf_k}", mappings.rrf_pipeline_body(rrf_k)
        elif fusion == "minmax":
            weights = (round(bm25_weight, 4), round(1.0 - bm25_weight, 4))
            name = f"hybrid-rerank-minmax-{weights[0]:g}"
            body = mappings.normalization_pipeline_body("min_max", weights)
        else:
            raise ConfigurationError(
                f"server-side hybrid search has no {fusion!r} normalization on this OpenSearch version; set "
                "FUSION=minmax or FUSION=rrf, or HYBRID_MODE=client"
            )
        body["response_processors"] = [{"hybrid_score_explanation": {}}]
        if name not in self._pipelines:
            self._call(
                lambda: self.client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body=body),
                f"create search pipeline {name} (needs the neural-search plugin)",
            )
            self._pipelines.add(name)
        return name

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self._call(
            lambda: self.client.search(index=self.alias, body=body), "search"
        )
        return response


def _reason(exc: os_exc.TransportError) -> str:
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('reason', '')}"
    return str(exc.error)

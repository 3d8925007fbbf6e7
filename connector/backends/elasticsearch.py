"""The Elasticsearch 8.x backend (the official `elasticsearch` client, 8.x): versioned indexes behind an
alias, bulk upserts with per-document failure reports, BM25 + k-NN recall in one `_msearch`, fused by the
pipeline (client-side; no server-side hybrid here).

Request bodies come from `elasticsearch_bodies` (pure); this module only does I/O, and maps the client's
exceptions to the connector's in one place (`_call`). See docs/elasticsearch.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError, helpers

from hybrid_rerank.connector.backends import elasticsearch_bodies as bodies
from hybrid_rerank.connector.backends.base import (
    Backend,
    BulkReport,
    Filters,
    IndexInfo,
    LegHit,
    Recall,
    Vector,
    check_index_matches,
    split_sendable,
)
from hybrid_rerank.connector.backends.opensearch_bodies import (
    SOURCE_FIELDS,
    document_from_hit,
    failure_from_item,
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

T = TypeVar("T")
VERSIONED = re.compile(r"^(?P<alias>.+)-v(?P<n>\d+)$")


def make_client(url: str, *, timeout: float = 30.0) -> Elasticsearch:
    """A client that retries timeouts and the statuses a busy node answers with."""
    return Elasticsearch(
        hosts=[url],
        request_timeout=timeout,
        max_retries=3,
        retry_on_timeout=True,
        retry_on_status=(429, 502, 503, 504),
    )


class ElasticsearchBackend(Backend):
    name = "elasticsearch"

    def __init__(
        self,
        client: Elasticsearch,
        index_name: str,
        *,
        url: str = "",
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
                f"INDEX_NAME {index_name!r} is not usable on Elasticsearch: use lower case, and no "
                "'-v<number>' suffix (that names the versioned indexes behind the alias)"
            )
        self.client = client
        self.alias = index_name
        self.url = url
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

    # --- errors: the one place the client's exceptions become ours -------------------------------------

    def _call(self, action: Callable[[], T], what: str) -> T:
        try:
            return action()
        except NotFoundError as exc:
            raise IndexMissingError(
                f"index {self.alias!r} does not exist on Elasticsearch (while trying to {what}); "
                "run `hybrid-rerank index PATH` first"
            ) from exc
        except ApiError as exc:
            raise ConnectorError(
                f"Elasticsearch refused to {what}: {exc.meta.status} {_reason(exc)}"
            ) from exc
        except TransportError as exc:  # ConnectionError, ConnectionTimeout: retried by the client already
            raise BackendUnavailableError(
                f"cannot reach Elasticsearch at {self.url or 'the configured URL'} while trying to {what} "
                f"({type(exc).__name__}); check ELASTICSEARCH_URL, or start a local node with "
                "`scripts/elasticsearch start`"
            ) from exc

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
        return str(sorted(found.body)[-1])

    def _info_of(self, concrete: str) -> IndexInfo:
        mapping = self._call(lambda: self.client.indices.get_mapping(index=concrete), "read the mapping")
        meta = mapping.body[concrete]["mappings"].get("_meta") or {}
        if "embedding_model" not in meta or "dimension" not in meta:
            raise IndexMismatchError(f"index {concrete!r} was not created by hybrid-rerank (no _meta)")
        stale = bodies.tokenizer_mismatch(meta)
        if stale:
            raise IndexMismatchError(f"index {concrete!r}: {stale}")
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
            int(m["n"]) for name in existing.body if (m := VERSIONED.match(name)) and m["alias"] == self.alias
        ]
        target = f"{self.alias}-v{max(versions, default=0) + 1}"
        body = bodies.index_body(
            dimension=dimension,
            embedding_model=embedding_model,
            m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
        )
        self._call(
            lambda: self.client.indices.create(
                index=target, settings=body["settings"], mappings=body["mappings"]
            ),
            f"create index {target}",
        )
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
        self._call(lambda: self.client.indices.update_aliases(actions=actions), "update the alias")

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
                    failures.append(failure_from_item(item))

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
            lambda: self.client.mget(index=target, ids=list(ids), source=SOURCE_FIELDS), "fetch documents"
        )
        return {d["_id"]: document_from_hit(d) for d in response["docs"] if d.get("found")}

    def recall(self, query: str, vector: Vector, size: int, filters: Filters | None = None) -> Recall:
        """Both legs in one `_msearch` round trip."""
        searches = bodies.recall_msearch(query, vector, size, filters, self.alias, self.title_boost)
        response = self._call(lambda: self.client.msearch(searches=searches), "search")
        legs = response["responses"]
        for leg in legs:
            error = leg.get("error")
            if isinstance(error, dict) and error.get("type") == "index_not_found_exception":
                raise IndexMissingError(
                    f"index {self.alias!r} does not exist; run `hybrid-rerank index PATH` first"
                )
            if error:
                raise ConnectorError(f"Elasticsearch search failed: {error}")
        return Recall(
            bm25=bodies.parse_leg(legs[0], vector_leg=False),
            knn=bodies.parse_leg(legs[1], vector_leg=True),
            leg_ms={"bm25": float(legs[0].get("took", 0)), "knn": float(legs[1].get("took", 0))},
        )

    def bm25(self, query: str, size: int, filters: Filters | None = None) -> list[LegHit]:
        body = bodies.bm25_body(query, size, filters, self.title_boost)
        return bodies.parse_leg(self._search(body), vector_leg=False)

    def knn(self, vector: Vector, size: int, filters: Filters | None = None) -> list[LegHit]:
        return bodies.parse_leg(self._search(bodies.knn_body(vector, size, filters)), vector_leg=True)

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._call(lambda: self.client.search(index=self.alias, body=body), "search")
        result: dict[str, Any] = response.body
        return result


def _reason(exc: ApiError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    if isinstance(error, dict):
        reason = f"{error.get('type', '')}: {error.get('reason', '')}"
        caused = error.get("caused_by")
        if isinstance(caused, dict) and caused.get("reason"):
            reason += f" ({caused.get('type', '')}: {caused['reason']})"
        return reason
    return str(exc.message)

"""The base of the OpenSearch and Elasticsearch backends: what both engines do the same way, written once.

Versioned indexes behind an alias with an atomic swap at commit, bulk writes through the client's
`streaming_bulk` with every refused document reported, the BM25 and k-NN legs in one `_msearch`, and the
client's exceptions mapped to the connector's in one place (`_call`). An engine module supplies only what
differs: the client calls whose signatures differ, the mapping, the query dialect and its exception types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, ClassVar, TypedDict, TypeVar

from hybrid_rerank.connector.backends import engine_bodies as shared
from hybrid_rerank.connector.backends.base import (
    Backend,
    BulkReport,
    Filters,
    IndexInfo,
    LegHit,
    Passage,
    Recall,
    Vector,
    check_index_matches,
    split_sendable,
)
from hybrid_rerank.connector.backends.engine_bodies import EngineFailure, EngineNames
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


class EngineOptions(TypedDict, total=False):
    """The keyword arguments every engine backend takes (see `EngineBackend.__init__`)."""

    url: str
    hnsw_m: int
    hnsw_ef_construction: int
    title_boost: float
    chunk_docs: int
    chunk_bytes: int
    max_document_bytes: int
    bulk_retries: int


class EngineBackend(Backend, ABC):
    """A Lucene engine reached through its official Python client (`client`, typed by the subclass)."""

    names: ClassVar[EngineNames]
    client_errors: ClassVar[tuple[type[Exception], ...]]  # what the client raises, for `_call` to map
    helpers: ClassVar[ModuleType]  # the client's bulk helpers: `streaming_bulk` and `scan`, alike in both

    def __init__(
        self,
        client: Any,
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
        problem = shared.index_name_problem(index_name)
        if problem:
            raise ConfigurationError(
                f"INDEX_NAME {index_name!r} is not usable on {self.names.engine}: {problem}"
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
        self._write_index: str | None = None  # where bulk writes go; not the live one while re-indexing
        self._passages: bool | None = None  # whether the live index holds passages (read once)

    # --- what each engine supplies --------------------------------------------------------------------------

    @abstractmethod
    def _classify(self, exc: Exception) -> EngineFailure:
        """What one of `client_errors` means for the user."""

    @abstractmethod
    def _index_body(self, embedding_model: str, dimension: int, passages: str) -> dict[str, Any]:
        """The create-index body; `passages` (a layout label, "" none) adds the nested passage vectors."""

    @abstractmethod
    def _create(self, index: str, body: dict[str, Any]) -> None: ...

    @abstractmethod
    def _update_aliases(self, actions: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def _mget(self, index: str, ids: list[str], fields: list[str]) -> list[dict[str, Any]]:
        """The `docs` of an `_mget` of `ids`, with only `fields` of each source."""

    @abstractmethod
    def _msearch(self, searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The `responses` of an `_msearch`."""

    @abstractmethod
    def _search_raw(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response of a `_search` on the alias."""

    @abstractmethod
    def _bulk_actions(
        self,
        index: str,
        documents: Sequence[Document],
        vectors: Sequence[Vector],
        passages: Sequence[Sequence[Passage]] | None,
    ) -> Iterator[dict[str, Any]]: ...

    @abstractmethod
    def _bm25_body(self, query: str, size: int, filters: Filters | None, texts: bool) -> dict[str, Any]:
        """The BM25 leg; `texts` False: ids and scores only (no `_source`)."""

    @abstractmethod
    def _knn_body(
        self, vector: Vector, size: int, filters: Filters | None, passages: bool, texts: bool
    ) -> dict[str, Any]:
        """The k-NN leg; `passages`: over the nested passage vectors, with the best passage's offsets."""

    def _meta_problem(self, meta: dict[str, Any]) -> str | None:
        """Why an index built by hybrid-rerank can still not be searched by this connector (None: it can)."""
        return None

    # --- errors: the one place the client's exceptions become ours -------------------------------------

    def _call(self, action: Callable[[], T], what: str) -> T:
        try:
            return action()
        except self.client_errors as exc:
            failure = self._classify(exc)
            message = shared.failure_message(failure, self.names, url=self.url, alias=self.alias, what=what)
            if failure.kind in ("unreachable", "tls"):
                raise BackendUnavailableError(message) from exc
            if failure.kind == "missing":
                raise IndexMissingError(message) from exc
            raise ConnectorError(message) from exc

    def _missing(self) -> IndexMissingError:
        return IndexMissingError(f"index {self.alias!r} does not exist; run `hybrid-rerank index PATH` first")

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
        problem = self._meta_problem(meta)
        if problem:
            raise IndexMismatchError(f"index {concrete!r}: {problem}")
        count = self._call(lambda: self.client.count(index=concrete), "count documents")["count"]
        layout = str(meta.get("passages") or "")
        return IndexInfo(self.alias, str(meta["embedding_model"]), int(meta["dimension"]), int(count), layout)

    def index_info(self) -> IndexInfo | None:
        live = self._live_index()
        return None if live is None else self._info_of(live)

    def create_index(
        self, embedding_model: str, dimension: int, *, recreate: bool = False, passages: str = ""
    ) -> IndexInfo:
        live = self._live_index()
        if live is not None and not recreate:
            info = self._info_of(live)
            check_index_matches(info, embedding_model, dimension, passages)
            self._add_missing_fields(live)
            self._write_index = live
            return info
        existing = self._call(lambda: self.client.indices.get(index=f"{self.alias}-v*"), "list versions")
        target = shared.next_version(self.alias, existing)
        body = self._index_body(embedding_model, dimension, passages)
        self._call(lambda: self._create(target, body), f"create index {target}")
        if live is None:  # nothing to protect: make it live at once
            self._swap_alias(None, target)
            self._passages = bool(passages)
        self._write_index = target
        return IndexInfo(self.alias, embedding_model, dimension, 0, passages)

    def _live_passages(self) -> bool:
        """Whether the live index holds passages (its `_meta`, read once): the k-NN leg's shape."""
        if self._passages is None:
            info = self.index_info()
            if info is None:
                raise self._missing()
            self._passages = bool(info.passages)
        return self._passages

    def _add_missing_fields(self, concrete: str) -> None:
        """Give an index built before a field existed (`content_hash`) that field, so writes to it keep
        working under `dynamic: strict`; adding a field to a mapping is allowed on a live index."""
        mapping = self._call(lambda: self.client.indices.get_mapping(index=concrete), "read the mapping")
        known = mapping[concrete]["mappings"].get("properties") or {}
        missing = {name: field for name, field in shared.LATER_FIELDS.items() if name not in known}
        if missing:
            body = {"properties": missing}
            self._call(
                lambda: self.client.indices.put_mapping(index=concrete, body=body),
                "add fields to the mapping",
            )

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
            self._passages = None  # the new live index may hold passages where the old did not
            if live is not None:
                self._call(lambda: self.client.indices.delete(index=live), f"delete the old index {live}")

    def _swap_alias(self, old: str | None, new: str) -> None:
        actions = shared.alias_actions(self.alias, old, new)
        self._call(lambda: self._update_aliases(actions), "update the alias")

    def _write_target(self) -> str | None:
        """Where writes go: the index being built by a re-index, else the live one."""
        return self._write_index or self._live_index()

    def _target(self) -> str:
        target = self._write_target()
        if target is None:
            raise self._missing()
        return target

    # --- writes --------------------------------------------------------------------------------------------

    def bulk_index(
        self,
        documents: Sequence[Document],
        vectors: Vector,
        passages: Sequence[Sequence[Passage]] | None = None,
    ) -> BulkReport:
        target = self._target()
        # A wrong dimension is left for the node to refuse, per document; NaN cannot even be sent as JSON.
        accepted, failures = split_sendable(documents, vectors, passages=passages)
        docs = [item.document for item in accepted]
        rows = [item.vectors if passages is not None else item.vectors[0] for item in accepted]
        spans = None if passages is None else [item.passages or [] for item in accepted]
        actions = []
        for action in self._bulk_actions(target, docs, rows, spans):
            if shared.action_size_bound(action) <= self.max_document_bytes:
                actions.append(action)
                continue
            size = shared.action_size(action)
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
            for ok, item in self.helpers.streaming_bulk(
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
                    failures.append(shared.failure_from_item(item))

        self._call(run, "write documents")
        return BulkReport(written=written, failures=failures)

    def delete(self, ids: Sequence[str]) -> int:
        actions = shared.delete_actions(self._target(), ids)
        deleted = 0

        def run() -> None:
            nonlocal deleted
            for ok, item in self.helpers.streaming_bulk(
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
        docs = self._call(lambda: self._mget(target, list(ids), shared.STORED_FIELDS), "fetch documents")
        return {d["_id"]: shared.document_from_hit(d) for d in docs if d.get("found")}

    def documents(self, ids: Sequence[str]) -> dict[str, Document]:
        """One `_mget` on the alias: the live index, without looking up which one it points at."""
        if not ids:
            return {}
        docs = self._call(lambda: self._mget(self.alias, list(ids), shared.SOURCE_FIELDS), "fetch documents")
        return {d["_id"]: shared.document_from_hit(d) for d in docs if d.get("found")}

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """The stored hashes alone (`_mget` of one small field: no texts, no vectors)."""
        target = self._write_target() if ids else None
        if target is None:
            return {}
        fields = [shared.CONTENT_HASH_FIELD]
        docs = self._call(lambda: self._mget(target, list(ids), fields), "read content hashes")
        return {d["_id"]: shared.content_hash_of(d) for d in docs if d.get("found")}

    def all_ids(self) -> Iterator[str]:
        """Every id, streamed by the client's `scan` (a scroll in index order: no sort by id, no source)."""
        target = self._target()
        query = {"query": {"match_all": {}}, "_source": False}
        hits = iter(self.helpers.scan(self.client, query=query, index=target, size=1000, scroll="2m"))
        while (hit := self._call(lambda: next(hits, None), "list document ids")) is not None:
            yield str(hit["_id"])

    def recall(
        self, query: str, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> Recall:
        """Both legs in one `_msearch` round trip."""
        knn = self._knn_body(vector, size, filters, self._live_passages(), texts)
        searches = shared.msearch(self.alias, self._bm25_body(query, size, filters, texts), knn)
        legs = self._checked(self._call(lambda: self._msearch(searches), "search"))
        return Recall(
            bm25=shared.parse_leg(legs[0], vector_leg=False),
            knn=shared.parse_leg(legs[1], vector_leg=True),
            leg_ms={"bm25": float(legs[0].get("took", 0)), "knn": float(legs[1].get("took", 0))},
        )

    def _checked(self, responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The responses of an `_msearch`, or the error one of them holds."""
        for response in responses:
            error = response.get("error")
            if isinstance(error, dict) and error.get("type") == "index_not_found_exception":
                raise self._missing()
            if error:
                raise ConnectorError(f"{self.names.engine} search failed: {error}")
            partial = shared.shard_failure(response, self.names.engine)
            if partial is not None:
                raise BackendUnavailableError(partial)
        return responses

    def bm25(
        self, query: str, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        body = self._bm25_body(query, size, filters, texts)
        response = self._checked([self._call(lambda: self._search_raw(body), "search")])[0]
        return shared.parse_leg(response, vector_leg=False)

    def knn(
        self, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        body = self._knn_body(vector, size, filters, self._live_passages(), texts)
        response = self._checked([self._call(lambda: self._search_raw(body), "search")])[0]
        return shared.parse_leg(response, vector_leg=True)

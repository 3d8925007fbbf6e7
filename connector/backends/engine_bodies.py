"""What OpenSearch and Elasticsearch share, as pure functions: index names behind the alias, filters, stored
documents and bulk actions, hit parsing, bulk failure reports, and the messages of the errors a node or its
transport gives. Tested against expected values; `engine.py` sends them, the engine modules add their dialect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hybrid_rerank.connector.backends.base import Filters, LegHit, Passage, Range, Vector
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import DocumentFailure

VECTOR_FIELD = "embedding"
# A passage index: nested objects {start, end, embedding}, one per passage (the top-level vector is absent).
PASSAGES_FIELD = "passages"
PASSAGE_VECTOR_FIELD = f"{PASSAGES_FIELD}.{VECTOR_FIELD}"
PASSAGE_OFFSETS = [f"{PASSAGES_FIELD}.start", f"{PASSAGES_FIELD}.end"]  # what a matched passage brings back
CONTENT_HASH_FIELD = "content_hash"
SOURCE_FIELDS = ["doc_id", "title", "text", "metadata"]  # what a search hit brings back
STORED_FIELDS = [*SOURCE_FIELDS, CONTENT_HASH_FIELD]  # what `get` brings back
# Fields added to the mapping after indexes were built without them; an older index gets them on open.
LATER_FIELDS = {CONTENT_HASH_FIELD: {"type": "keyword", "index": False, "doc_values": False}}
VERSIONED = re.compile(r"^(?P<alias>.+)-v(?P<n>\d+)$")


# --- index names: versioned indexes NAME-v1, NAME-v2, ... behind the alias NAME -------------------------


def engine_hosts(url: str) -> list[str]:
    """The node URLs of OPENSEARCH_URL / ELASTICSEARCH_URL: one, or several separated by commas (a cluster's
    nodes, so that the client fails over to another node when one dies)."""
    hosts = [part.strip() for part in url.split(",") if part.strip()]
    if not hosts:
        raise ValueError(f"no node URL in {url!r}")
    return hosts


def shard_failure(response: Mapping[str, Any], engine: str) -> str | None:
    """What a search answered from only some of its shards says (None when every shard answered): a
    partial hit list would otherwise pass for the whole one, e.g. while a node of a cluster is down and its
    shards have no replica."""
    shards = response.get("_shards")
    if not isinstance(shards, Mapping) or not shards.get("failed"):
        return None
    reasons = sorted(
        {
            str(failure.get("reason", {}).get("type", "unknown"))
            for failure in shards.get("failures", [])
            if isinstance(failure, Mapping) and isinstance(failure.get("reason", {}), Mapping)
        }
    )
    return (
        f"{engine} answered from {shards.get('successful', '?')} of {shards.get('total', '?')} shards "
        f"({shards['failed']} failed: {', '.join(reasons) or 'no reason given'}); the hits would be "
        "incomplete, so the search is refused: retry, and give the index a replica on a cluster"
    )


def index_name_problem(index_name: str) -> str | None:
    """Why `index_name` cannot be an alias we manage, or None when it can."""
    if not index_name or index_name != index_name.lower() or VERSIONED.match(index_name):
        return (
            "use lower case, and no '-v<number>' suffix (that names the versioned indexes behind the alias)"
        )
    return None


def next_version(alias: str, existing: Iterable[str]) -> str:
    """The name of the next versioned index of `alias`, after every existing one."""
    versions = [int(m["n"]) for name in existing if (m := VERSIONED.match(name)) and m["alias"] == alias]
    return f"{alias}-v{max(versions, default=0) + 1}"


def alias_actions(alias: str, old: str | None, new: str) -> list[dict[str, Any]]:
    """One atomic `_aliases` update: the alias leaves `old` (if any) and points at `new`."""
    actions: list[dict[str, Any]] = [{"add": {"index": new, "alias": alias}}]
    if old is not None:
        actions.insert(0, {"remove": {"index": old, "alias": alias}})
    return actions


# --- queries -----------------------------------------------------------------------------------------------


def filter_clauses(filters: Filters | None) -> list[dict[str, Any]]:
    """Filter clauses over `metadata.<field>`: a value is `term`, a list `terms`, a Range `range`."""
    clauses: list[dict[str, Any]] = []
    for name, wanted in (filters or {}).items():
        field = f"metadata.{name}"
        if isinstance(wanted, Range):
            bounds = {k: v for k, v in (("gte", wanted.gte), ("lte", wanted.lte)) if v is not None}
            clauses.append({"range": {field: bounds}})
        elif isinstance(wanted, list):
            clauses.append({"terms": {field: wanted}})
        else:
            clauses.append({"term": {field: wanted}})
    return clauses


def filter_query(filters: Filters | None) -> dict[str, Any] | None:
    """All the filters as one query (for a k-NN search's own filter), or None without filters."""
    clauses = filter_clauses(filters)
    return {"bool": {"filter": clauses}} if clauses else None


def filtered(query: dict[str, Any], filters: Filters | None) -> dict[str, Any]:
    """`query` scored, restricted to the documents the filters keep."""
    clauses = filter_clauses(filters)
    return {"bool": {"must": [query], "filter": clauses}} if clauses else query


def multi_match(query: str, title_field: str, text_field: str, title_boost: float) -> dict[str, Any]:
    """BM25 over title (times `title_boost`) and text. `multi_match` never parses query syntax, so `AND`,
    `(`, `"`, `~` or `\\` in a user's query are plain text, not a parse error."""
    return {
        "multi_match": {
            "query": query,
            "fields": [f"{title_field}^{title_boost:g}", text_field],
            "type": "best_fields",
            "tie_breaker": 0.3,
        }
    }


def hit_source(texts: bool) -> list[str] | bool:
    """A search body's `_source`: what a hit shows of its document, or nothing (`texts=False`: the id and
    score alone; the node then neither loads nor sends a stored source, whose vector outweighs the text)."""
    return SOURCE_FIELDS if texts else False


def msearch(index: str, *searches: dict[str, Any]) -> list[dict[str, Any]]:
    """One `_msearch` body running each search on `index`."""
    return [part for search in searches for part in ({"index": index}, search)]


# --- documents and hits ------------------------------------------------------------------------------------


def cosine_from_score(score: float) -> float:
    """Both engines score cosine similarity as (1 + cos) / 2; report the cosine, as embedded does."""
    return 2.0 * score - 1.0


def document_from_hit(hit: Mapping[str, Any]) -> Document:
    """The document of a hit or `_mget` doc; a `texts=False` hit (no `_source`) gives the id alone."""
    source = hit.get("_source") or {}
    return Document(
        id=str(hit["_id"]),
        text=str(source.get("text", "")),
        title=str(source.get("title", "")),
        metadata=dict(source.get("metadata") or {}),
        content_hash=str(source.get(CONTENT_HASH_FIELD) or ""),
    )


def content_hash_of(hit: Mapping[str, Any]) -> str:
    """The stored content hash of one hit or `_mget` doc ("" when stored without one)."""
    return str((hit.get("_source") or {}).get(CONTENT_HASH_FIELD) or "")


def matched_passage(hit: Mapping[str, Any]) -> Passage | None:
    """The best passage of a nested k-NN hit (its `inner_hits`), None when the hit has none."""
    inner = (hit.get("inner_hits") or {}).get(PASSAGES_FIELD, {}).get("hits", {}).get("hits", [])
    if not inner:
        return None
    offsets = inner[0].get("_source") or {}
    return Passage(int(offsets["start"]), int(offsets["end"]))


def parse_leg(response: Mapping[str, Any], *, vector_leg: bool) -> list[LegHit]:
    hits = response.get("hits", {}).get("hits", [])
    return [
        LegHit(
            document_from_hit(h),
            cosine_from_score(h["_score"]) if vector_leg else float(h["_score"]),
            matched_passage(h) if vector_leg else None,
        )
        for h in hits
    ]


def passages_mapping(vector: dict[str, Any]) -> dict[str, Any]:
    """The nested field of a passage index, around an engine's vector field mapping."""
    offset = {"type": "integer", "index": False}
    properties = {"start": dict(offset), "end": dict(offset), VECTOR_FIELD: vector}
    return {"type": "nested", "properties": properties}


def with_passages(body: dict[str, Any], passages: str) -> dict[str, Any]:
    """A create-index body made a passage index when `passages` (the layout label) is set: the nested
    field, with the same vector mapping as the document-level one, and the label in `_meta`, so an index
    built another way is never mixed with this one."""
    if passages:
        mapping = body["mappings"]
        mapping["properties"][PASSAGES_FIELD] = passages_mapping(dict(mapping["properties"][VECTOR_FIELD]))
        mapping["_meta"]["passages"] = passages
    return body


def inner_hits() -> dict[str, Any]:
    """The best passage of each k-NN hit, offsets only (its vector stays on the node)."""
    return {"size": 1, "_source": {"includes": PASSAGE_OFFSETS}}


def bulk_actions(
    index: str,
    documents: Sequence[Document],
    vectors: Sequence[Vector],
    extra_fields: Callable[[Document], dict[str, str]] | None = None,
    passages: Sequence[Sequence[Passage]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Index (upsert by id) actions for the clients' bulk helpers; `extra_fields` adds an engine's own
    derived fields to each stored document. With `passages` (a passage index), `vectors` holds each
    document's passage rows and the passages are stored as nested objects."""
    layouts: Sequence[Sequence[Passage] | None] = (
        passages if passages is not None else [None] * len(documents)
    )
    for doc, vector, spans in zip(documents, vectors, layouts, strict=True):
        source: dict[str, Any] = {"doc_id": doc.id, "title": doc.title, "text": doc.text}
        if doc.content_hash:  # stored when computed; without one, reads give ""
            source[CONTENT_HASH_FIELD] = doc.content_hash
        if extra_fields is not None:
            source.update(extra_fields(doc))
        source["metadata"] = dict(doc.metadata)
        if spans is None:
            source[VECTOR_FIELD] = [float(x) for x in vector]
        else:
            source[PASSAGES_FIELD] = [
                {"start": p.start, "end": p.end, VECTOR_FIELD: [float(x) for x in row]}
                for p, row in zip(spans, vector, strict=True)
            ]
        yield {"_op_type": "index", "_index": index, "_id": doc.id, "_source": source}


def delete_actions(index: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"_op_type": "delete", "_index": index, "_id": doc_id} for doc_id in ids]


def action_size(action: Mapping[str, Any]) -> int:
    """Bytes the action's source takes on the wire."""
    return len(json.dumps(action["_source"], ensure_ascii=False).encode("utf-8"))


# JSON of a float takes at most 24 characters, plus ", "; a character at most 6 bytes (a \uXXXX escape); a
# field's name, quotes and separators fit in 32 bytes.
_FLOAT_BYTES, _CHAR_BYTES, _FIELD_BYTES = 26, 6, 32


def action_size_bound(action: Mapping[str, Any]) -> int:
    """An upper bound of `action_size` without serializing the vector and the texts: the exact size is only
    worth computing (one more full JSON encoding per document) when this bound is over the limit."""
    source = action["_source"]
    chars = sum(len(value) for value in source.values() if isinstance(value, str))
    metadata = len(json.dumps(source["metadata"], ensure_ascii=False).encode("utf-8"))
    fields = _FIELD_BYTES * (len(source) - 1)
    passages = source.get(PASSAGES_FIELD, [])
    floats = len(source.get(VECTOR_FIELD, [])) + sum(len(p[VECTOR_FIELD]) for p in passages)
    return fields + _CHAR_BYTES * chars + metadata + _FLOAT_BYTES * floats + 3 * _FIELD_BYTES * len(passages)


def error_reason(error: Mapping[str, Any]) -> str:
    """`type: reason (cause)` of an engine's error object."""
    reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    caused = error.get("caused_by")
    if isinstance(caused, dict) and caused.get("reason"):
        reason += f" ({caused.get('type', '')}: {caused['reason']})"
    return reason


def failure_from_item(item: Mapping[str, Any]) -> DocumentFailure:
    """A per-document failure from one item of a bulk response."""
    op = next(iter(item.values()))
    error = op.get("error")
    reason = error_reason(error) if isinstance(error, dict) else str(error or f"status {op.get('status')}")
    return DocumentFailure(str(op.get("_id", "?")), f"HTTP {op.get('status', '?')}: {reason}")


# --- errors: what went wrong, in words that say what to check -----------------------------------------------

FailureKind = Literal["unreachable", "tls", "auth", "forbidden", "missing", "refused"]


@dataclass(frozen=True)
class EngineNames:
    """How an engine and its settings are called in messages."""

    engine: str  # "OpenSearch"
    url_var: str  # "OPENSEARCH_URL"
    start_command: str  # "scripts/opensearch start"
    credential_vars: tuple[str, ...]  # the settings that hold credentials
    ca_var: str  # the setting that names the CA certificate file


@dataclass(frozen=True)
class EngineFailure:
    """A client exception sorted by what the user should check. `detail` never holds a secret: it is built
    from the status, the node's error type and reason, or the TLS library's verdict."""

    kind: FailureKind
    status: int | str | None = None
    detail: str = ""


def failure_message(failure: EngineFailure, names: EngineNames, *, url: str, alias: str, what: str) -> str:
    """The message of the connector error a client failure becomes."""
    where = url or "the configured URL"
    credentials = " and ".join(names.credential_vars)
    if failure.kind == "unreachable":
        return (
            f"cannot reach {names.engine} at {where} while trying to {what} ({failure.detail}); check "
            f"{names.url_var}, or start a local node with `{names.start_command}`"
        )
    if failure.kind == "tls":
        return (
            f"cannot verify the TLS certificate of {names.engine} at {where} while trying to {what} "
            f"({failure.detail}); set {names.ca_var} to the CA certificate file that signed the node's "
            f"certificate, and check that {names.url_var} names the host the certificate was issued for "
            "and uses https"
        )
    if failure.kind == "auth":
        return (
            f"{names.engine} at {where} refused the credentials (HTTP {failure.status}) while trying to "
            f"{what}; check {credentials}"
        )
    if failure.kind == "forbidden":
        return (
            f"{names.engine} at {where} denied the configured user the right to {what} (HTTP "
            f"{failure.status}: {failure.detail}); check {credentials}, and the user's roles on the node"
        )
    if failure.kind == "missing":
        return (
            f"index {alias!r} does not exist on {names.engine} (while trying to {what}); "
            "run `hybrid-rerank index PATH` first"
        )
    return f"{names.engine} refused to {what}: {failure.status} {failure.detail}"


_TLS_VERDICT = re.compile(r"\[SSL: [A-Z_]+\][^()\]\"\n]*|certificate verify failed: [^()\]\"\n]*")


def tls_detail(text: str) -> str:
    """The TLS library's verdict out of a transport error's text (which may also hold the request), or a
    plain phrase when there is none to quote."""
    found = _TLS_VERDICT.search(text)
    return found.group(0).strip() if found else "TLS handshake failed"

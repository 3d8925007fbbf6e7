"""OpenSearch request bodies and response parsing as pure functions: tested against expected dicts, sent
through a real node only by `opensearch.py`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hybrid_rerank.connector.backends.base import Filters, LegHit, Range, Vector
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import DocumentFailure

VECTOR_FIELD = "embedding"
SOURCE_FIELDS = ["doc_id", "title", "text", "metadata"]


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


def match_query(query: str, filters: Filters | None, title_boost: float = 1.0) -> dict[str, Any]:
    """BM25 over title (times `title_boost`) and text. `multi_match` never parses query syntax, so `AND`,
    `(`, `"`, `~` or `\\` in a user's query are plain text, not a parse error."""
    match = {
        "multi_match": {
            "query": query,
            "fields": [f"title^{title_boost:g}", "text"],
            "type": "best_fields",
            "tie_breaker": 0.3,
        }
    }
    clauses = filter_clauses(filters)
    return {"bool": {"must": [match], "filter": clauses}} if clauses else match


def knn_query(vector: Vector, size: int, filters: Filters | None) -> dict[str, Any]:
    """k-NN on the lucene engine, with the filter applied during the graph search (efficient filtering)."""
    body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": size}
    clauses = filter_clauses(filters)
    if clauses:
        body["filter"] = {"bool": {"filter": clauses}}
    return {"knn": {VECTOR_FIELD: body}}


def search_body(query: dict[str, Any], size: int) -> dict[str, Any]:
    return {"size": size, "query": query, "_source": SOURCE_FIELDS}


def recall_msearch(
    query: str, vector: Vector, size: int, filters: Filters | None, index: str, title_boost: float = 1.0
) -> list[dict[str, Any]]:
    """One `_msearch` body: the BM25 leg, then the k-NN leg, under the same filters."""
    return [
        {"index": index},
        search_body(match_query(query, filters, title_boost), size),
        {"index": index},
        search_body(knn_query(vector, size, filters), size),
    ]


def hybrid_body(
    query: str, vector: Vector, size: int, filters: Filters | None, title_boost: float = 1.0
) -> dict[str, Any]:
    """One server-side `hybrid` query (neural-search); it must run through a normalization search pipeline."""
    legs = [match_query(query, filters, title_boost), knn_query(vector, size, filters)]
    return {"size": size, "_source": SOURCE_FIELDS, "query": {"hybrid": {"queries": legs}}}


def cosine_from_score(score: float) -> float:
    """The lucene engine scores cosinesimil as (1 + cos) / 2; report the cosine, as embedded does."""
    return 2.0 * score - 1.0


def document_from_hit(hit: Mapping[str, Any]) -> Document:
    source = hit.get("_source") or {}
    return Document(
        id=str(hit["_id"]),
        text=str(source.get("text", "")),
        title=str(source.get("title", "")),
        metadata=dict(source.get("metadata") or {}),
    )


def parse_leg(response: Mapping[str, Any], *, vector_leg: bool) -> list[LegHit]:
    hits = response.get("hits", {}).get("hits", [])
    return [
        LegHit(document_from_hit(h), cosine_from_score(h["_score"]) if vector_leg else float(h["_score"]))
        for h in hits
    ]


def leg_scores_from_explanation(explanation: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(BM25 raw score, cosine) of one hybrid hit, read from neural-search's `hybrid_score_explanation`.

    Each detail is one sub-query the document matched, "<technique> normalization of:" over the raw score;
    the k-NN one describes itself as "within top k"."""
    bm25: float | None = None
    vector: float | None = None
    for detail in explanation.get("details", []):
        inner = (detail.get("details") or [{}])[0]
        if "value" not in inner:
            continue
        if str(inner.get("description", "")).startswith("within top"):
            vector = cosine_from_score(float(inner["value"]))
        else:
            bm25 = float(inner["value"])
    return bm25, vector


def bulk_actions(
    index: str, documents: Sequence[Document], vectors: Sequence[Vector]
) -> Iterator[dict[str, Any]]:
    """Index (upsert by id) actions for opensearch-py's bulk helpers."""
    for doc, vector in zip(documents, vectors, strict=True):
        yield {
            "_op_type": "index",
            "_index": index,
            "_id": doc.id,
            "_source": {
                "doc_id": doc.id,
                "title": doc.title,
                "text": doc.text,
                "metadata": dict(doc.metadata),
                VECTOR_FIELD: [float(x) for x in vector],
            },
        }


def action_size(action: Mapping[str, Any]) -> int:
    """Bytes the action's source takes on the wire."""
    return len(json.dumps(action["_source"], ensure_ascii=False).encode("utf-8"))


# JSON of a float takes at most 24 characters, plus ", "; a character at most 6 bytes (a \uXXXX escape).
_FLOAT_BYTES, _CHAR_BYTES = 26, 6


def action_size_bound(action: Mapping[str, Any]) -> int:
    """An upper bound of `action_size` without serializing the vector and the text: the exact size is only
    worth computing (one more full JSON encoding per document) when this bound is over the limit."""
    source = action["_source"]
    chars = sum(len(source[k]) for k in ("doc_id", "title", "text"))
    metadata = len(json.dumps(source["metadata"], ensure_ascii=False).encode("utf-8"))
    return 128 + _CHAR_BYTES * chars + metadata + _FLOAT_BYTES * len(source[VECTOR_FIELD])


def failure_from_item(item: Mapping[str, Any]) -> DocumentFailure:
    """A per-document failure from one item of a bulk response."""
    op = next(iter(item.values()))
    error = op.get("error")
    if isinstance(error, dict):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        caused = error.get("caused_by")
        if isinstance(caused, dict) and caused.get("reason"):
            reason += f" ({caused.get('type', '')}: {caused['reason']})"
    else:
        reason = str(error or f"status {op.get('status')}")
    return DocumentFailure(str(op.get("_id", "?")), f"HTTP {op.get('status', '?')}: {reason}")

"""OpenSearch request bodies as pure functions: tested against expected dicts, sent through a real node only
by `opensearch.py`. What Elasticsearch shares (filters, documents, bulk actions, hit parsing, failures) lives
in `engine_bodies` and is re-exported here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybrid_rerank.connector.backends.base import Filters, Vector
from hybrid_rerank.connector.backends.engine_bodies import (
    SOURCE_FIELDS,
    VECTOR_FIELD,
    action_size,
    action_size_bound,
    bulk_actions,
    cosine_from_score,
    document_from_hit,
    failure_from_item,
    filter_clauses,
    filter_query,
    filtered,
    msearch,
    multi_match,
    parse_leg,
)

__all__ = [
    "SOURCE_FIELDS",
    "VECTOR_FIELD",
    "action_size",
    "action_size_bound",
    "bulk_actions",
    "cosine_from_score",
    "document_from_hit",
    "failure_from_item",
    "filter_clauses",
    "hybrid_body",
    "knn_query",
    "leg_scores_from_explanation",
    "match_query",
    "parse_leg",
    "recall_msearch",
    "search_body",
]


def match_query(query: str, filters: Filters | None, title_boost: float = 1.0) -> dict[str, Any]:
    """BM25 over title (times `title_boost`) and text, analysed by the index's analyzer."""
    return filtered(multi_match(query, "title", "text", title_boost), filters)


def knn_query(vector: Vector, size: int, filters: Filters | None) -> dict[str, Any]:
    """k-NN on the lucene engine, with the filter applied during the graph search (efficient filtering)."""
    body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": size}
    query = filter_query(filters)
    if query:
        body["filter"] = query
    return {"knn": {VECTOR_FIELD: body}}


def search_body(query: dict[str, Any], size: int) -> dict[str, Any]:
    return {"size": size, "query": query, "_source": SOURCE_FIELDS}


def recall_msearch(
    query: str, vector: Vector, size: int, filters: Filters | None, index: str, title_boost: float = 1.0
) -> list[dict[str, Any]]:
    """One `_msearch` body: the BM25 leg, then the k-NN leg, under the same filters."""
    return msearch(
        index,
        search_body(match_query(query, filters, title_boost), size),
        search_body(knn_query(vector, size, filters), size),
    )


def hybrid_body(
    query: str, vector: Vector, size: int, filters: Filters | None, title_boost: float = 1.0
) -> dict[str, Any]:
    """One server-side `hybrid` query (neural-search); it must run through a normalization search pipeline."""
    legs = [match_query(query, filters, title_boost), knn_query(vector, size, filters)]
    return {"size": size, "_source": SOURCE_FIELDS, "query": {"hybrid": {"queries": legs}}}


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

"""OpenSearch request bodies as pure functions: tested against expected dicts, sent through a real node only
by `opensearch.py`. What Elasticsearch shares (filters, documents, bulk actions, hit parsing, failures) lives
in `engine_bodies` and is re-exported here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends.base import Filters, LegHit, Vector
from hybrid_rerank.connector.backends.engine_bodies import (
    PASSAGE_VECTOR_FIELD,
    PASSAGES_FIELD,
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
    hit_source,
    inner_hits,
    msearch,
    multi_match,
    parse_leg,
)
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.fusion import FusionMethod

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
    "hybrid_msearch",
    "knn_query",
    "leg_scores_from_explanation",
    "match_query",
    "parse_leg",
    "recall_msearch",
    "search_body",
    "search_pipeline",
]


def match_query(query: str, filters: Filters | None, title_boost: float = 1.0) -> dict[str, Any]:
    """BM25 over title (times `title_boost`) and text, analysed by the index's analyzer."""
    return filtered(multi_match(query, "title", "text", title_boost), filters)


def knn_query(vector: Vector, size: int, filters: Filters | None, passages: bool = False) -> dict[str, Any]:
    """k-NN on the lucene engine, with the filter applied during the graph search (efficient filtering).
    `passages`: over the nested passage vectors, a document scored by its best passage (`score_mode`
    max; lucene's nested k-NN returns `k` documents, not passages), which `inner_hits` names."""
    body: dict[str, Any] = {"vector": [float(x) for x in vector], "k": size}
    query = filter_query(filters)
    if query:
        body["filter"] = query
    if not passages:
        return {"knn": {VECTOR_FIELD: body}}
    return {
        "nested": {
            "path": PASSAGES_FIELD,
            "score_mode": "max",
            "query": {"knn": {PASSAGE_VECTOR_FIELD: body}},
            "inner_hits": inner_hits(),
        }
    }


def search_body(query: dict[str, Any], size: int, texts: bool = True) -> dict[str, Any]:
    return {"size": size, "query": query, "_source": hit_source(texts)}


def recall_msearch(
    query: str,
    vector: Vector,
    size: int,
    filters: Filters | None,
    index: str,
    title_boost: float = 1.0,
    passages: bool = False,
    texts: bool = True,
) -> list[dict[str, Any]]:
    """One `_msearch` body: the BM25 leg, then the k-NN leg, under the same filters."""
    return msearch(
        index,
        search_body(match_query(query, filters, title_boost), size, texts),
        search_body(knn_query(vector, size, filters, passages), size, texts),
    )


def hybrid_body(
    query: str,
    vector: Vector,
    size: int,
    filters: Filters | None,
    title_boost: float = 1.0,
    passages: bool = False,
    texts: bool = True,
) -> dict[str, Any]:
    """One server-side `hybrid` query (neural-search); it must run through a normalization search pipeline."""
    legs = [match_query(query, filters, title_boost), knn_query(vector, size, filters, passages)]
    return {"size": size, "_source": hit_source(texts), "query": {"hybrid": {"queries": legs}}}


def search_pipeline(
    fusion: FusionMethod, bm25_weight: float, rrf_k: int, *, z_score: bool
) -> tuple[str, dict[str, Any]]:
    """The name and body of the search pipeline that fuses the hybrid query's two legs; `z_score`: the node
    has that normalization (neural-search 3.x)."""
    if fusion == "rrf":
        return f"hybrid-rerank-rrf-{rrf_k}", mappings.rrf_pipeline_body(rrf_k)
    weights = (round(bm25_weight, 4), round(1.0 - bm25_weight, 4))
    if fusion == "minmax":
        return f"hybrid-rerank-minmax-{weights[0]:g}", mappings.normalization_pipeline_body(
            "min_max", weights
        )
    if fusion == "zscore" and z_score:
        return f"hybrid-rerank-zscore-{weights[0]:g}", mappings.normalization_pipeline_body(
            "z_score", weights
        )
    raise ConfigurationError(
        f"server-side hybrid search has no {fusion!r} normalization on this OpenSearch version (z-score "
        "needs 3.x); set FUSION=minmax or FUSION=rrf, or HYBRID_MODE=client"
    )


def hybrid_msearch(
    query: str,
    vector: Vector,
    size: int,
    filters: Filters | None,
    index: str,
    pipeline: dict[str, Any],
    title_boost: float = 1.0,
    passages: bool = False,
    texts: bool = True,
) -> list[dict[str, Any]]:
    """Server-side hybrid search on OpenSearch 3.x in one `_msearch`: the `hybrid` query fused by `pipeline`
    (given in the body: `_msearch` takes no pipeline name), its filter said once for both legs and its
    per-leg depth pinned to `size` (`pagination_depth`), then each leg alone with the same size and filters.
    The legs' raw scores of every fused hit come from those two lists, without the costly `explain`."""
    hybrid: dict[str, Any] = {
        "queries": [match_query(query, None, title_boost), knn_query(vector, size, None, passages)],
        "pagination_depth": size,
    }
    restriction = filter_query(filters)
    if restriction:
        hybrid["filter"] = restriction
    fused: dict[str, Any] = {"size": size, "_source": hit_source(texts), "search_pipeline": pipeline}
    fused["query"] = {"hybrid": hybrid}
    bm25_leg = {"size": size, "_source": False, "query": match_query(query, filters, title_boost)}
    knn_leg = {"size": size, "_source": False, "query": knn_query(vector, size, filters, passages)}
    return msearch(index, fused, bm25_leg, knn_leg)


def hybrid_hits(responses: list[dict[str, Any]]) -> list[tuple[LegHit, float | None, float | None]]:
    """Each fused hit of `hybrid_msearch`'s responses, with its BM25 score and cosine (None: that leg did
    not find it)."""
    bm25 = {h["_id"]: float(h["_score"]) for h in responses[1].get("hits", {}).get("hits", [])}
    cosine = {h["_id"]: cosine_from_score(h["_score"]) for h in responses[2].get("hits", {}).get("hits", [])}
    return [
        (LegHit(document_from_hit(h), float(h["_score"])), bm25.get(h["_id"]), cosine.get(h["_id"]))
        for h in responses[0].get("hits", {}).get("hits", [])
    ]


def leg_scores_from_explanation(explanation: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(BM25 raw score, cosine) of one hybrid hit, read from neural-search's `hybrid_score_explanation`.

    Each detail is one sub-query the document matched, "<technique> normalization of:" over the raw score;
    the k-NN one describes itself as "within top k" (on a passage index, a nested query with that below
    it). With a nested sub-query, 2.19 puts both legs under one "combined score of:" detail instead, an
    unmatched leg as "No matching clause"."""
    bm25: float | None = None
    vector: float | None = None
    for leg in _explained_legs(explanation):
        if _mentions(leg, "within top"):
            vector = cosine_from_score(float(leg["value"]))
        else:
            bm25 = float(leg["value"])
    return bm25, vector


def _explained_legs(explanation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    legs: list[Mapping[str, Any]] = []
    for detail in explanation.get("details", []):
        inner = (detail.get("details") or [{}])[0]
        if str(inner.get("description", "")).startswith("combined score of"):
            legs += [d for d in inner.get("details", []) if d.get("description") != "No matching clause"]
        elif "value" in inner:
            legs.append(inner)
    return legs


def _mentions(explanation: Mapping[str, Any], prefix: str) -> bool:
    """Whether this explanation or one below it starts with `prefix`."""
    if str(explanation.get("description", "")).startswith(prefix):
        return True
    return any(_mentions(detail, prefix) for detail in explanation.get("details", []))

"""Elasticsearch 8.x request bodies as pure functions: tested against expected dicts, sent through a real
node only by `elasticsearch.py`.

Analysis. The server we provision (Maven Central's integ-test zip) has no analysis-common module: no stemmer,
no stop or CJK filters. So BM25 runs over fields our own tokenizer (`connector/text.py`: NFKC, lower case,
English stop words, Porter stems, CJK bigrams) has already analysed, joined by spaces, and the core
`whitespace` analyzer splits them back into the same terms at index and query time. BM25 then sees exactly
the terms the embedded backend and the OpenSearch `english_cjk` analyzer see, on any Elasticsearch.

Filters, documents, hit parsing and bulk failure reports are the same as on OpenSearch: `engine_bodies`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hybrid_rerank.connector.backends import engine_bodies as shared
from hybrid_rerank.connector.backends.base import Filters, Passage, Vector
from hybrid_rerank.connector.backends.engine_bodies import (
    LATER_FIELDS,
    VECTOR_FIELD,
    action_size,
    action_size_bound,
    filter_query,
    filtered,
    hit_source,
    multi_match,
    parse_leg,
)
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.text import TOKENIZER_VERSION, tokenize

__all__ = [
    "action_size",
    "action_size_bound",
    "analysed",
    "bm25_body",
    "bulk_actions",
    "index_body",
    "knn_body",
    "knn_section",
    "match_query",
    "parse_leg",
    "recall_msearch",
    "tokenizer_mismatch",
]

MAPPING_FORMAT = 1
ANALYSIS = "pre-analysed+whitespace"
TERM_FIELDS = {"title": "title_terms", "text": "text_terms"}  # the stored field -> its analysed copy
MAX_K = 10_000  # Elasticsearch's bound on both `k` and `num_candidates`
NUM_CANDIDATES = 100  # candidates per shard the HNSW search visits, at least (more when k is larger)


def index_body(
    *, dimension: int, embedding_model: str, m: int = 16, ef_construction: int = 128
) -> dict[str, Any]:
    """The create-index body: one shard, analysed term fields, an HNSW cosine `dense_vector`, keyword
    metadata, and `_meta` recording what the index was built with."""
    if dimension <= 0:
        raise ValueError(f"dimension must be positive, got {dimension}")
    terms = {"type": "text", "analyzer": "whitespace"}
    return {
        # one replica as soon as a second node is there to hold it (a lone node stays green with none)
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {
                "format": MAPPING_FORMAT,
                "embedding_model": embedding_model,
                "dimension": dimension,
                "analysis": ANALYSIS,
                "tokenizer_version": TOKENIZER_VERSION,
            },
            # The analysed copies and the vectors are only for searching: the stored source is the document
            # alone, which a hit's text is read from (a 384-float vector's JSON outweighs an abstract ~5x).
            "_source": {
                "excludes": sorted([*TERM_FIELDS.values(), VECTOR_FIELD, shared.PASSAGE_VECTOR_FIELD])
            },
            "properties": {
                "doc_id": {"type": "keyword"},
                **LATER_FIELDS,
                "title": {"type": "text", "index": False},
                "text": {"type": "text", "index": False},
                "title_terms": dict(terms),
                "text_terms": dict(terms),
                "metadata": {"type": "object", "dynamic": True},
                VECTOR_FIELD: {
                    "type": "dense_vector",
                    "dims": dimension,
                    "index": True,
                    "similarity": "cosine",
                    "index_options": {"type": "hnsw", "m": m, "ef_construction": ef_construction},
                },
            },
            "dynamic_templates": [
                {
                    "metadata_strings": {
                        "path_match": "metadata.*",
                        "match_mapping_type": "string",
                        "mapping": {"type": "keyword"},
                    }
                }
            ],
        },
    }


def tokenizer_mismatch(meta: Mapping[str, Any]) -> str | None:
    """Why an index's analysed terms would not match today's query terms, or None when they do."""
    built = meta.get("tokenizer_version")
    if built != TOKENIZER_VERSION:
        return (
            f"its terms were analysed by tokenizer version {built}, this connector's is {TOKENIZER_VERSION}; "
            "re-index with --recreate"
        )
    return None


def analysed(text: str) -> str:
    """Our tokenizer's terms, space-separated, for the `whitespace` analyzer to split again."""
    return " ".join(tokenize(text))


def match_query(query: str, filters: Filters | None, title_boost: float = 1.0) -> dict[str, Any]:
    """BM25 over the analysed title (times `title_boost`) and text. The query is analysed here, as the
    fields were; `multi_match` parses no query syntax, so `AND`, `(` or `"` are plain text. A query of stop
    words alone has no terms and matches nothing."""
    terms = analysed(query)
    if not terms:
        return {"match_none": {}}
    return filtered(multi_match(terms, TERM_FIELDS["title"], TERM_FIELDS["text"], title_boost), filters)


def knn_section(vector: Vector, size: int, filters: Filters | None, passages: bool = False) -> dict[str, Any]:
    """The `knn` search option, with the filter applied during the HNSW search (not after it).
    `passages`: over the nested passage vectors (a document scored by its best passage, the filter on the
    documents' own metadata), naming that passage in `inner_hits`."""
    k = min(size, MAX_K)
    body: dict[str, Any] = {
        "field": shared.PASSAGE_VECTOR_FIELD if passages else VECTOR_FIELD,
        "query_vector": [float(x) for x in vector],
        "k": k,
        "num_candidates": min(MAX_K, max(k, NUM_CANDIDATES)),
    }
    query = filter_query(filters)
    if query:
        body["filter"] = query
    if passages:
        body["inner_hits"] = shared.inner_hits()
    return body


def bm25_body(
    query: str, size: int, filters: Filters | None, title_boost: float = 1.0, texts: bool = True
) -> dict[str, Any]:
    return {"size": size, "query": match_query(query, filters, title_boost), "_source": hit_source(texts)}


def knn_body(
    vector: Vector, size: int, filters: Filters | None, passages: bool = False, texts: bool = True
) -> dict[str, Any]:
    section = knn_section(vector, size, filters, passages)
    return {"size": section["k"], "knn": section, "_source": hit_source(texts)}


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
    return shared.msearch(
        index,
        bm25_body(query, size, filters, title_boost, texts),
        knn_body(vector, size, filters, passages, texts),
    )


def analysed_fields(doc: Document) -> dict[str, str]:
    """The analysed copies of a document's title and text, stored beside them."""
    return {TERM_FIELDS["title"]: analysed(doc.title), TERM_FIELDS["text"]: analysed(doc.text)}


def bulk_actions(
    index: str,
    documents: Sequence[Document],
    vectors: Sequence[Vector],
    passages: Sequence[Sequence[Passage]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Index (upsert by id) actions for the client's bulk helpers, with the analysed copies."""
    return shared.bulk_actions(index, documents, vectors, analysed_fields, passages)

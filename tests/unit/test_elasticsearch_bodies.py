"""Elasticsearch request bodies and the mapping, built by pure functions, checked against expected dicts."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_rerank.connector.backends import elasticsearch_bodies as bodies
from hybrid_rerank.connector.backends.base import Passage, Range
from hybrid_rerank.connector.backends.engine_bodies import with_passages
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.text import TOKENIZER_VERSION

SOURCE = ["doc_id", "title", "text", "metadata"]


def test_index_body_is_whitespace_term_fields_and_an_hnsw_cosine_dense_vector() -> None:
    terms = {"type": "text", "analyzer": "whitespace"}
    assert bodies.index_body(dimension=4, embedding_model="m", m=24, ef_construction=200) == {
        "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
        "mappings": {
            "dynamic": "strict",
            "_meta": {
                "format": 1,
                "embedding_model": "m",
                "dimension": 4,
                "analysis": "pre-analysed+whitespace",
                "tokenizer_version": TOKENIZER_VERSION,
            },
            "_source": {"excludes": ["embedding", "passages.embedding", "text_terms", "title_terms"]},
            "properties": {
                "doc_id": {"type": "keyword"},
                "content_hash": {"type": "keyword", "index": False, "doc_values": False},
                "title": {"type": "text", "index": False},
                "text": {"type": "text", "index": False},
                "title_terms": terms,
                "text_terms": terms,
                "metadata": {"type": "object", "dynamic": True},
                "embedding": {
                    "type": "dense_vector",
                    "dims": 4,
                    "index": True,
                    "similarity": "cosine",
                    "index_options": {"type": "hnsw", "m": 24, "ef_construction": 200},
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
    with pytest.raises(ValueError, match="positive"):
        bodies.index_body(dimension=0, embedding_model="m")


def test_analysed_text_is_our_tokenizer_terms_stemmed_without_stop_words_and_cjk_bigrams() -> None:
    assert bodies.analysed("The Moon orbits the Earth") == "moon orbit earth"
    assert bodies.analysed("月球绕着地球") == "月球 球绕 绕着 着地 地球"
    assert bodies.analysed("Ｍｏｏｎ") == "moon"  # full-width folded
    assert bodies.analysed("the of and") == ""


def test_match_query_searches_the_analysed_fields_with_the_analysed_query() -> None:
    multi = {
        "multi_match": {
            "query": "moon orbit",
            "fields": ["title_terms^2", "text_terms"],
            "type": "best_fields",
            "tie_breaker": 0.3,
        }
    }
    assert bodies.match_query("The moons ORBITING", None, title_boost=2.0) == multi
    assert bodies.match_query("moon", None)["multi_match"]["fields"] == ["title_terms^1", "text_terms"]
    assert bodies.match_query("moons orbiting", {"topic": "x"}, 2.0) == {
        "bool": {"must": [multi], "filter": [{"term": {"metadata.topic": "x"}}]}
    }


def test_query_syntax_is_plain_words_and_stop_words_alone_match_nothing() -> None:
    query = bodies.match_query('moon AND (sun OR "earth") ~2 ^3 \\ / *', None)
    assert query["multi_match"]["query"] == "moon sun earth 2 3"
    assert bodies.match_query("the of and", {"topic": "x"}) == {"match_none": {}}


def test_knn_section_filters_inside_the_graph_search() -> None:
    vector = np.array([0.5, 0.25], dtype=np.float32)
    assert bodies.knn_section(vector, 5, {"year": Range(gte=2020, lte=2021)}) == {
        "field": "embedding",
        "query_vector": [0.5, 0.25],
        "k": 5,
        "num_candidates": 100,
        "filter": {"bool": {"filter": [{"range": {"metadata.year": {"gte": 2020, "lte": 2021}}}]}},
    }
    assert "filter" not in bodies.knn_section(vector, 5, None)


def test_knn_candidates_grow_with_k_within_the_engine_bound() -> None:
    vector = np.zeros(2, dtype=np.float32)
    assert bodies.knn_section(vector, 300, None)["num_candidates"] == 300
    big = bodies.knn_section(vector, 50_000, None)
    assert (big["k"], big["num_candidates"]) == (10_000, 10_000)
    assert bodies.knn_body(vector, 50_000, None)["size"] == 10_000


def test_recall_msearch_is_both_legs_under_the_same_filters() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    filters = {"topic": ["a", "b"]}
    clause = [{"terms": {"metadata.topic": ["a", "b"]}}]
    body = bodies.recall_msearch("moons", vector, 7, filters, "idx", title_boost=1.5)
    assert body == [
        {"index": "idx"},
        {
            "size": 7,
            "query": {
                "bool": {
                    "must": [
                        {
                            "multi_match": {
                                "query": "moon",
                                "fields": ["title_terms^1.5", "text_terms"],
                                "type": "best_fields",
                                "tie_breaker": 0.3,
                            }
                        }
                    ],
                    "filter": clause,
                }
            },
            "_source": SOURCE,
        },
        {"index": "idx"},
        {
            "size": 7,
            "knn": {
                "field": "embedding",
                "query_vector": [1.0, 0.0],
                "k": 7,
                "num_candidates": 100,
                "filter": {"bool": {"filter": clause}},
            },
            "_source": SOURCE,
        },
    ]


def test_parse_leg_reports_the_cosine_for_the_vector_leg() -> None:
    response = {
        "hits": {
            "hits": [
                {"_id": "a", "_score": 0.9, "_source": {"title": "T", "text": "x", "metadata": {"k": 1}}},
                {"_id": "b", "_score": 0.5, "_source": {}},
            ]
        }
    }
    knn = bodies.parse_leg(response, vector_leg=True)
    assert [(h.document.id, h.score) for h in knn] == [("a", pytest.approx(0.8)), ("b", 0.0)]
    assert knn[0].document == Document("a", "x", "T", {"k": 1})
    assert [h.score for h in bodies.parse_leg(response, vector_leg=False)] == [0.9, 0.5]
    assert bodies.parse_leg({}, vector_leg=False) == []


def test_bulk_actions_carry_the_analysed_copies() -> None:
    doc = Document("d1", "Moons orbiting planets", "The Moon", {"topic": "x"})
    (action,) = bodies.bulk_actions("idx-v1", [doc], [np.array([0.5, 1.0], dtype=np.float32)])
    assert action == {
        "_op_type": "index",
        "_index": "idx-v1",
        "_id": "d1",
        "_source": {
            "doc_id": "d1",
            "title": "The Moon",
            "text": "Moons orbiting planets",
            "title_terms": "moon",
            "text_terms": "moon orbit planet",
            "metadata": {"topic": "x"},
            "embedding": [0.5, 1.0],
        },
    }


@pytest.mark.parametrize("text", ["plain words " * 50, "月球绕着地球运行" * 40, '"\\\n\t' * 30, "é" * 100])
def test_size_bound_is_never_below_the_exact_size(text: str) -> None:
    doc = Document("id-" + text[:5], text, text[:20], {"tag": text[:30], "n": 1})
    (action,) = bodies.bulk_actions("i", [doc], [np.full(8, -1.2345678e-30, dtype=np.float32)])
    assert bodies.action_size_bound(action) >= bodies.action_size(action)


def test_an_index_analysed_by_another_tokenizer_version_is_reported() -> None:
    assert bodies.tokenizer_mismatch({"tokenizer_version": TOKENIZER_VERSION}) is None
    assert "re-index with --recreate" in str(bodies.tokenizer_mismatch({"tokenizer_version": -1}))
    assert bodies.tokenizer_mismatch({}) is not None


def test_a_passage_index_nests_the_same_dense_vector_and_records_its_layout() -> None:
    plain = bodies.index_body(dimension=4, embedding_model="m")
    body = with_passages(bodies.index_body(dimension=4, embedding_model="m"), "200/50 tokens")
    nested = body["mappings"]["properties"]["passages"]
    assert nested["type"] == "nested"
    assert nested["properties"]["embedding"] == plain["mappings"]["properties"]["embedding"]
    assert nested["properties"]["start"] == {"type": "integer", "index": False}
    assert body["mappings"]["_meta"]["passages"] == "200/50 tokens"


def test_passage_knn_searches_the_nested_vectors_and_names_the_best_passage() -> None:
    vector = np.array([0.5, 0.25], dtype=np.float32)
    assert bodies.knn_section(vector, 5, {"topic": "x"}, passages=True) == {
        "field": "passages.embedding",
        "query_vector": [0.5, 0.25],
        "k": 5,
        "num_candidates": 100,
        "filter": {"bool": {"filter": [{"term": {"metadata.topic": "x"}}]}},
        "inner_hits": {"size": 1, "_source": {"includes": ["passages.start", "passages.end"]}},
    }
    body = bodies.recall_msearch("q", vector, 5, None, "idx", passages=True)
    assert body[3]["knn"] == bodies.knn_section(vector, 5, None, passages=True)


def test_passage_bulk_actions_keep_the_analysed_copies() -> None:
    doc = Document("d1", "Running dogs", title="T")
    rows = np.array([[0.5, 1.0]], dtype=np.float32)
    (action,) = bodies.bulk_actions("idx-v1", [doc], [rows], [[Passage(0, 12)]])
    assert action["_source"]["passages"] == [{"start": 0, "end": 12, "embedding": [0.5, 1.0]}]
    assert action["_source"]["text_terms"] == "run dog"

"""OpenSearch request bodies and the mapping, built by pure functions, checked against expected dicts."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends import engine_bodies
from hybrid_rerank.connector.backends import opensearch_bodies as bodies
from hybrid_rerank.connector.backends.base import Passage, Range
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import ConfigurationError


def test_filters_become_term_terms_and_range_clauses() -> None:
    clauses = bodies.filter_clauses({"topic": "moon", "tags": ["a", "b"], "year": Range(gte=2019, lte=None)})
    assert clauses == [
        {"term": {"metadata.topic": "moon"}},
        {"terms": {"metadata.tags": ["a", "b"]}},
        {"range": {"metadata.year": {"gte": 2019}}},
    ]
    assert bodies.filter_clauses(None) == []


def test_match_query_boosts_the_title_and_filters() -> None:
    multi = {
        "multi_match": {
            "query": "q",
            "fields": ["title^2", "text"],
            "type": "best_fields",
            "tie_breaker": 0.3,
        }
    }
    assert bodies.match_query("q", None, title_boost=2.0) == multi
    assert bodies.match_query("q", None)["multi_match"]["fields"] == ["title^1", "text"]
    assert bodies.match_query("q", {"topic": "x"}, 2.0) == {
        "bool": {"must": [multi], "filter": [{"term": {"metadata.topic": "x"}}]}
    }


def test_knn_query_filters_inside_the_graph_search() -> None:
    vector = np.array([0.5, 0.25], dtype=np.float32)
    assert bodies.knn_query(vector, 7, None) == {"knn": {"embedding": {"vector": [0.5, 0.25], "k": 7}}}
    assert bodies.knn_query(vector, 7, {"topic": "x"}) == {
        "knn": {
            "embedding": {
                "vector": [0.5, 0.25],
                "k": 7,
                "filter": {"bool": {"filter": [{"term": {"metadata.topic": "x"}}]}},
            }
        }
    }


def test_recall_is_one_msearch_with_both_legs() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    body = bodies.recall_msearch("q", vector, 5, None, "idx")
    assert body[0] == body[2] == {"index": "idx"}
    assert body[1]["query"] == bodies.match_query("q", None) and body[1]["size"] == 5
    assert body[3]["query"] == bodies.knn_query(vector, 5, None)
    assert "embedding" not in body[1]["_source"]  # vectors never travel back


def test_hybrid_body_holds_both_legs() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    body = bodies.hybrid_body("q", vector, 9, {"a": 1})
    assert body["query"]["hybrid"]["queries"] == [
        bodies.match_query("q", {"a": 1}),
        bodies.knn_query(vector, 9, {"a": 1}),
    ]


def test_bulk_actions_upsert_by_id() -> None:
    doc = Document("d1", "text", "title", {"k": "v"})
    (action,) = bodies.bulk_actions("idx-v1", [doc], [np.array([0.5, 1.0], dtype=np.float32)])
    assert action == {
        "_op_type": "index",
        "_index": "idx-v1",
        "_id": "d1",
        "_source": {
            "doc_id": "d1",
            "title": "title",
            "text": "text",
            "metadata": {"k": "v"},
            "embedding": [0.5, 1.0],
        },
    }


def test_a_content_hash_is_stored_when_computed_and_read_back() -> None:
    vector = [np.array([0.5], dtype=np.float32)]
    hashed = Document("d1", "text").hashed()
    (action,) = bodies.bulk_actions("idx-v1", [hashed], vector)
    assert action["_source"]["content_hash"] == hashed.content_hash and len(hashed.content_hash) == 32
    (plain,) = bodies.bulk_actions("idx-v1", [Document("d1", "text")], vector)
    assert "content_hash" not in plain["_source"]  # the same bytes as before hashes existed
    stored = {"_id": "d1", "_source": {"text": "text", "content_hash": "abc"}}
    assert bodies.document_from_hit(stored).content_hash == "abc"
    assert engine_bodies.content_hash_of(stored) == "abc"
    assert engine_bodies.content_hash_of({"_id": "d1", "_source": {}}) == ""
    assert engine_bodies.content_hash_of({"_id": "d1"}) == ""
    assert "content_hash" not in bodies.SOURCE_FIELDS  # search hits never carry it
    assert [*bodies.SOURCE_FIELDS, "content_hash"] == engine_bodies.STORED_FIELDS


def test_the_mapping_stores_the_hash_unindexed() -> None:
    properties = mappings.index_body(dimension=4, embedding_model="m")["mappings"]["properties"]
    assert properties["content_hash"] == {"type": "keyword", "index": False, "doc_values": False}
    assert {"content_hash": properties["content_hash"]} == engine_bodies.LATER_FIELDS


def test_responses_parse_into_documents_with_cosines() -> None:
    response = {
        "hits": {
            "hits": [{"_id": "a", "_score": 0.9, "_source": {"title": "T", "text": "x", "metadata": {}}}]
        }
    }
    (hit,) = bodies.parse_leg(response, vector_leg=True)
    assert hit.document == Document("a", "x", "T", {})
    assert hit.score == pytest.approx(0.8)  # (1 + cos) / 2 = 0.9
    assert bodies.parse_leg(response, vector_leg=False)[0].score == 0.9


def test_leg_scores_are_read_from_the_hybrid_explanation() -> None:
    explanation = {
        "details": [
            {
                "description": "min_max normalization of:",
                "details": [{"value": 3.5, "description": "max of:"}],
            },
            {
                "description": "min_max normalization of:",
                "details": [{"value": 0.75, "description": "within top 10"}],
            },
        ]
    }
    assert bodies.leg_scores_from_explanation(explanation) == (3.5, pytest.approx(0.5))
    only_knn = {"details": [{"details": [{"value": 1.0, "description": "within top 10"}]}]}
    assert bodies.leg_scores_from_explanation(only_knn) == (None, 1.0)


def test_bulk_failures_name_the_document_and_the_reason() -> None:
    item = {
        "index": {
            "_id": "b",
            "status": 400,
            "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse",
                "caused_by": {"type": "number_format_exception", "reason": 'For input string: "soon"'},
            },
        }
    }
    failure = bodies.failure_from_item(item)
    assert failure.doc_id == "b"
    assert failure.reason == (
        "HTTP 400: mapper_parsing_exception: failed to parse "
        '(number_format_exception: For input string: "soon")'
    )


def test_index_body_is_the_json_file_with_parameters() -> None:
    body = mappings.index_body(dimension=384, embedding_model="m", analyzer="cjk", m=24, ef_construction=256)
    template = mappings.load("index.json")
    assert body["settings"] == template["settings"]
    assert body["settings"]["index"]["auto_expand_replicas"] == "0-1"  # a replica once a node can hold it
    assert "number_of_replicas" not in body["settings"]["index"]
    properties = body["mappings"]["properties"]
    assert properties["title"]["analyzer"] == properties["text"]["analyzer"] == "cjk"
    assert properties["embedding"] == {
        "type": "knn_vector",
        "dimension": 384,
        "method": {
            "name": "hnsw",
            "engine": "lucene",
            "space_type": "cosinesimil",
            "parameters": {"m": 24, "ef_construction": 256},
        },
    }
    assert body["mappings"]["_meta"] == {
        "format": 1,
        "embedding_model": "m",
        "dimension": 384,
        "analyzer": "cjk",
    }
    assert mappings.load("index.json") == template  # callers get copies


def test_pipelines_carry_technique_weights_and_rank_constant() -> None:
    normalization = mappings.normalization_pipeline_body("l2", (0.3, 0.7))
    processor = normalization["phase_results_processors"][0]["normalization-processor"]
    assert processor == {
        "normalization": {"technique": "l2"},
        "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}},
    }
    rrf = mappings.rrf_pipeline_body(20)
    assert rrf["phase_results_processors"][0]["score-ranker-processor"] == {
        "combination": {"technique": "rrf", "rank_constant": 20}
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dimension": 0, "embedding_model": "m"}, "dimension"),
        ({"dimension": 4, "embedding_model": "m", "analyzer": "x"}, "analyzer"),
    ],
)
def test_bad_mapping_parameters_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mappings.index_body(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "plain words",
        "中文文本，带标点",
        'quotes " and \\ backslashes',
        "control \x01\x02\x1f chars",
        "é" * 1000,
        "",
    ],
)
def test_the_size_bound_never_underestimates(text: str) -> None:
    document = Document(
        id="d\u00e9", title="T\x00itle", text=text or "x", metadata={"k": ["v", 1, 2.5, True]}
    )
    vector = np.array([-1.2345678901234567e-300, 0.1, -0.3333333333333333, 1e300], dtype=np.float64)
    action = next(bodies.bulk_actions("idx", [document], [vector]))
    assert bodies.action_size_bound(action) >= bodies.action_size(action)


def test_range_filters_carry_each_bound_given() -> None:
    assert bodies.filter_clauses({"year": Range(gte=None, lte=2020)}) == [
        {"range": {"metadata.year": {"lte": 2020}}}
    ]
    assert bodies.filter_clauses({"year": Range(gte=2000, lte=2020)}) == [
        {"range": {"metadata.year": {"gte": 2000, "lte": 2020}}}
    ]


def test_the_hybrid_body_is_exactly_this() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    assert bodies.hybrid_body("q", vector, 9, None, title_boost=3.0) == {
        "size": 9,
        "_source": ["doc_id", "title", "text", "metadata"],
        "query": {
            "hybrid": {"queries": [bodies.match_query("q", None, 3.0), bodies.knn_query(vector, 9, None)]}
        },
    }
    assert bodies.hybrid_body("q", vector, 9, None, title_boost=3.0)["query"]["hybrid"]["queries"][0][
        "multi_match"
    ]["fields"] == ["title^3", "text"]


def test_a_hit_with_missing_fields_reads_as_empty_ones() -> None:
    assert bodies.document_from_hit({"_id": 7}) == Document("7", "", "", {})
    assert bodies.document_from_hit({"_id": "a", "_source": {"metadata": None}}) == Document("a", "", "", {})
    full = {"_id": "a", "_source": {"title": "T", "text": "x", "metadata": {"k": ["v", 1]}}}
    assert bodies.document_from_hit(full) == Document("a", "x", "T", {"k": ["v", 1]})


def test_explanation_details_without_a_value_are_skipped() -> None:
    explanation = {
        "details": [
            {"description": "min_max normalization of:", "details": []},
            {"description": "min_max normalization of:", "details": [{"description": "no value here"}]},
            {
                "description": "min_max normalization of:",
                "details": [{"value": 2.5, "description": "sum of:"}],
            },
        ]
    }
    assert bodies.leg_scores_from_explanation(explanation) == (2.5, None)  # no k-NN detail: None, not ""
    assert bodies.leg_scores_from_explanation({}) == (None, None)


@pytest.mark.parametrize(
    ("op", "doc_id", "reason"),
    [
        ({"_id": "a", "status": 400, "error": {}}, "a", "HTTP 400: error: "),
        ({"_id": "a", "status": 400, "error": {"type": "t"}}, "a", "HTTP 400: t: "),
        (
            {
                "_id": "a",
                "status": 400,
                "error": {"type": "t", "reason": "r", "caused_by": {"reason": "deep"}},
            },
            "a",
            "HTTP 400: t: r (: deep)",
        ),
        (
            {"_id": "a", "status": 400, "error": {"type": "t", "reason": "r", "caused_by": "text"}},
            "a",
            "HTTP 400: t: r",
        ),
        (
            {"_id": "a", "status": 400, "error": {"type": "t", "reason": "r", "caused_by": {"type": "x"}}},
            "a",
            "HTTP 400: t: r",
        ),
        ({"_id": "a", "status": 429, "error": "queue full"}, "a", "HTTP 429: queue full"),
        ({"_id": "a", "status": 500}, "a", "HTTP 500: status 500"),
        ({"status": 409, "error": None}, "?", "HTTP 409: status 409"),
        ({"_id": "a"}, "a", "HTTP ?: status None"),
    ],
)
def test_every_bulk_failure_shape_reads_as_one_line(op: dict[str, object], doc_id: str, reason: str) -> None:
    failure = bodies.failure_from_item({"index": op})
    assert (failure.doc_id, failure.reason) == (doc_id, reason)


def test_a_document_never_goes_out_without_its_vector() -> None:
    doc = Document("d1", "text")
    with pytest.raises(ValueError):
        list(bodies.bulk_actions("idx", [doc, Document("d2", "t")], [np.array([0.5], dtype=np.float32)]))


def test_the_size_bound_is_the_documented_formula() -> None:
    # 128 + 6 bytes per character of id, title and text (2 + 1 + 5) + the metadata's JSON (15 bytes)
    # + 26 bytes per vector component (3): 128 + 48 + 15 + 78 = 269; the JSON itself is 109 bytes.
    document = Document("d1", "héllo", "T", {"k": ["v", 1]})
    action = next(bodies.bulk_actions("idx", [document], [np.array([0.5, -1.0, 0.25], dtype=np.float32)]))
    assert (bodies.action_size(action), bodies.action_size_bound(action)) == (109, 269)


def test_a_response_without_hits_is_an_empty_leg() -> None:
    assert bodies.parse_leg({}, vector_leg=False) == []
    assert bodies.parse_leg({"hits": {}}, vector_leg=True) == []


def test_both_msearch_legs_carry_the_filters_the_size_and_the_title_boost() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    filters = {"topic": "x"}
    assert bodies.recall_msearch("q", vector, 5, filters, "idx", title_boost=2.0) == [
        {"index": "idx"},
        {"size": 5, "query": bodies.match_query("q", filters, 2.0), "_source": bodies.SOURCE_FIELDS},
        {"index": "idx"},
        {"size": 5, "query": bodies.knn_query(vector, 5, filters), "_source": bodies.SOURCE_FIELDS},
    ]
    assert bodies.match_query("q", filters, 2.0)["bool"]["must"][0]["multi_match"]["fields"][0] == "title^2"
    assert "filter" in bodies.knn_query(vector, 5, filters)["knn"]["embedding"]


def test_the_3x_hybrid_msearch_filters_once_and_runs_each_leg_beside_it() -> None:
    vector = np.array([1.0, 0.0], dtype=np.float32)
    pipeline: dict[str, object] = {"phase_results_processors": []}
    filters = {"topic": "x"}
    restriction = {"bool": {"filter": [{"term": {"metadata.topic": "x"}}]}}
    fused, bm25_leg, knn_leg = bodies.hybrid_msearch("q", vector, 7, filters, "idx", pipeline, 2.0)[1::2]
    assert fused == {
        "size": 7,
        "_source": ["doc_id", "title", "text", "metadata"],
        "search_pipeline": pipeline,
        "query": {
            "hybrid": {
                "queries": [bodies.match_query("q", None, 2.0), bodies.knn_query(vector, 7, None)],
                "pagination_depth": 7,
                "filter": restriction,
            }
        },
    }
    assert bm25_leg == {"size": 7, "_source": False, "query": bodies.match_query("q", filters, 2.0)}
    assert knn_leg == {"size": 7, "_source": False, "query": bodies.knn_query(vector, 7, filters)}
    unfiltered = bodies.hybrid_msearch("q", vector, 3, None, "idx", pipeline)
    assert unfiltered[0::2] == [{"index": "idx"}] * 3
    assert "filter" not in unfiltered[1]["query"]["hybrid"]


def test_3x_hybrid_hits_take_each_legs_raw_score_by_id() -> None:
    def hits(*pairs: tuple[str, float]) -> dict[str, object]:
        return {"hits": {"hits": [{"_id": i, "_score": s, "_source": {"text": i}} for i, s in pairs]}}

    responses = [
        hits(("a", 0.9), ("b", 0.4), ("c", 0.1)),
        hits(("a", 7.5), ("c", 2.0)),
        hits(("b", 0.9), ("a", 0.6)),
    ]
    parsed = [
        (hit.document.id, hit.score, bm25, cosine) for hit, bm25, cosine in bodies.hybrid_hits(responses)
    ]
    assert parsed == [
        ("a", 0.9, 7.5, pytest.approx(0.2)),
        ("b", 0.4, None, pytest.approx(0.8)),
        ("c", 0.1, 2.0, None),
    ]
    assert bodies.hybrid_hits([{}, {}, {}]) == []


def test_search_pipelines_by_fusion_and_z_score_only_where_the_node_has_it() -> None:
    assert bodies.search_pipeline("rrf", 0.5, 60, z_score=False) == (
        "hybrid-rerank-rrf-60",
        mappings.rrf_pipeline_body(60),
    )
    assert bodies.search_pipeline("minmax", 0.3, 60, z_score=True) == (
        "hybrid-rerank-minmax-0.3",
        mappings.normalization_pipeline_body("min_max", (0.3, 0.7)),
    )
    name, body = bodies.search_pipeline("zscore", 0.25, 60, z_score=True)
    assert name == "hybrid-rerank-zscore-0.25"
    processor = body["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"]["technique"] == "z_score"
    assert processor["combination"] == {
        "technique": "arithmetic_mean",
        "parameters": {"weights": [0.25, 0.75]},
    }
    with pytest.raises(ConfigurationError, match=r"z-score needs 3\.x"):
        bodies.search_pipeline("zscore", 0.5, 60, z_score=False)


def test_a_passage_index_adds_nested_vectors_and_records_its_layout() -> None:
    plain = mappings.index_body(dimension=4, embedding_model="m")
    body = engine_bodies.with_passages(mappings.index_body(dimension=4, embedding_model="m"), "200/50 tokens")
    assert body["mappings"]["properties"]["passages"] == {
        "type": "nested",
        "properties": {
            "start": {"type": "integer", "index": False},
            "end": {"type": "integer", "index": False},
            "embedding": plain["mappings"]["properties"]["embedding"],
        },
    }
    assert body["mappings"]["_meta"]["passages"] == "200/50 tokens"
    assert engine_bodies.with_passages(mappings.index_body(dimension=4, embedding_model="m"), "") == plain


def test_passage_knn_is_nested_max_with_the_best_passage_as_inner_hit() -> None:
    vector = np.array([0.5, 0.25], dtype=np.float32)
    assert bodies.knn_query(vector, 7, {"topic": "x"}, passages=True) == {
        "nested": {
            "path": "passages",
            "score_mode": "max",
            "query": {
                "knn": {
                    "passages.embedding": {
                        "vector": [0.5, 0.25],
                        "k": 7,
                        "filter": {"bool": {"filter": [{"term": {"metadata.topic": "x"}}]}},
                    }
                }
            },
            "inner_hits": {"size": 1, "_source": {"includes": ["passages.start", "passages.end"]}},
        }
    }
    body = bodies.recall_msearch("q", vector, 5, None, "idx", passages=True)
    assert body[3]["query"] == bodies.knn_query(vector, 5, None, passages=True)


def test_passage_bulk_actions_store_each_passage_with_offsets_and_no_document_vector() -> None:
    doc = Document("d1", "one two three", title="T")
    rows = np.array([[1.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    spans = [[Passage(0, 7), Passage(4, 13)]]
    (action,) = bodies.bulk_actions("idx-v1", [doc], [rows], passages=spans)
    assert action["_source"]["passages"] == [
        {"start": 0, "end": 7, "embedding": [1.0, 0.0]},
        {"start": 4, "end": 13, "embedding": [0.0, 0.5]},
    ]
    assert "embedding" not in action["_source"]
    assert bodies.action_size_bound(action) >= bodies.action_size(action)


def test_a_vector_hit_names_its_matched_passage() -> None:
    hit = {
        "_id": "d1",
        "_score": 0.9,
        "_source": {"title": "T", "text": "x"},
        "inner_hits": {"passages": {"hits": {"hits": [{"_source": {"start": 40, "end": 90}}]}}},
    }
    (leg,) = bodies.parse_leg({"hits": {"hits": [hit]}}, vector_leg=True)
    assert leg.passage == Passage(40, 90) and leg.score == pytest.approx(0.8)
    (plain,) = bodies.parse_leg({"hits": {"hits": [{**hit, "inner_hits": {}}]}}, vector_leg=True)
    assert plain.passage is None


def test_a_nested_knn_leg_is_read_from_the_combined_explanation_of_2_19() -> None:
    nested = {
        "value": 0.9,
        "description": "Score based on 1 child docs in range from 3 to 3, using score mode Max",
        "details": [
            {
                "value": 0.9,
                "description": "sum of:",
                "details": [{"value": 0.9, "description": "within top 5"}],
            }
        ],
    }
    matched_both = {
        "value": 1.0,
        "description": "combined score of:",
        "details": [{"value": 0.61, "description": "max plus 0.3 times others of:"}, nested],
    }
    explanation = {"details": [{"description": "min_max normalization of:", "details": [matched_both]}]}
    assert bodies.leg_scores_from_explanation(explanation) == (0.61, pytest.approx(0.8))
    vector_only = {**matched_both, "details": [{"value": 0.0, "description": "No matching clause"}, nested]}
    explanation = {"details": [{"description": "min_max normalization of:", "details": [vector_only]}]}
    assert bodies.leg_scores_from_explanation(explanation) == (None, pytest.approx(0.8))

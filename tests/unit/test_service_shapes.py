"""The service's pure parts, pinned by hand-computed cases: the rerank APIs' shapes, the checks that name
the field, the filters from JSON, and the error bodies of each API family."""

from __future__ import annotations

import math

import pytest

from hybrid_rerank.connector.backends.base import Range
from hybrid_rerank.connector.service.errors import ApiError, dialect_of, error_body, field_of
from hybrid_rerank.connector.service.limits import ServiceLimits
from hybrid_rerank.connector.service.readiness import RecentConsumers
from hybrid_rerank.connector.service.rerank_api import (
    candidates_of,
    check_rerank_input,
    cohere_reply,
    cohere_top_n,
    ranked,
    scores_by_index,
    sigmoid,
    tei_results,
)
from hybrid_rerank.connector.service.schemas import SearchBody
from hybrid_rerank.connector.service.search_api import parse_filters, search_call
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome

LIMITS = ServiceLimits(max_query_chars=10, max_documents=3, max_document_chars=5, max_k=20, max_page=4)


def test_sigmoid_is_exact_and_stable_at_the_extremes() -> None:
    assert sigmoid(0.0) == 0.5
    assert sigmoid(2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert sigmoid(-2.0) == pytest.approx(1 - sigmoid(2.0))
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0  # no OverflowError


def test_ranked_breaks_ties_by_request_order() -> None:
    assert ranked([0.1, 0.9, 0.5, 0.9]) == [1, 3, 2, 0]
    assert ranked([]) == []


def test_candidates_are_numbered_and_scores_map_back() -> None:
    assert candidates_of(["a", "b"]) == [Candidate("0", "a"), Candidate("1", "b")]
    outcome = RerankOutcome({"1": 2.0, "0": -1.0})
    assert scores_by_index(outcome, 2) == [-1.0, 2.0]


def test_a_failed_outcome_is_an_error_with_a_status_by_its_code() -> None:
    with pytest.raises(ApiError) as late:
        scores_by_index(RerankOutcome.failed("rerank deadline of 300 ms passed", "deadline"), 1)
    assert late.value.status == 429 and "deadline of 300 ms" in late.value.message
    with pytest.raises(ApiError) as down:
        scores_by_index(RerankOutcome.failed("broker down", "broker_unreachable"), 1)
    assert down.value.status == 503
    with pytest.raises(ApiError) as partial:
        scores_by_index(RerankOutcome({"0": 1.0}), 2)
    assert partial.value.status == 503 and "document 1" in partial.value.message


def test_tei_results_sorted_with_sigmoid_or_raw_scores() -> None:
    scores = [0.0, 2.0, -2.0]
    assert tei_results(scores, ["a", "b", "c"], raw_scores=True, return_text=False) == [
        {"index": 1, "score": 2.0},
        {"index": 0, "score": 0.0},
        {"index": 2, "score": -2.0},
    ]
    squashed = tei_results(scores, ["a", "b", "c"], raw_scores=False, return_text=True)
    assert [r["index"] for r in squashed] == [1, 0, 2]
    assert squashed[1] == {"index": 0, "score": 0.5, "text": "a"}
    assert squashed[0]["score"] == pytest.approx(0.8807970779778823)


def test_cohere_reply_top_n_documents_and_meta() -> None:
    documents = ["a", {"text": "b", "url": "u"}, "c"]
    reply = cohere_reply([0.0, 1.0, -1.0], documents, top_n=2, return_documents=True, version="2", model="m")
    assert reply["results"] == [
        {"index": 1, "relevance_score": pytest.approx(sigmoid(1.0)), "document": {"text": "b", "url": "u"}},
        {"index": 0, "relevance_score": 0.5, "document": {"text": "a"}},
    ]
    assert reply["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert reply["model"] == "m" and len(reply["id"]) == 36
    third = cohere_reply([math.log(0.5)], ["a"], top_n=1, return_documents=False, version="1", model="m")
    assert third["results"][0]["relevance_score"] == 0.333333333  # sigmoid(log 0.5) = 1/3, to 9 digits
    bare = cohere_reply([0.0], ["a"], top_n=1, return_documents=False, version="1", model="m")
    assert bare["results"] == [{"index": 0, "relevance_score": 0.5}]


def test_cohere_top_n_defaults_to_all_and_is_capped() -> None:
    assert cohere_top_n(None, 4) == 4
    assert cohere_top_n(10, 4) == 4
    assert cohere_top_n(1, 4) == 1
    with pytest.raises(ApiError) as zero:
        cohere_top_n(0, 4)
    assert zero.value.field == "top_n"


@pytest.mark.parametrize(
    ("query", "texts", "status", "field"),
    [
        ("", ["a"], 422, "query"),
        ("q" * 11, ["a"], 422, "query"),
        ("q", [], 422, "texts"),
        ("q", ["a", "b", "c", "d"], 413, "texts"),
        ("q", ["a", "toolong"], 413, "texts[1]"),
    ],
)
def test_rerank_input_limits_name_the_field(query: str, texts: list[str], status: int, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        check_rerank_input(query, texts, LIMITS, "texts")
    assert (refused.value.status, refused.value.field) == (status, field)


def test_rerank_input_at_the_limits_passes() -> None:
    check_rerank_input("q" * 10, ["abcde"] * 3, LIMITS, "texts")


def test_search_call_turns_page_into_offset_and_checks_each_field() -> None:
    call = search_call(SearchBody(query="q", k=5, page=3, deadline_ms=250), default_k=10, limits=LIMITS)
    assert (call.k, call.offset, call.deadline_ms, call.rerank, call.filters) == (5, 10, 250, True, None)
    assert search_call(SearchBody(query="q"), default_k=7, limits=LIMITS).k == 7
    for body, field in [
        (SearchBody(query="q", k=21), "k"),
        (SearchBody(query="q", page=5), "page"),
        (SearchBody(query="q", page=0), "page"),
        (SearchBody(query="q", deadline_ms=0), "deadline_ms"),
        (SearchBody(query=" "), "query"),
    ]:
        with pytest.raises(ApiError) as refused:
            search_call(body, default_k=10, limits=LIMITS)
        assert refused.value.field == field


def test_filters_from_json_and_from_cli_expressions() -> None:
    parsed = parse_filters(
        {"topic": "a", "tags": ["x", "y"], "year": {"gte": 2019}}, ["lang=en,fr", "n=1..2"]
    )
    assert parsed == {
        "topic": "a",
        "tags": ["x", "y"],
        "year": Range(2019, None),
        "lang": ["en", "fr"],
        "n": Range(1.0, 2.0),
    }
    assert parse_filters({}, []) is None
    for filters, expressions, field in [
        ({"year": {"gt": 1}}, [], "filters.year"),
        ({"year": {}}, [], "filters.year"),
        ({"tags": []}, [], "filters.tags"),
        ({}, ["ok=1", "broken"], "filter_expressions[1]"),
    ]:
        with pytest.raises(ApiError) as refused:
            parse_filters(filters, expressions)
        assert refused.value.field == field


def test_field_names_read_as_the_client_wrote_them() -> None:
    assert field_of(("body", "documents", 3, "text")) == "documents[3].text"
    assert field_of(("body",)) == "body"
    assert field_of(("body", "rerank", "documents")) == "documents"  # a job's kind tag is dropped
    assert field_of(("body", "rerank")) == "rerank"  # /search's own `rerank` field stays


def test_each_api_family_has_its_error_shape() -> None:
    assert dialect_of("/rerank") == "tei" and dialect_of("/v2/rerank") == "cohere"
    assert dialect_of("/search") == "ours" and dialect_of("/jobs/x") == "ours"
    assert error_body("tei", 413, "big", "texts") == {
        "error": "big",
        "error_type": "Validation",
        "field": "texts",
    }
    assert error_body("tei", 429, "late", None)["error_type"] == "Overloaded"
    assert error_body("tei", 503, "down", None)["error_type"] == "Unhealthy"
    assert error_body("tei", 502, "odd", None)["error_type"] == "Backend"
    assert error_body("cohere", 400, "bad", "top_n") == {"message": "bad", "field": "top_n"}
    assert error_body("ours", 422, "bad", "k") == {"error": "bad", "field": "k"}


def test_the_workers_are_asked_again_only_after_the_ttl_or_when_none_answered() -> None:
    now = [0.0]
    answers = [[], ["w1"], ["w1", "w2"]]
    asked: list[float] = []

    def ask() -> list[str]:
        asked.append(now[0])
        return answers[min(len(asked) - 1, len(answers) - 1)]

    recent = RecentConsumers(ask, ttl_s=10.0, clock=lambda: now[0])
    assert recent() == []  # nobody: not kept
    assert recent() == ["w1"]  # asked again at once
    now[0] = 9.9
    assert recent() == ["w1"] and len(asked) == 2  # kept within the ttl
    now[0] = 10.0
    assert recent() == ["w1", "w2"] and asked == [0.0, 0.0, 10.0]

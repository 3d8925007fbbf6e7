"""The remote reranker's pure parts: URLs and bodies per dialect, replies back to input order, batches, the
retry decision and its waits, and the API key kept out of every repr and message."""

from __future__ import annotations

import email.utils
import math

import httpx
import pytest

from hybrid_rerank.workers.errors import ConfigurationError, HybridRerankError
from hybrid_rerank.workers.runtime.remote import (
    RemoteRerankError,
    RemoteScorer,
    backoff_s,
    batch_ranges,
    endpoint_url,
    is_retryable,
    logit,
    redact_url,
    request_body,
    retry_after_s,
    scores_from_reply,
)

KEY = "sk-unit-test-key-0123456789"


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- URLs and bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "dialect", "url"),
    [
        ("http://tei:8080", "tei", "http://tei:8080/rerank"),
        ("http://tei:8080/", "tei", "http://tei:8080/rerank"),
        ("https://api.cohere.com", "cohere", "https://api.cohere.com/v2/rerank"),
        ("https://api.jina.ai/", "jina", "https://api.jina.ai/v1/rerank"),
        ("https://gateway.example/rerankers/", "jina", "https://gateway.example/rerankers/v1/rerank"),
    ],
)
def test_each_dialect_posts_to_its_path_under_the_base(base: str, dialect: str, url: str) -> None:
    assert endpoint_url(base, dialect) == url


@pytest.mark.parametrize(
    "base", ["tei:8080", "ftp://host", "http://", "http://host/?api_key=abc", "http://host/#frag"]
)
def test_a_base_url_that_is_not_plain_http_is_a_configuration_error(base: str) -> None:
    with pytest.raises(ConfigurationError, match="RERANK_REMOTE_URL") as caught:
        endpoint_url(base, "tei")
    assert "abc" not in str(caught.value)  # a key in the query string is not repeated


def test_an_unknown_dialect_names_the_ones_there_are() -> None:
    with pytest.raises(ConfigurationError, match="tei, cohere, jina"):
        endpoint_url("http://host", "openai")


def test_request_bodies_per_dialect() -> None:
    texts = ["a b", "c"]
    assert request_body("tei", "q", texts, "ignored") == {
        "query": "q",
        "texts": ["a b", "c"],
        "raw_scores": True,
        "truncate": True,
    }
    assert request_body("cohere", "q", texts, "rerank-v3.5") == {
        "model": "rerank-v3.5",
        "query": "q",
        "documents": ["a b", "c"],
        "top_n": 2,
    }
    assert request_body("jina", "q", texts, "jina-reranker-v2-base-multilingual") == {
        "model": "jina-reranker-v2-base-multilingual",
        "query": "q",
        "documents": ["a b", "c"],
        "top_n": 2,
        "return_documents": False,
    }
    assert "model" not in request_body("cohere", "q", texts, None)


# --- replies ---------------------------------------------------------------------------------------------


def test_tei_scores_sorted_by_score_come_back_in_input_order() -> None:
    reply = [{"index": 2, "score": 3.5}, {"index": 0, "score": 1.25}, {"index": 1, "score": -2.0}]
    assert scores_from_reply("tei", reply, 3) == [1.25, -2.0, 3.5]


@pytest.mark.parametrize("dialect", ["cohere", "jina"])
def test_relevance_scores_become_logits_in_input_order(dialect: str) -> None:
    logits = [0.7, -3.2, 12.0]
    results = [{"index": i, "relevance_score": float(f"{sigmoid(x):.9g}")} for i, x in enumerate(logits)]
    reply = {"id": "x", "results": list(reversed(results)), "meta": {}}
    assert scores_from_reply(dialect, reply, 3) == pytest.approx(logits, abs=1e-4)


def test_logit_inverts_the_sigmoid_and_stays_finite_at_the_edges() -> None:
    for x in (-8.0, -0.5, 0.0, 1e-4, 5.0):
        assert logit(sigmoid(x)) == pytest.approx(x, abs=1e-9)
    assert math.isfinite(logit(1.0)) and logit(1.0) > 20
    assert math.isfinite(logit(0.0)) and logit(0.0) < -20


@pytest.mark.parametrize(
    ("dialect", "reply", "problem"),
    [
        ("tei", {"results": []}, "expected a list"),
        ("cohere", [{"index": 0, "relevance_score": 0.5}], "an object with a results list"),
        ("tei", [{"index": 0, "score": 1.0}], "no score for 1 of 2 documents"),
        ("tei", [{"index": 0, "score": 1.0}, {"index": 0, "score": 2.0}], "index 0 answered twice"),
        ("tei", [{"index": 2, "score": 1.0}, {"index": 0, "score": 1.0}], "index 2, not one of 0..1"),
        ("tei", [{"index": True, "score": 1.0}, {"index": 1, "score": 1.0}], "index True"),
        ("jina", {"results": [{"index": 0, "relevance_score": "high"}]}, "not a finite number"),
        ("tei", [{"index": 0, "score": float("nan")}, {"index": 1, "score": 1.0}], "not a finite number"),
    ],
)
def test_a_reply_of_another_shape_is_refused_with_what_is_wrong(
    dialect: str, reply: object, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        scores_from_reply(dialect, reply, 2)


# --- batches ---------------------------------------------------------------------------------------------


def test_batches_cover_every_document_once_in_order() -> None:
    assert batch_ranges(10, 3) == [range(0, 3), range(3, 6), range(6, 9), range(9, 10)]
    assert batch_ranges(3, 3) == [range(0, 3)]
    assert batch_ranges(0, 3) == []
    merged = [i for batch in batch_ranges(97, 8) for i in batch]
    assert merged == list(range(97))
    with pytest.raises(ValueError):
        batch_ranges(3, 0)


# --- retries ---------------------------------------------------------------------------------------------


def test_only_no_answer_429_and_5xx_are_retried() -> None:
    assert all(is_retryable(status) for status in (None, 429, 500, 502, 503, 504))
    assert not any(is_retryable(status) for status in (400, 401, 403, 404, 405, 408, 413, 422))


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(" 0 ") == 0.0
    now = 1_800_000_000.0
    assert retry_after_s(email.utils.formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert retry_after_s(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "-3", "1.5"):
        assert retry_after_s(unreadable) is None


def test_backoff_doubles_and_jitter_keeps_it_between_half_and_whole() -> None:
    assert [backoff_s(n, 0.5, 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(3, 0.5, 0.0) == 1.0
    assert 1.0 <= backoff_s(3, 0.5, 0.999) < 2.0


# --- the key ---------------------------------------------------------------------------------------------


def test_redacted_urls_lose_user_info_and_query() -> None:
    assert (
        redact_url("https://user:pw@api.example:8443/v2/rerank?key=abc")
        == "https://api.example:8443/v2/rerank"
    )
    assert redact_url("http://host/rerank") == "http://host/rerank"


def test_the_key_is_in_no_repr_description_cache_key_or_error() -> None:
    scorer = RemoteScorer("https://bob:pw@api.example", KEY, "cohere", 5.0, 2, 96, "rerank-v3.5")
    shown = [repr(scorer), str(scorer), scorer.description, scorer.cache_key, scorer.model_name]
    assert all(KEY not in text and "pw" not in text for text in shown), shown
    assert "api_key=set" in repr(scorer)
    assert "api_key=none" in repr(RemoteScorer("http://host", None))

    echoed = httpx.Response(401, text=f'{{"message": "invalid api token {KEY}"}}')
    error = scorer._failure(401, scorer._excerpt(echoed), 1, retryable=False)
    assert isinstance(error, RemoteRerankError) and isinstance(error, HybridRerankError)
    for text in (str(error), repr(error), *map(str, error.args)):
        assert KEY not in text and "pw" not in text
    assert "https://api.example/v2/rerank" in str(error)
    assert "HTTP 401 (not retried)" in str(error) and "invalid api token ***" in str(error)
    assert "RERANK_REMOTE_API_KEY" in str(error)
    assert error.status == 401 and error.url == "https://api.example/v2/rerank"


def test_a_long_body_is_cut_to_an_excerpt() -> None:
    scorer = RemoteScorer("http://host", None)
    excerpt = scorer._excerpt(httpx.Response(500, text="x" * 5000))
    assert excerpt.endswith("...") and len(excerpt) < 400
    assert scorer._excerpt(httpx.Response(502, text="")) == "(empty body)"


def test_the_scorer_identity_follows_the_model_and_the_url() -> None:
    tei = RemoteScorer("http://tei:8080")
    assert tei.model_name == "http://tei:8080/rerank" and tei.interpolation_weight is None
    named = RemoteScorer("http://tei:8080", model="bge-reranker-base", name="bge-remote")
    assert named.model_name == "bge-remote"
    assert tei.cache_key != RemoteScorer("http://tei:8080", dialect="jina").cache_key


@pytest.mark.parametrize(("timeout_s", "retries", "max_batch"), [(0.0, 1, 8), (5.0, -1, 8), (5.0, 1, 0)])
def test_settings_out_of_range_are_refused(timeout_s: float, retries: int, max_batch: int) -> None:
    with pytest.raises(ConfigurationError):
        RemoteScorer("http://host", None, "tei", timeout_s, retries, max_batch)

"""The rerank wire protocol: each shape encoded and parsed in one place, malformed replies degrade visibly."""

from __future__ import annotations

import json

import pytest

from hybrid_rerank.workers.errors import RerankInputError
from hybrid_rerank.workers.protocol import (
    FALLBACK_CODES,
    Candidate,
    RerankOutcome,
    RerankRequest,
    batch_queue_for,
    encode_error,
    encode_reply,
    encode_request,
    max_readable_chars,
    parse_reply,
    parse_request,
    queue_for,
)


def test_a_request_survives_json_and_is_cut_to_what_the_model_reads() -> None:
    request = RerankRequest("moon", [Candidate("a", "x" * 50), Candidate("b", "short")], "m", use_cache=False)
    payload = json.loads(json.dumps(encode_request(request, max_chars=10)))
    parsed = parse_request(payload)
    assert parsed == RerankRequest("moon", [Candidate("a", "x" * 10), Candidate("b", "short")], "m", False)
    assert max_readable_chars(128, 2) == 128 * 2 * 12


@pytest.mark.parametrize(
    ("change", "message"),
    [({"model": 5}, "'model' must be a string"), ({"cache": "yes"}, "'cache' must be true or false")],
)
def test_request_options_are_typed(change: dict[str, object], message: str) -> None:
    payload = {"query": "q", "candidates": [{"id": "a", "text": "t"}], **change}
    with pytest.raises(RerankInputError, match=message):
        parse_request(payload)


def test_a_reply_carries_scores_and_the_models_weight() -> None:
    reply = json.loads(
        json.dumps(
            encode_reply("m", [("a", 1.5), ("b", -2.0)], cached=1, worker="w1", interpolation_weight=0.4)
        )
    )
    outcome = parse_reply("SUCCESS", reply)
    assert outcome.scores == {"a": 1.5, "b": -2.0}
    assert (outcome.model, outcome.interpolation_weight, outcome.cached, outcome.reason) == (
        "m",
        0.4,
        1,
        None,
    )
    assert parse_reply("SUCCESS", encode_reply("m", [("a", 1.0)])).interpolation_weight is None


@pytest.mark.parametrize(
    ("state", "reply", "reason", "code"),
    [
        ("FAILURE", "boom", "rerank task failure", "task_failed"),
        ("REVOKED", "expired", "the task expired in the queue ('expired')", "deadline"),
        ("SUCCESS", ["not", "an", "object"], "rerank worker replied", "malformed_reply"),
        ("SUCCESS", encode_error("bad request", "w1"), "refused the request: bad request", "worker_refused"),
        ("SUCCESS", encode_error("skipped", "w1", code="deadline"), "rerank deadline: skipped", "deadline"),
        (
            "SUCCESS",
            encode_error("scoring failed: 401", "w1", code="scoring_failed"),
            "rerank scoring_failed: scoring failed: 401",
            "scoring_failed",
        ),
        # A code outside the bounded set a worker may give is a plain refusal, never a new label.
        ("SUCCESS", {"error": "x", "code": "made_up"}, "refused", "worker_refused"),
        ("SUCCESS", {"error": "x", "code": "overloaded"}, "refused the request: x", "worker_refused"),
        ("SUCCESS", {"model": "m"}, "no 'scores' list", "malformed_reply"),
        ("SUCCESS", {"scores": [{"id": "a", "score": "high"}]}, "malformed score entry", "malformed_reply"),
        ("SUCCESS", {"scores": [{"id": 3, "score": 1.0}]}, "malformed score entry", "malformed_reply"),
        (
            "SUCCESS",
            {"scores": [{"id": "a", "score": float("nan")}]},
            "malformed score entry",
            "malformed_reply",
        ),
    ],
)
def test_a_malformed_reply_is_a_failed_outcome_that_says_why(
    state: str, reply: object, reason: str, code: str
) -> None:
    outcome = parse_reply(state, reply)
    assert outcome.scores is None and reason in (outcome.reason or "")
    assert outcome.code == code


def test_the_fallback_codes_are_a_fixed_set() -> None:
    """They are a Prometheus label and a field of API replies: adding one is a decision, not an accident."""
    assert FALLBACK_CODES == (
        "deadline",
        "broker_unreachable",
        "result_unavailable",
        "task_failed",
        "worker_refused",
        "malformed_reply",
        "invalid_request",
        "model_unavailable",
        "scoring_failed",
        "overloaded",
    )
    assert RerankOutcome.failed("why", "deadline") == RerankOutcome(None, "why", code="deadline")
    assert RerankOutcome.failed("why").code is None  # rerankers written before codes still build
    assert parse_reply("SUCCESS", encode_reply("m", [("a", 1.0)])).code is None


def test_the_batch_queue_is_the_models_queue_with_a_suffix() -> None:
    assert batch_queue_for("/models/My Cross-Encoder v2") == "rerank.My-Cross-Encoder-v2-a0d0fe36.batch"
    assert batch_queue_for("/a/model") != batch_queue_for("/b/model")


def test_an_out_of_range_weight_in_a_reply_is_ignored() -> None:
    reply = encode_reply("m", [("a", 1.0)], interpolation_weight=0.5) | {"interpolation_weight": 7}
    assert parse_reply("SUCCESS", reply).interpolation_weight is None


def test_both_sides_name_the_same_queue_for_the_same_model() -> None:
    assert queue_for("/models/my cross-encoder") == queue_for("/models/my cross-encoder")
    assert queue_for("/models/my cross-encoder").startswith("rerank.my-cross-encoder-")
    assert queue_for("/a/model") != queue_for("/b/model")  # same folder name, other model


@pytest.mark.parametrize(
    ("model", "queue"),
    [
        # The folder name, runs of other characters as one "-", then 8 hex digits of the SHA-1 of the
        # whole setting: pinned, since a worker and a connector of different versions must agree.
        ("/models/My Cross-Encoder v2", "rerank.My-Cross-Encoder-v2-a0d0fe36"),
        ("cross-encoder/ms-marco-MiniLM-L-6-v2", "rerank.ms-marco-MiniLM-L-6-v2-31487adb"),
        ("/models/--my  model--", "rerank.my-model-80171f4a"),  # no "-" at either end
        ("/models/Xmodel X", "rerank.Xmodel-X-5784d12c"),  # only "-" is stripped
        ("***", "rerank.model-36c3eaa0"),  # nothing readable left
        ("x" * 70, "rerank." + "x" * 60 + "-bbaad84b"),  # at most 60 readable characters
    ],
)
def test_queue_names_are_pinned(model: str, queue: str) -> None:
    assert queue_for(model) == queue


def test_requests_and_replies_encode_to_exactly_these_shapes() -> None:
    request = RerankRequest("q", [Candidate("a", "abcdef")], None)
    assert encode_request(request) == {
        "query": "q",
        "model": None,
        "cache": True,
        "candidates": [{"id": "a", "text": "abcdef"}],
    }
    assert encode_request(request, max_chars=2)["candidates"] == [{"id": "a", "text": "ab"}]
    assert encode_reply("m", [("a", 0.5)]) == {
        "model": "m",
        "scores": [{"id": "a", "score": 0.5}],
        "cached": 0,
        "worker": "",
        "interpolation_weight": None,
    }
    assert encode_error("bad") == {"error": "bad", "worker": ""}
    assert encode_error("bad", "w2") == {"error": "bad", "worker": "w2"}


def test_a_request_without_the_cache_flag_uses_the_cache() -> None:
    parsed = parse_request({"query": "q", "candidates": [{"id": "a", "text": "t"}]})
    assert parsed == RerankRequest("q", [Candidate("a", "t")], None, True)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (["q"], "request must be an object, got list"),
        ({"query": 3, "candidates": []}, "'query' must be a non-empty string"),
        ({"query": " ", "candidates": []}, "'query' must be a non-empty string"),
        ({"query": "q", "candidates": "a"}, "'candidates' must be a list"),
        ({"query": "q", "candidates": []}, "'candidates' is empty: there is nothing to rerank"),
        ({"query": "q", "candidates": [{"id": "a", "text": "t"}, 5]}, "candidate 1 must be an object"),
        (
            {"query": "q", "candidates": [{"id": 7, "text": "t"}]},
            "candidate 0: 'id' must be a non-empty string",
        ),
        ({"query": "q", "candidates": [{"id": "a"}]}, "candidate 0 (a): 'text' must be a string"),
        (
            {"query": "q", "candidates": [{"id": "a", "text": "x" * 1_000_001}]},
            "candidate 0 (a): text is 1,000,001 characters, over the limit of 1,000,000; send only what the "
            "model reads",
        ),
        (
            {"query": "q", "candidates": [{"id": "a", "text": "t"}], "model": 5},
            "'model' must be a string when given",
        ),
        (
            {"query": "q", "candidates": [{"id": "a", "text": "t"}], "cache": 1},
            "'cache' must be true or false when given",
        ),
    ],
)
def test_each_malformed_request_says_exactly_what_is_wrong(payload: object, message: str) -> None:
    with pytest.raises(RerankInputError) as refused:
        parse_request(payload)
    assert str(refused.value) == message


def test_a_candidate_of_exactly_the_limit_is_accepted() -> None:
    parsed = parse_request({"query": "q", "candidates": [{"id": "a", "text": "x" * 1_000_000}]})
    assert len(parsed.candidates[0].text) == 1_000_000


@pytest.mark.parametrize(
    ("weight", "parsed"),
    [(0.0, 0.0), (1.0, 1.0), (1, 1.0), (0.25, 0.25), (-0.1, None), (1.5, None), (2.0, None), (True, None)],
)
def test_the_weight_in_a_reply_is_kept_only_within_zero_to_one(weight: object, parsed: float | None) -> None:
    outcome = parse_reply("SUCCESS", {"scores": [], "interpolation_weight": weight})
    assert outcome.interpolation_weight == parsed
    assert type(outcome.interpolation_weight) is type(parsed)  # 1 becomes 1.0


def test_optional_reply_fields_of_the_wrong_type_are_dropped() -> None:
    outcome = parse_reply("SUCCESS", {"scores": [{"id": "a", "score": 2}], "model": 5, "cached": "3"})
    assert outcome.scores == {"a": 2.0} and outcome.reason is None
    assert (outcome.model, outcome.cached, outcome.interpolation_weight) == (None, 0, None)
    bare = parse_reply("SUCCESS", {"scores": []})
    assert (bare.scores, bare.model, bare.cached) == ({}, None, 0)


@pytest.mark.parametrize("item", ["a", ["a", 1.0], None])
def test_a_score_entry_that_is_not_an_object_is_a_failed_outcome(item: object) -> None:
    outcome = parse_reply("SUCCESS", {"scores": [{"id": "a", "score": 1.0}, item]})
    assert outcome.scores is None
    assert outcome.reason == f"rerank reply has a malformed score entry: {item!r}"

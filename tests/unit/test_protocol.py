"""The rerank wire protocol: each shape encoded and parsed in one place, malformed replies degrade visibly."""

from __future__ import annotations

import json

import pytest

from hybrid_rerank.workers.errors import RerankInputError
from hybrid_rerank.workers.protocol import (
    Candidate,
    RerankRequest,
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
    ("state", "reply", "reason"),
    [
        ("FAILURE", "boom", "rerank task failure"),
        ("SUCCESS", ["not", "an", "object"], "rerank worker replied"),
        ("SUCCESS", encode_error("bad request", "w1"), "refused the request: bad request"),
        ("SUCCESS", {"model": "m"}, "no 'scores' list"),
        ("SUCCESS", {"scores": [{"id": "a", "score": "high"}]}, "malformed score entry"),
        ("SUCCESS", {"scores": [{"id": 3, "score": 1.0}]}, "malformed score entry"),
        ("SUCCESS", {"scores": [{"id": "a", "score": float("nan")}]}, "malformed score entry"),
    ],
)
def test_a_malformed_reply_is_a_failed_outcome_that_says_why(state: str, reply: object, reason: str) -> None:
    outcome = parse_reply(state, reply)
    assert outcome.scores is None and reason in (outcome.reason or "")


def test_an_out_of_range_weight_in_a_reply_is_ignored() -> None:
    reply = encode_reply("m", [("a", 1.0)], interpolation_weight=0.5) | {"interpolation_weight": 7}
    assert parse_reply("SUCCESS", reply).interpolation_weight is None


def test_both_sides_name_the_same_queue_for_the_same_model() -> None:
    assert queue_for("/models/my cross-encoder") == queue_for("/models/my cross-encoder")
    assert queue_for("/models/my cross-encoder").startswith("rerank.my-cross-encoder-")
    assert queue_for("/a/model") != queue_for("/b/model")  # same folder name, other model

"""The embedding wire protocol (hand-made vectors, bad requests and replies), the embed queue in the Celery
app, and `index --workers` refusing to start without a broker."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hybrid_rerank.connector.cli import app as cli_app
from hybrid_rerank.connector.errors import ConnectorError
from hybrid_rerank.workers.celery_app import make_app
from hybrid_rerank.workers.embed_protocol import (
    MAX_EMBED_TEXTS,
    EmbedInputError,
    EmbedRequest,
    decode_vectors,
    embed_queue_for,
    encode_embed_error,
    encode_embed_reply,
    encode_embed_request,
    parse_embed_reply,
    parse_embed_request,
)
from hybrid_rerank.workers.errors import ConfigurationError
from hybrid_rerank.workers.protocol import MAX_CANDIDATE_CHARS, batch_queue_for, queue_for
from hybrid_rerank.workers.settings import load_worker_settings

ROWS = np.array([[1.0, -2.0, 0.5], [0.25, 0.0, -1.5]], dtype=np.float32)


def reply(**changes: Any) -> dict[str, Any]:
    good = encode_embed_reply("m", "passage: ", ROWS, dimension=3, worker="w1@host")
    return {**good, **changes}


def test_vectors_are_little_endian_float32_rows_in_base64() -> None:
    wire = reply()
    assert base64.b64decode(wire["vectors"]) == struct.pack("<6f", 1.0, -2.0, 0.5, 0.25, 0.0, -1.5)
    assert wire["count"] == 2 and wire["dimension"] == 3 and json.loads(json.dumps(wire)) == wire


def test_a_reply_round_trips_exactly() -> None:
    outcome = parse_embed_reply("SUCCESS", json.loads(json.dumps(reply())), ["a", "b"])
    assert outcome.code is None and outcome.reason is None and outcome.vectors is not None
    assert outcome.vectors.dtype == np.float32 and np.array_equal(outcome.vectors, ROWS)
    assert (outcome.dimension, outcome.prompt, outcome.model, outcome.worker) == (
        3,
        "passage: ",
        "m",
        "w1@host",
    )


def test_an_empty_request_is_a_probe_answered_with_the_dimension() -> None:
    probe = parse_embed_request(encode_embed_request(EmbedRequest([], "m", None)))
    assert probe == EmbedRequest([], "m", None)
    outcome = parse_embed_reply("SUCCESS", encode_embed_reply("m", "", np.zeros((0, 384)), dimension=384), 0)
    assert outcome.vectors is not None and outcome.vectors.shape == (0, 384) and outcome.dimension == 384


@pytest.mark.parametrize(
    ("state", "result", "code", "says"),
    [
        ("FAILURE", "WorkerLostError('signal 9')", "task_failed", "embedding task failure"),
        ("REVOKED", None, "task_failed", "embedding task revoked"),
        ("SUCCESS", ["not", "a", "mapping"], "malformed_reply", "replied"),
        ("SUCCESS", encode_embed_error("oom", "w", code="embedding_failed"), "embedding_failed", "oom"),
        ("SUCCESS", {"error": "bad", "code": "made-up"}, "worker_refused", "refused the request: bad"),
        ("SUCCESS", reply(count=3), "malformed_reply", "3 rows for 2 texts"),
        ("SUCCESS", reply(dimension=True), "malformed_reply", "lacks its dimension"),
        ("SUCCESS", reply(dimension=0), "malformed_reply", "lacks its dimension"),
        ("SUCCESS", reply(vectors=None), "malformed_reply", "lacks its dimension, count or vectors"),
        ("SUCCESS", reply(prompt=None), "malformed_reply", "lacks its model or prompt"),
        ("SUCCESS", reply(dimension=2), "malformed_reply", "not the 16 of 2 rows of 2 floats"),
        ("SUCCESS", reply(vectors="***"), "malformed_reply", "not base64"),
        (
            "SUCCESS",
            reply(vectors=encode_embed_reply("m", "", ROWS[:1], dimension=3)["vectors"]),
            "malformed_reply",
            "holds 12 bytes",
        ),
        (
            "SUCCESS",
            reply(vectors=base64.b64encode(struct.pack("<6f", *[float("nan")] * 6)).decode()),
            "malformed_reply",
            "NaN",
        ),
    ],
)
def test_bad_replies_are_failed_outcomes_that_say_why(
    state: str, result: object, code: str, says: str
) -> None:
    outcome = parse_embed_reply(state, result, ["a", "b"])
    assert outcome.vectors is None and outcome.code == code
    assert says in (outcome.reason or "")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ("texts", "request must be an object"),
        ({"texts": "one"}, "'texts' must be a list"),
        ({"texts": ["a", 3]}, "text 1 must be a string"),
        ({"texts": ["a"] * (MAX_EMBED_TEXTS + 1)}, "over the limit of 4,096"),
        ({"texts": ["x" * (MAX_CANDIDATE_CHARS + 1)]}, "text 0 is 1,000,001 characters"),
        ({"texts": ["a"], "model": 5}, "'model' must be a string"),
        ({"texts": ["a"], "prompt": 5}, "'prompt' must be a string or null"),
    ],
)
def test_bad_requests_are_refused_naming_the_problem(payload: object, says: str) -> None:
    with pytest.raises(EmbedInputError, match=says):
        parse_embed_request(payload)


def test_decode_checks_the_shape() -> None:
    encoded = reply()["vectors"]
    assert decode_vectors(encoded, 3, 2).shape == (3, 2)  # the same bytes, another valid shape
    with pytest.raises(EmbedInputError, match="holds 24 bytes, not the 28 of 7 rows"):
        decode_vectors(encoded, 7, 1)


def test_the_embed_queue_is_stable_and_apart_from_the_rerank_queues() -> None:
    queue = embed_queue_for("all-MiniLM-L6-v2")
    assert queue == embed_queue_for("all-MiniLM-L6-v2") and queue.startswith("embed.all-MiniLM-L6-v2-")
    assert queue not in {queue_for("all-MiniLM-L6-v2"), batch_queue_for("all-MiniLM-L6-v2")}
    assert embed_queue_for("/models/a/e5") != embed_queue_for("/models/b/e5")


def queues_of(**settings: Any) -> tuple[list[str], list[str]]:
    app = make_app(load_worker_settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", **settings))
    if settings.get("embed_model"):  # what the embedding task module reads, as plain values
        assert app.conf.hybrid_rerank_embed["model"] == settings["embed_model"]
    return [q.name for q in app.conf.task_queues], list(app.conf.include)


def test_a_worker_serves_embedding_only_rerank_only_or_both() -> None:
    embed_queue = embed_queue_for("bi")
    assert queues_of(rerank_model=None, embed_model="bi") == (
        [embed_queue],
        ["hybrid_rerank.workers.embedding"],
    )
    assert queues_of(rerank_model="ce", embed_model=None) == (
        [queue_for("ce"), batch_queue_for("ce")],
        ["hybrid_rerank.workers.tasks"],
    )
    both = queues_of(
        rerank_model="ce", embed_model="bi"
    )  # rerank first: live searches never wait on indexing
    assert both == (
        [queue_for("ce"), batch_queue_for("ce"), embed_queue],
        ["hybrid_rerank.workers.tasks", "hybrid_rerank.workers.embedding"],
    )
    with pytest.raises(ConfigurationError, match="RERANK_MODEL is off and EMBED_MODEL is unset"):
        queues_of(rerank_model="off", embed_model="")


def test_index_with_workers_needs_redis_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"_id": "a", "text": "moon"}) + "\n")
    result = CliRunner().invoke(cli_app, ["index", str(source), "--workers", "--index", "idx"])
    assert isinstance(result.exception, ConnectorError), result.output
    assert "--workers needs REDIS_URL" in str(result.exception)
    assert not (tmp_path / "data").exists()

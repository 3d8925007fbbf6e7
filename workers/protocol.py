"""The rerank wire protocol, written once: what the connector sends a worker and what it gets back.

A request is plain JSON, `{"query", "candidates": [{"id", "text"}], "model", "cache"}`, sent as the single
argument of the Celery task `TASK_NAME` on the model's queue (`queue_for`; offline batches on
`batch_queue_for`, which workers serve only when the first is empty). A reply is plain JSON too:
`{"model", "scores": [{"id", "score"}], "cached", "worker", "interpolation_weight"}`, or `{"error",
"worker", "code"?}` for a request the worker refused (`"code": "deadline"`: skipped, it could not end in
time). The reply carries the model's tuned interpolation weight, so
the searching side never needs to read a model folder that lives only on worker machines.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, TypeGuard, get_args

from hybrid_rerank.workers.errors import RerankInputError

TASK_NAME = "hybrid_rerank.rerank"
# The batch queue's suffix: offline work waits behind every interactive request (see `batch_queue_for`).
BATCH_QUEUE_SUFFIX = ".batch"
# A request carrying more text than this per candidate is a client bug, not a document to read.
MAX_CANDIDATE_CHARS = 1_000_000
# Generous characters per token: text beyond what the passages can cover is never tokenized or sent.
CHARS_PER_TOKEN = 12


@dataclass(frozen=True)
class Candidate:
    """One document as the reranker reads it: its id and the text to score against the query."""

    id: str
    text: str


@dataclass(frozen=True)
class RerankRequest:
    query: str
    candidates: list[Candidate]
    model: str | None = None  # the model the sender expects; a worker serving another refuses
    use_cache: bool = True  # False asks for fresh scores (benchmarks)


# Why a rerank fell back to the first-stage order, a fixed set (a Prometheus label, a field of API replies):
# - deadline: the deadline passed before every score came back (a batch's timeout too), a task expired in
#   the queue (REVOKED) before a worker took it, or a worker skipped it because it could not end in time
# - broker_unreachable: the task could not be sent (Redis down or refusing)
# - result_unavailable: the task was sent but its result could not be read (Redis went away meanwhile)
# - task_failed: the task itself ended in FAILURE (the worker raised)
# - worker_refused: a worker replied with an error (a bad request, or it serves another model)
# - malformed_reply: a reply that is not the protocol's shape, or lacks a score for a candidate sent
# - invalid_request: refused before sending (no candidates)
# - overloaded: not sent: the tasks queued ahead would keep it past its deadline (`workers.admission`)
# - model_unavailable: the in-process model could not be loaded
# - scoring_failed: the model raised while scoring (in-process, or on a worker: e.g. a remote rerank API
#   refused the call)
FallbackCode = Literal[
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
]
FALLBACK_CODES: tuple[FallbackCode, ...] = get_args(FallbackCode)
# The codes a worker's refusal may carry (`encode_error`); any other refusal is `worker_refused`.
WORKER_REPLY_CODES: tuple[FallbackCode, ...] = ("deadline", "scoring_failed")


@dataclass(frozen=True)
class RerankOutcome:
    """Scores by document id, or why there are none (a sentence in `reason`, one of `FallbackCode` in
    `code`). A failed rerank is an outcome, never an exception: the search keeps its first-stage order and
    says why. Scores are all or nothing: a request split over several tasks fails as a whole if one fails."""

    scores: dict[str, float] | None  # None: not reranked
    reason: str | None = None  # why not, when not
    model: str | None = None
    interpolation_weight: float | None = None  # the model's tuned weight, when its folder has one
    cached: int = 0  # scores that came from the score cache
    code: FallbackCode | None = None  # why not, for machines; None when reranked

    @classmethod
    def failed(cls, reason: str, code: FallbackCode | None = None) -> RerankOutcome:
        """A failed outcome. Every reranker in this package gives a code; None is left only for rerankers
        written before codes existed (a caller may count it as unknown)."""
        return cls(None, reason, code=code)


def queue_for(model: str) -> str:
    """`rerank.<readable name>-<hash>`: the same RERANK_MODEL on both sides gives the same queue."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", PurePath(model).name or model).strip("-")[:60] or "model"
    digest = hashlib.sha1(model.encode("utf-8")).hexdigest()[:8]
    return f"rerank.{readable}-{digest}"


def batch_queue_for(model: str) -> str:
    """The model's queue for offline work (`rerank_many`): a worker consumes it only when its interactive
    queue (`queue_for`) is empty, so a batch never delays a live search by more than one task."""
    return queue_for(model) + BATCH_QUEUE_SUFFIX


def max_readable_chars(max_length: int, max_passages: int) -> int:
    """Characters of a document a model with this window can read at most; the rest is never sent."""
    return max_length * max_passages * CHARS_PER_TOKEN


def encode_request(request: RerankRequest, max_chars: int | None = None) -> dict[str, Any]:
    """The request as the task's JSON argument, each text cut to what the model can read."""
    return {
        "query": request.query,
        "model": request.model,
        "cache": request.use_cache,
        "candidates": [{"id": c.id, "text": c.text[:max_chars]} for c in request.candidates],
    }


def parse_request(payload: object) -> RerankRequest:
    """Validate a request as a worker receives it; raises RerankInputError naming what is wrong."""
    if not isinstance(payload, Mapping):
        raise RerankInputError(f"request must be an object, got {type(payload).__name__}")
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RerankInputError("'query' must be a non-empty string")
    raw = payload.get("candidates")
    if not isinstance(raw, list):
        raise RerankInputError("'candidates' must be a list")
    if not raw:
        raise RerankInputError("'candidates' is empty: there is nothing to rerank")
    candidates: list[Candidate] = []
    for position, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise RerankInputError(f"candidate {position} must be an object")
        doc_id, text = item.get("id"), item.get("text")
        if not isinstance(doc_id, str) or not doc_id:
            raise RerankInputError(f"candidate {position}: 'id' must be a non-empty string")
        if not isinstance(text, str):
            raise RerankInputError(f"candidate {position} ({doc_id}): 'text' must be a string")
        if len(text) > MAX_CANDIDATE_CHARS:
            raise RerankInputError(
                f"candidate {position} ({doc_id}): text is {len(text):,} characters, over the limit of "
                f"{MAX_CANDIDATE_CHARS:,}; send only what the model reads"
            )
        candidates.append(Candidate(doc_id, text))
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise RerankInputError("'model' must be a string when given")
    use_cache = payload.get("cache", True)
    if not isinstance(use_cache, bool):
        raise RerankInputError("'cache' must be true or false when given")
    return RerankRequest(query, candidates, model, use_cache)


def encode_reply(
    model: str,
    scores: Sequence[tuple[str, float]],
    *,
    cached: int = 0,
    worker: str = "",
    interpolation_weight: float | None = None,
    batched: int | None = None,
) -> dict[str, Any]:
    """`batched`: how many requests shared the model call that scored this one (cross-request batching,
    RERANK_BATCH_WINDOW_MS); absent when the worker does not batch."""
    reply: dict[str, Any] = {
        "model": model,
        "scores": [{"id": doc_id, "score": score} for doc_id, score in scores],
        "cached": cached,
        "worker": worker,
        "interpolation_weight": interpolation_weight,
    }
    if batched is not None:
        reply["batched"] = batched
    return reply


def encode_error(message: str, worker: str = "", code: FallbackCode | None = None) -> dict[str, Any]:
    """A refusal; `code` (one of WORKER_REPLY_CODES) when it is not the request's fault, e.g. a task skipped
    because it could not end before its deadline."""
    reply = {"error": message, "worker": worker}
    if code is not None:
        reply["code"] = code
    return reply


def parse_reply(state: str, reply: object) -> RerankOutcome:
    """A task's final state and result as an outcome; anything malformed is a failed outcome that says so."""
    if state == "REVOKED":  # tasks are revoked only by expiry: it waited in the queue past its deadline
        return RerankOutcome.failed(
            f"rerank deadline passed: the task expired in the queue ({reply!r})", "deadline"
        )
    if state != "SUCCESS":
        return RerankOutcome.failed(f"rerank task {state.lower()}: {reply!r}", "task_failed")
    if not isinstance(reply, Mapping):
        return RerankOutcome.failed(f"rerank worker replied {reply!r}", "malformed_reply")
    if "error" in reply:
        code = reply.get("code")
        if code in WORKER_REPLY_CODES:  # bounded: a code from elsewhere is a plain refusal
            return RerankOutcome.failed(f"rerank {code}: {reply['error']}", code)
        return RerankOutcome.failed(f"rerank worker refused the request: {reply['error']}", "worker_refused")
    raw = reply.get("scores")
    if not isinstance(raw, list):
        return RerankOutcome.failed(f"rerank reply has no 'scores' list: {reply!r:.200}", "malformed_reply")
    scores: dict[str, float] = {}
    for item in raw:
        doc_id = item.get("id") if isinstance(item, Mapping) else None
        score = item.get("score") if isinstance(item, Mapping) else None
        if not isinstance(doc_id, str) or not _is_number(score):
            return RerankOutcome.failed(
                f"rerank reply has a malformed score entry: {item!r:.200}", "malformed_reply"
            )
        scores[doc_id] = float(score)
    weight = reply.get("interpolation_weight")
    model = reply.get("model")
    cached = reply.get("cached", 0)
    return RerankOutcome(
        scores,
        model=model if isinstance(model, str) else None,
        interpolation_weight=float(weight) if _is_number(weight) and 0.0 <= weight <= 1.0 else None,
        cached=cached if isinstance(cached, int) else 0,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

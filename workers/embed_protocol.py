"""The embedding wire protocol: what an indexing process sends an embedding worker and what it gets back.

A request is plain JSON, `{"model", "texts": [str], "prompt"}`, the single argument of the Celery task
`EMBED_TASK_NAME` on the model's queue (`embed_queue_for`). `prompt` is prepended to every text; null asks for
the passage prompt the model folder declares (the worker holds the folder, the indexing side may not). An
empty `texts` is a valid request: it asks only for the model's dimension and prompt.

A reply is `{"model", "dimension", "prompt", "count", "vectors", "worker"}`, `vectors` being the rows
(L2-normalised float32, little-endian, row after row) in base64: a third of the size of JSON numbers and
exact. A refusal is `{"error", "worker", "code"?}`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
import numpy.typing as npt

from hybrid_rerank.workers.errors import HybridRerankError
from hybrid_rerank.workers.protocol import MAX_CANDIDATE_CHARS, queue_for

EMBED_TASK_NAME = "hybrid_rerank.embed"
# A task carrying more texts than this is a client bug: batches are tens to hundreds of texts.
MAX_EMBED_TEXTS = 4096
# Little-endian float32 on the wire, whatever the machines' own order.
WIRE_DTYPE = np.dtype("<f4")

# Why a batch came back without vectors, a fixed set:
# - task_failed: the task ended in FAILURE (e.g. the worker process died and Celery gave up on it)
# - timeout: no reply within the client's wait for one task
# - worker_refused: the worker refused the request (a bad request, or it serves another model)
# - embedding_failed: the model raised while embedding
# - malformed_reply: a reply that is not the protocol's shape, or not as many rows as texts sent
EmbedFailureCode = Literal["task_failed", "timeout", "worker_refused", "embedding_failed", "malformed_reply"]
EMBED_FAILURE_CODES: tuple[EmbedFailureCode, ...] = get_args(EmbedFailureCode)
# The codes a worker's refusal may carry; any other refusal is `worker_refused`.
EMBED_WORKER_CODES: tuple[EmbedFailureCode, ...] = ("embedding_failed",)


class EmbedInputError(HybridRerankError, ValueError):
    """An embedding request that does not have the documented shape."""


@dataclass(frozen=True)
class EmbedRequest:
    texts: list[str]
    model: str | None = None  # the model the sender expects; a worker serving another refuses
    prompt: str | None = None  # None: the passage prompt the model folder declares


@dataclass(frozen=True)
class EmbedOutcome:
    """Rows for the texts sent, or why there are none (`reason` for people, `code` for machines)."""

    vectors: npt.NDArray[np.float32] | None
    dimension: int = 0
    prompt: str = ""
    model: str | None = None
    worker: str = ""
    reason: str | None = None
    code: EmbedFailureCode | None = None

    @classmethod
    def failed(cls, reason: str, code: EmbedFailureCode) -> EmbedOutcome:
        return cls(None, reason=reason, code=code)


def embed_queue_for(model: str) -> str:
    """`embed.<readable name>-<hash>`: the same model name on both sides gives the same queue, distinct
    from any rerank queue (`queue_for`) of the same name."""
    return "embed." + queue_for(model).removeprefix("rerank.")


def encode_embed_request(request: EmbedRequest) -> dict[str, Any]:
    return {"model": request.model, "texts": list(request.texts), "prompt": request.prompt}


def parse_embed_request(payload: object) -> EmbedRequest:
    """Validate a request as a worker receives it; raises EmbedInputError naming what is wrong."""
    if not isinstance(payload, Mapping):
        raise EmbedInputError(f"request must be an object, got {type(payload).__name__}")
    texts = payload.get("texts")
    if not isinstance(texts, list):
        raise EmbedInputError("'texts' must be a list of strings")
    if len(texts) > MAX_EMBED_TEXTS:
        raise EmbedInputError(f"{len(texts):,} texts in one task, over the limit of {MAX_EMBED_TEXTS:,}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise EmbedInputError(f"text {position} must be a string, got {type(text).__name__}")
        if len(text) > MAX_CANDIDATE_CHARS:
            raise EmbedInputError(
                f"text {position} is {len(text):,} characters, over the limit of {MAX_CANDIDATE_CHARS:,}"
            )
    model, prompt = payload.get("model"), payload.get("prompt")
    if model is not None and not isinstance(model, str):
        raise EmbedInputError("'model' must be a string when given")
    if prompt is not None and not isinstance(prompt, str):
        raise EmbedInputError("'prompt' must be a string or null")
    return EmbedRequest(texts, model, prompt)


def encode_vectors(vectors: npt.ArrayLike) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype=WIRE_DTYPE).tobytes()).decode("ascii")


def decode_vectors(encoded: str, count: int, dimension: int) -> npt.NDArray[np.float32]:
    """`count` rows of `dimension` floats; raises EmbedInputError when the data is not exactly that."""
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise EmbedInputError(f"'vectors' is not base64: {exc}") from exc
    expected = count * dimension * WIRE_DTYPE.itemsize
    if len(raw) != expected:
        raise EmbedInputError(
            f"'vectors' holds {len(raw)} bytes, not the {expected} of {count} rows of {dimension} floats"
        )
    rows = np.frombuffer(raw, dtype=WIRE_DTYPE).astype(np.float32).reshape(count, dimension)
    if not np.isfinite(rows).all():
        raise EmbedInputError("'vectors' holds a NaN or infinite value")
    return rows


def encode_embed_reply(
    model: str, prompt: str, vectors: npt.ArrayLike, *, dimension: int, worker: str = ""
) -> dict[str, Any]:
    rows = np.asarray(vectors, dtype=np.float32).reshape(-1, dimension)
    return {
        "model": model,
        "dimension": dimension,
        "prompt": prompt,
        "count": int(rows.shape[0]),
        "vectors": encode_vectors(rows),
        "worker": worker,
    }


def encode_embed_error(
    message: str, worker: str = "", code: EmbedFailureCode | None = None
) -> dict[str, Any]:
    reply: dict[str, Any] = {"error": message, "worker": worker}
    if code is not None:
        reply["code"] = code
    return reply


def parse_embed_reply(state: str, reply: object, texts: Sequence[str] | int) -> EmbedOutcome:
    """A task's final state and result as an outcome for the `texts` sent (or their number); anything
    malformed is a failed outcome that says so, never an exception."""
    expected = texts if isinstance(texts, int) else len(texts)
    if state != "SUCCESS":
        return EmbedOutcome.failed(f"embedding task {state.lower()}: {reply!r:.300}", "task_failed")
    if not isinstance(reply, Mapping):
        return EmbedOutcome.failed(f"embedding worker replied {reply!r:.200}", "malformed_reply")
    worker = reply.get("worker")
    worker = worker if isinstance(worker, str) else ""
    if "error" in reply:
        code = reply.get("code")
        if code in EMBED_WORKER_CODES:
            return EmbedOutcome.failed(f"embedding failed on {worker or 'a worker'}: {reply['error']}", code)
        return EmbedOutcome.failed(
            f"embedding worker refused the request: {reply['error']}", "worker_refused"
        )
    dimension, count = reply.get("dimension"), reply.get("count")
    prompt, model, encoded = reply.get("prompt"), reply.get("model"), reply.get("vectors")
    if not _is_count(dimension) or dimension < 1 or not _is_count(count) or not isinstance(encoded, str):
        return EmbedOutcome.failed(
            f"embedding reply lacks its dimension, count or vectors: {reply!r:.200}", "malformed_reply"
        )
    if count != expected:
        return EmbedOutcome.failed(
            f"embedding reply has {count} rows for {expected} texts", "malformed_reply"
        )
    if not isinstance(prompt, str) or not isinstance(model, str):
        return EmbedOutcome.failed("embedding reply lacks its model or prompt", "malformed_reply")
    try:
        vectors = decode_vectors(encoded, count, dimension)
    except EmbedInputError as exc:
        return EmbedOutcome.failed(f"embedding reply: {exc}", "malformed_reply")
    return EmbedOutcome(vectors, dimension=dimension, prompt=prompt, model=model, worker=worker)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

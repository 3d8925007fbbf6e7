"""The bi-encoder on the worker fleet: `RemoteEmbedder` has the `Embedder` interface indexing uses
(`model_name`, `dimension`, `embed_documents`, `embed_texts`) and sends the texts, a task per
`task_texts`, to the Celery embedding workers serving the model (`workers.embedding`).

Several tasks are in flight at once (2 per worker unless told), results are put back in input order, and a
task that failed, was refused or had no reply within `task_timeout_s` is sent again, up to `retries` times,
before indexing stops with an error that says which batch and why. It writes nothing itself: the indexer
writes each batch once its vectors are all back, so a worker killed mid-task costs a redelivery (late
acknowledgement) or a resend, never a document.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_rerank.connector.backends.base import Vector
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import ProgressCallback, prompt_label
from hybrid_rerank.connector.errors import ConnectorError, describe_exception
from hybrid_rerank.workers.embed_protocol import (
    EMBED_TASK_NAME,
    EmbedOutcome,
    EmbedRequest,
    embed_queue_for,
    encode_embed_request,
    parse_embed_reply,
)
from hybrid_rerank.workers.health import BrokerUnreachableError, consumers

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

log = logging.getLogger("hybrid_rerank.connector.remote_embedder")
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class EmbeddingWorkersError(ConnectorError):
    """No embedding worker serves the model, or a batch could not be embedded after its retries."""


@dataclass
class _Sent:
    """One task in flight: the batch it carries (by position) and when it was sent."""

    batch: int
    result: AsyncResult | None  # None: it could not be sent
    sent_at: float
    error: str = ""


class RemoteEmbedder:
    """Connects (finds the workers, asks one for the model's dimension and passage prompt) on first use of
    `model_name` or `dimension`, so a missing fleet fails before the index is touched."""

    def __init__(
        self,
        app: Celery,
        model: str,
        *,
        passage_prompt: str | None = None,
        task_texts: int = 64,
        in_flight: int | None = None,
        task_timeout_s: float = 900.0,
        retries: int = 3,
        probe_timeout_s: float = 60.0,
        poll_s: float = 0.02,
    ) -> None:
        """`passage_prompt`: None takes the one the workers' model folder declares, "" means none."""
        self.app = app
        self.model_id = model
        self.queue = embed_queue_for(model)
        self.requested_prompt = passage_prompt
        self.task_texts = task_texts
        self.configured_in_flight = in_flight
        self.task_timeout_s = task_timeout_s
        self.retries = retries
        self.probe_timeout_s = probe_timeout_s
        self.poll_s = poll_s
        self.workers: list[str] = []
        self.resent = 0  # tasks sent again after a failure or timeout, over this embedder's life
        self._dimension: int | None = None
        self._passage_prompt = ""

    @property
    def model_name(self) -> str:
        """What an index records: the model and its passage prompt, as `Embedder.model_name`."""
        self.connect()
        return prompt_label(self.model_id, self._passage_prompt)

    @property
    def dimension(self) -> int:
        self.connect()
        assert self._dimension is not None
        return self._dimension

    @property
    def passage_prompt(self) -> str:
        self.connect()
        return self._passage_prompt

    @property
    def in_flight(self) -> int:
        return self.configured_in_flight or 2 * max(len(self.workers), 1)

    def connect(self) -> None:
        """Find the workers consuming the model's queue and ask one for the dimension and prompt; raises
        EmbeddingWorkersError, saying how to start one, when none serves it."""
        if self._dimension is not None:
            return
        try:
            self.workers = consumers(self.app, self.queue, timeout_s=3.0)
        except BrokerUnreachableError as exc:
            raise EmbeddingWorkersError(f"--workers needs the Celery broker: {exc}") from exc
        if not self.workers:
            raise EmbeddingWorkersError(
                f"no embedding worker serves {self.model_id!r} (queue {self.queue}): start one with "
                f"EMBED_MODEL={self.model_id} celery -A hybrid_rerank.workers worker, or index without "
                "--workers; nothing was written"
            )
        sent = self._send(0, EmbedRequest([], self.model_id, self.requested_prompt))
        outcome = self._wait(sent, 0, self.probe_timeout_s)
        if outcome.vectors is None:
            raise EmbeddingWorkersError(
                f"the embedding workers of {self.model_id!r} ({', '.join(self.workers)}) did not answer a "
                f"probe within {self.probe_timeout_s:.0f}s: {outcome.reason}; nothing was written"
            )
        self._dimension, self._passage_prompt = outcome.dimension, outcome.prompt
        log.info(
            "embedding on %d workers (%s), %d dimensions", len(self.workers), self.queue, outcome.dimension
        )

    def embed_documents(
        self, documents: Sequence[Document], progress: ProgressCallback | None = None
    ) -> Vector:
        """The documents' vectors, each with the passage prompt (as `Embedder.embed_documents`)."""
        self.connect()
        return self._embed([doc.full_text for doc in documents], self._passage_prompt, progress)

    def embed_texts(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> Vector:
        """Vectors of `texts` as they are, no prompt added (as `Embedder.embed_texts`)."""
        self.connect()
        return self._embed(list(texts), "", progress)

    def _embed(self, texts: list[str], prompt: str, progress: ProgressCallback | None) -> Vector:
        dimension = self.dimension
        size = self.task_texts
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        rows: list[Vector | None] = [None] * len(batches)
        attempts = [0] * len(batches)
        waiting = deque(range(len(batches)))
        running: list[_Sent] = []
        done = 0
        while waiting or running:
            while waiting and len(running) < self.in_flight:
                batch = waiting.popleft()
                attempts[batch] += 1
                running.append(self._send(batch, EmbedRequest(batches[batch], self.model_id, prompt)))
            finished = [
                (sent, outcome)
                for sent in running
                if (outcome := self._poll(sent, len(batches[sent.batch]), self.task_timeout_s))
            ]
            for sent, outcome in finished:
                running.remove(sent)
                if outcome.vectors is not None and outcome.dimension == dimension:
                    rows[sent.batch] = outcome.vectors
                    done += len(batches[sent.batch])
                    if progress is not None:
                        progress(done, len(texts))
                    continue
                reason = outcome.reason or f"{outcome.dimension} dimensions, not {dimension}"
                first = sent.batch * size
                if attempts[sent.batch] > self.retries:
                    raise EmbeddingWorkersError(
                        f"the batch of texts {first}-{first + len(batches[sent.batch]) - 1} failed "
                        f"{attempts[sent.batch]} times on the embedding workers; the last time: {reason}. "
                        "The batches before it are written; run the same command again to resume"
                    )
                log.warning("embedding batch from text %d sent again: %s", first, reason)
                self.resent += 1
                waiting.appendleft(sent.batch)
            if not finished:
                time.sleep(self.poll_s)
        if not rows:
            return np.zeros((0, dimension), dtype=np.float32)
        return np.vstack([row for row in rows if row is not None])

    def _send(self, batch: int, request: EmbedRequest) -> _Sent:
        now = time.monotonic()
        try:
            result = self.app.send_task(
                EMBED_TASK_NAME, args=[encode_embed_request(request)], queue=self.queue
            )
        except Exception as exc:  # kombu / redis errors: the broker refused or is down
            time.sleep(1.0)  # a resend right away would meet the same broker
            return _Sent(batch, None, now, f"could not send the task: {describe_exception(exc)}")
        return _Sent(batch, result, now)

    def _poll(self, sent: _Sent, texts: int, timeout_s: float) -> EmbedOutcome | None:
        """The task's outcome once it ended or had no reply within `timeout_s`; None while it runs."""
        if sent.result is None:
            return EmbedOutcome.failed(sent.error, "task_failed")
        try:
            state = sent.result.state
            if state in READY_STATES:
                outcome = parse_embed_reply(state, sent.result.result, texts)
                sent.result.forget()  # the vectors are in hand: free the result backend
                return outcome
        except Exception as exc:  # the result backend (Redis) went away: the task may still end
            log.warning("could not read an embedding result: %s", describe_exception(exc))
        if time.monotonic() - sent.sent_at > timeout_s:
            return EmbedOutcome.failed(f"no reply within {timeout_s:g}s", "timeout")
        return None

    def _wait(self, sent: _Sent, texts: int, timeout_s: float) -> EmbedOutcome:
        while (outcome := self._poll(sent, texts, timeout_s)) is None:
            time.sleep(self.poll_s)
        return outcome


def describe(embedder: Any) -> str:
    """Where an embedder embeds, for the CLI's first line."""
    if isinstance(embedder, RemoteEmbedder):
        return f"{len(embedder.workers)} embedding workers on queue {embedder.queue}"
    return str(embedder.source.origin)

"""What the connector calls to get candidates reranked: the `Reranker` protocol and its two
implementations, in this process (`InProcessReranker`) or on Celery workers over Redis (`CeleryReranker`,
synchronous with a deadline, async with submit/collect, and a batch form for offline jobs).

A reranker never raises for a failed stage: it returns an outcome that says why it did not rerank, and the
search keeps the first-stage order with `reranked=False`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from hybrid_rerank.workers.errors import ModelLoadError, describe_exception
from hybrid_rerank.workers.protocol import (
    TASK_NAME,
    Candidate,
    RerankOutcome,
    RerankRequest,
    encode_request,
    parse_reply,
    queue_for,
)

if TYPE_CHECKING:
    from celery import Celery

    from hybrid_rerank.workers.scorer import CrossEncoderScorer

RerankProgress = Callable[[int, int], None]  # (queries done, total)
GET_OVERRUN_S = 1.0
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.02


class Reranker(Protocol):
    """Scores for one query's candidates, or the reason there are none."""

    description: str

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> RerankOutcome: ...

    def available(self) -> str | None:
        """None when the reranker can serve now, else why not. The default cannot tell in advance (remote
        workers say so per request); an in-process model loads here, so a tool can skip reranking at once."""
        return None

    def rerank_many(
        self,
        requests: Sequence[tuple[str, Sequence[Candidate]]],
        *,
        progress: RerankProgress | None = None,
    ) -> list[RerankOutcome]:
        """Many queries for an offline job. The default reranks them one by one; a reranker that can work
        through a batch in parallel (Celery workers) overrides it."""
        outcomes = []
        for done, (query, candidates) in enumerate(requests, start=1):
            outcomes.append(self.rerank(query, candidates))
            if progress is not None:
                progress(done, len(requests))
        return outcomes


class InProcessReranker(Reranker):
    """Scores in this process with the reranking core the workers use, so results are the same."""

    def __init__(self, scorer: CrossEncoderScorer) -> None:
        self.scorer = scorer
        self.description = f"in-process cross-encoder {scorer.description}"
        self._load_error: str | None = None

    def available(self) -> str | None:
        """Load the model now; None when it loaded, else why not (and reranking then degrades)."""
        if self._load_error is None:
            try:
                self.scorer.load()
            except ModelLoadError as exc:
                self._load_error = str(exc)
        return self._load_error

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> RerankOutcome:
        failed = self.available()  # a failed load is not retried on every query
        if failed is not None:
            return RerankOutcome.failed(failed)
        try:
            scored = self.scorer.score(query, candidates)
        except Exception as exc:  # a failed stage degrades visibly instead of failing the search
            return RerankOutcome.failed(f"reranking failed: {describe_exception(exc)}")
        return RerankOutcome(
            {s.id: s.score for s in scored},
            model=self.scorer.model_name,
            interpolation_weight=self.scorer.interpolation_weight,
        )


class CeleryReranker(Reranker):
    """Sends a query's candidates (cut to what the model reads) to the workers serving `model` and waits up
    to the deadline; past it, or with the broker unreachable, the outcome says why there are no scores."""

    def __init__(
        self, app: Celery, model: str, *, deadline_ms: int, max_chars: int, use_cache: bool = True
    ) -> None:
        self.app = app
        self.use_cache = use_cache
        self.model = model
        self.queue = queue_for(model)
        self.deadline_s = deadline_ms / 1000.0
        self.max_chars = max_chars
        self.description = f"Celery workers on queue {self.queue} ({model}), deadline {deadline_ms} ms"

    # --- async form ------------------------------------------------------------------------------------

    def submit(self, query: str, candidates: Sequence[Candidate], *, expires_s: float | None = None) -> str:
        """Queue one rerank and return its task id; raises if the broker cannot be reached."""
        request = RerankRequest(query, list(candidates), self.model, self.use_cache)
        result = self.app.send_task(
            TASK_NAME,
            args=[encode_request(request, self.max_chars)],
            queue=self.queue,
            expires=expires_s,  # a worker discards a task that starts too late to matter
            retry=True,  # with the fail-fast policy of make_app(fail_fast=True)
        )
        return str(result.id)

    def collect(self, task_id: str, timeout_s: float | None = None) -> RerankOutcome | None:
        """The outcome of a submitted task, waiting up to `timeout_s` (None: do not wait); None while it is
        still pending."""
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import AsyncResult

        result = AsyncResult(task_id, app=self.app)
        try:
            wait_s = timeout_s or 0.0
            deadline = time.monotonic() + wait_s
            # Celery's `get` is told of the result at once (Redis pub/sub) but its wait loop can overrun a
            # timeout by up to a second; so it waits only while more than that second is left, and the last
            # stretch polls the result key (a GET on loopback costs well under a millisecond).
            if wait_s > GET_OVERRUN_S + 0.1:
                with contextlib.suppress(CeleryTimeout):
                    result.get(timeout=wait_s - GET_OVERRUN_S, propagate=False)
            pause = POLL_FIRST_S
            while not result.ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(pause, remaining))
                pause = min(pause * 1.5, POLL_MAX_S)
            reply = result.get(timeout=1.0, propagate=False)
            state = result.state
            result.forget()  # read once: drop it from Redis now instead of at expiry
        except CeleryTimeout:
            return None
        except Exception as exc:  # the result backend (Redis) is down
            return RerankOutcome.failed(f"rerank result unavailable: {describe_exception(exc)}")
        return parse_reply(state, reply)

    # --- synchronous with a deadline -------------------------------------------------------------------

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> RerankOutcome:
        started = time.monotonic()
        try:
            task_id = self.submit(query, candidates, expires_s=self.deadline_s)
        except Exception as exc:  # kombu/redis errors: the broker is unreachable
            return RerankOutcome.failed(f"rerank broker unreachable: {describe_exception(exc)}")
        remaining = self.deadline_s - (time.monotonic() - started)
        outcome = self.collect(task_id, timeout_s=max(remaining, 0.001))
        if outcome is None:  # the late result, if any, expires unread
            return RerankOutcome.failed(f"rerank deadline of {self.deadline_s * 1000:.0f} ms passed")
        return outcome

    # --- batch form --------------------------------------------------------------------------------------

    def rerank_many(
        self,
        requests: Sequence[tuple[str, Sequence[Candidate]]],
        *,
        progress: RerankProgress | None = None,
        timeout_s: float = 3600.0,
    ) -> list[RerankOutcome]:
        """Rerank many queries for an offline job: queue them all (the workers take them in parallel), then
        collect each in order."""
        task_ids = [self.submit(query, candidates) for query, candidates in requests]
        deadline = time.monotonic() + timeout_s
        outcomes: list[RerankOutcome] = []
        for done, task_id in enumerate(task_ids, start=1):
            outcome = self.collect(task_id, timeout_s=max(deadline - time.monotonic(), 0.001))
            outcomes.append(outcome or RerankOutcome.failed(f"batch timeout of {timeout_s:.0f} s passed"))
            if progress is not None:
                progress(done, len(task_ids))
        return outcomes

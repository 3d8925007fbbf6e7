"""Reranking on Celery workers: send the top-M candidates (ids and text, cut to what the model reads), wait
up to a deadline, and fall back to the first-stage order, flagged with the reason, when the deadline passes
or the broker cannot be reached. Also an async form (submit, then collect) and a batch form for offline jobs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult

from connector.errors import describe_exception
from connector.rerank import RerankOutcome
from connector.settings import Settings
from workers.celery_app import TASK_NAME, make_app, queue_for
from workers.reranking import Candidate, max_readable_chars

GET_OVERRUN_S = 1.0
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.02


class CeleryReranker:
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

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryReranker:
        assert settings.rerank_model is not None
        return cls(
            make_app(settings, fail_fast=True),
            settings.rerank_model,
            deadline_ms=settings.rerank_deadline_ms,
            max_chars=max_readable_chars(settings.rerank_max_length, settings.rerank_max_passages),
        )

    def payload(self, query: str, candidates: Sequence[Candidate]) -> dict[str, Any]:
        return {
            "query": query,
            "model": self.model,
            "cache": self.use_cache,
            "candidates": [{"id": c.id, "text": c.text[: self.max_chars]} for c in candidates],
        }

    # --- async form ------------------------------------------------------------------------------------

    def submit(self, query: str, candidates: Sequence[Candidate], *, expires_s: float | None = None) -> str:
        """Queue one rerank and return its task id; raises if the broker cannot be reached."""
        result = self.app.send_task(
            TASK_NAME,
            args=[self.payload(query, candidates)],
            queue=self.queue,
            expires=expires_s,  # a worker discards a task that starts too late to matter
            retry=True,  # with the fail-fast policy of make_app(fail_fast=True)
        )
        return str(result.id)

    def collect(self, task_id: str, timeout_s: float | None = None) -> RerankOutcome | None:
        """The outcome of a submitted task, waiting up to `timeout_s` (None: do not wait); None while it is
        still pending."""
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
        return _outcome(state, reply)

    # --- the Reranker protocol: synchronous with a deadline -------------------------------------------

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

    def rerank_batch(
        self,
        requests: Sequence[tuple[str, Sequence[Candidate]]],
        *,
        timeout_s: float = 3600.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[RerankOutcome]:
        """Rerank many queries for an offline job: queue them all, then collect each in order."""
        task_ids = [self.submit(query, candidates) for query, candidates in requests]
        deadline = time.monotonic() + timeout_s
        outcomes: list[RerankOutcome] = []
        for done, task_id in enumerate(task_ids, start=1):
            outcome = self.collect(task_id, timeout_s=max(deadline - time.monotonic(), 0.001))
            outcomes.append(outcome or RerankOutcome.failed(f"batch timeout of {timeout_s:.0f} s passed"))
            if progress is not None:
                progress(done, len(task_ids))
        return outcomes


def _outcome(state: str, reply: Any) -> RerankOutcome:
    if state != "SUCCESS":
        return RerankOutcome.failed(f"rerank task {state.lower()}: {reply!r}")
    if not isinstance(reply, dict):
        return RerankOutcome.failed(f"rerank worker replied {reply!r}")
    if "error" in reply:
        return RerankOutcome.failed(f"rerank worker refused the request: {reply['error']}")
    return RerankOutcome({item["id"]: float(item["score"]) for item in reply["scores"]})

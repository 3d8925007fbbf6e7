"""What the connector calls to get candidates reranked: the `Reranker` protocol and its two
implementations, in this process (`InProcessReranker`) or on Celery workers over Redis (`CeleryReranker`,
synchronous with a deadline, async with submit/collect, and a batch form for offline jobs).

A reranker never raises for a failed stage: it returns an outcome that says why it did not rerank (a sentence
and a `FallbackCode`), and the search keeps the first-stage order with `reranked=False`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from hybrid_rerank.workers.admission import LoadProbe, admission
from hybrid_rerank.workers.errors import ModelLoadError, describe_exception
from hybrid_rerank.workers.protocol import (
    TASK_NAME,
    Candidate,
    RerankOutcome,
    RerankRequest,
    batch_queue_for,
    encode_request,
    parse_reply,
    queue_for,
)

if TYPE_CHECKING:
    from celery import Celery

    from hybrid_rerank.workers.scorer import CrossEncoderScorer

log = logging.getLogger("hybrid_rerank.workers")
RerankProgress = Callable[[int, int], None]  # (queries done, total)
GET_OVERRUN_S = 1.0
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.02
DEFAULT_TASK_CANDIDATES = 64  # RERANK_TASK_CANDIDATES
NOTHING_TO_RERANK = "'candidates' is empty: there is nothing to rerank"


def split_candidates(candidates: Sequence[Candidate], per_task: int) -> list[list[Candidate]]:
    """Consecutive chunks of at most `per_task` candidates, in order (the last may be shorter); no chunk for
    no candidates. Each chunk is one Celery task, so workers score a large request in parallel and a task
    stays short enough that a live request never waits long behind one."""
    if per_task < 1:
        raise ValueError(f"candidates per task must be at least 1, got {per_task}")
    return [list(candidates[start : start + per_task]) for start in range(0, len(candidates), per_task)]


def merge_outcomes(parts: Sequence[RerankOutcome], chunks: Sequence[Sequence[Candidate]]) -> RerankOutcome:
    """One outcome for a request from its chunks' outcomes (in the same order): all the scores, or the first
    failure as it is (its code and reason), never a partial set of scores. A chunk whose reply lacks a score
    for a candidate it carried is a malformed reply."""
    if len(parts) != len(chunks):
        raise ValueError(f"{len(parts)} outcomes for {len(chunks)} chunks")
    scores: dict[str, float] = {}
    cached = 0
    for position, (part, chunk) in enumerate(zip(parts, chunks, strict=True), start=1):
        if part.scores is None:
            return part
        missing = [c.id for c in chunk if c.id not in part.scores]
        if missing:
            return RerankOutcome.failed(
                f"rerank reply for task {position} of {len(chunks)} has no score for {len(missing)} of its "
                f"{len(chunk)} candidates (first: {missing[0]!r})",
                "malformed_reply",
            )
        scores.update(part.scores)
        cached += part.cached
    if not parts:
        return RerankOutcome.failed(NOTHING_TO_RERANK, "invalid_request")
    first = parts[0]
    return RerankOutcome(
        scores, model=first.model, interpolation_weight=first.interpolation_weight, cached=cached
    )


class Reranker(Protocol):
    """Scores for one query's candidates, or the reason there are none."""

    description: str

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        """`deadline_ms`: how long this call may take (None: the reranker's own, RERANK_DEADLINE_MS); a
        reranker that cannot abandon its work midway accepts it and says so."""
        ...

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
        """Many queries for an offline job, without a deadline. The default reranks them one by one; a
        reranker that can work through a batch in parallel (Celery workers) overrides it."""
        outcomes = []
        for done, (query, candidates) in enumerate(requests, start=1):
            outcomes.append(self.rerank(query, candidates))
            if progress is not None:
                progress(done, len(requests))
        return outcomes


class InProcessReranker(Reranker):
    """Scores in this process with the reranking core the workers use, so results are the same.

    Safe to share between threads (an HTTP service's thread pool): callers score one at a time. A fast
    tokenizer refuses concurrent use ("Already borrowed"), and the model already uses every core it is
    given, so running two at once would gain nothing."""

    def __init__(self, scorer: CrossEncoderScorer) -> None:
        self.scorer = scorer
        self.description = f"in-process reranker {scorer.description}"
        self._load_error: str | None = None
        self._lock = threading.Lock()  # one load, one scoring at a time

    def available(self) -> str | None:
        """Load the model now; None when it loaded, else why not (and reranking then degrades)."""
        with self._lock:
            return self._load()

    def _load(self) -> str | None:  # with the lock held
        if self._load_error is None:
            try:
                self.scorer.load()
            except ModelLoadError as exc:
                self._load_error = str(exc)
        return self._load_error

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        """`deadline_ms` is accepted and ignored: scoring in this process cannot be abandoned midway (the
        model call runs to its end in native code, and the caller's thread is the one doing the work), so
        the result is always returned, however late. A deadline needs workers (REDIS_URL)."""
        with self._lock:
            failed = self._load()  # a failed load is not retried on every query
            if failed is not None:
                return RerankOutcome.failed(failed, "model_unavailable")
            try:
                scored = self.scorer.score(query, candidates)
            except Exception as exc:  # a failed stage degrades visibly instead of failing the search
                return RerankOutcome.failed(f"reranking failed: {describe_exception(exc)}", "scoring_failed")
        return RerankOutcome(
            {s.id: s.score for s in scored},
            model=self.scorer.model_name,
            interpolation_weight=self.scorer.interpolation_weight,
        )


class CeleryReranker(Reranker):
    """Sends a query's candidates (cut to what the model reads) to the workers serving `model` and waits up
    to the deadline; past it, or with the broker unreachable, the outcome says why there are no scores.

    A request of more than `task_candidates` candidates is split into tasks the workers take in parallel,
    and its scores are merged (all or nothing). Live requests go to the model's interactive queue, offline
    batches (`rerank_many`) to its batch queue, which workers serve only when the interactive one is empty."""

    def __init__(
        self,
        app: Celery,
        model: str,
        *,
        deadline_ms: int,
        max_chars: int,
        use_cache: bool = True,
        task_candidates: int = DEFAULT_TASK_CANDIDATES,
        load_probe: LoadProbe | None = None,
        admission_share: float = 1.0,
    ) -> None:
        """`load_probe`: admission control (RERANK_ADMISSION): before sending a live request, read the
        queue's load and refuse at once (`overloaded`) a request whose expected wait and scoring exceed
        `admission_share` of its deadline. None sends every request."""
        if task_candidates < 1:
            raise ValueError(f"task_candidates must be at least 1, got {task_candidates}")
        if not 0.0 < admission_share <= 1.0:
            raise ValueError(f"admission_share must be in (0, 1], got {admission_share}")
        self.load_probe = load_probe
        self.admission_share = admission_share
        self.app = app
        self.use_cache = use_cache
        self.model = model
        self.queue = queue_for(model)
        self.batch_queue = batch_queue_for(model)
        self.deadline_s = deadline_ms / 1000.0
        self.max_chars = max_chars
        self.task_candidates = task_candidates
        self._forgetter = _Forgetter(app)
        self.description = f"Celery workers on queue {self.queue} ({model}), deadline {deadline_ms} ms"

    # --- async form ------------------------------------------------------------------------------------

    def submit(
        self,
        query: str,
        candidates: Sequence[Candidate],
        *,
        expires_s: float | None = None,
        queue: str | None = None,
    ) -> str:
        """Queue one rerank task (on the interactive queue unless `queue` says otherwise) and return its task
        id; raises if the broker cannot be reached. It is one task whatever its size (`rerank` splits)."""
        request = RerankRequest(query, list(candidates), self.model, self.use_cache)
        result = self.app.send_task(
            TASK_NAME,
            args=[encode_request(request, self.max_chars)],
            queue=queue or self.queue,
            expires=expires_s,  # a worker discards a task that starts too late to matter
            retry=True,  # with the fail-fast policy of make_app(fail_fast=True)
            # Celery would otherwise walk the whole payload (saferepr) for these monitoring headers: a
            # measurable share of the dispatch for a page of candidates, for a string nobody reads.
            argsrepr=f"<rerank: {len(request.candidates)} candidates>",
            kwargsrepr="{}",
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
            self._forgetter.forget(task_id)  # read once: dropped from Redis now, not at expiry
        except CeleryTimeout:
            return None
        except Exception as exc:  # the result backend (Redis) is down
            return RerankOutcome.failed(
                f"rerank result unavailable: {describe_exception(exc)}", "result_unavailable"
            )
        return parse_reply(state, reply)

    # --- synchronous with a deadline -------------------------------------------------------------------

    def rerank(
        self, query: str, candidates: Sequence[Candidate], *, deadline_ms: int | None = None
    ) -> RerankOutcome:
        """Scores within `deadline_ms` (None: RERANK_DEADLINE_MS) on the interactive queue. Every task of
        the request expires at the deadline, so a worker never starts one whose answer nobody waits for."""
        deadline_s = self.deadline_s if deadline_ms is None else deadline_ms / 1000.0
        passed = f"rerank deadline of {deadline_s * 1000:.0f} ms passed"
        if deadline_s <= 0:  # a caller's budget already spent: nothing worth sending
            return RerankOutcome.failed(passed, "deadline")
        started = time.monotonic()
        chunks = split_candidates(candidates, self.task_candidates)
        refused = self._admit(chunks, deadline_s)
        if refused is not None:
            return refused
        sent = self._send(chunks, lambda chunk: self.submit(query, chunk, expires_s=deadline_s))
        if isinstance(sent, RerankOutcome):
            return sent
        return self._gather(sent, chunks, started + deadline_s, passed)

    def _admit(self, chunks: list[list[Candidate]], deadline_s: float) -> RerankOutcome | None:
        """None to send the request, else the `overloaded` outcome that says why not (one Redis round trip;
        unknown load admits)."""
        if self.load_probe is None or not chunks:
            return None
        load = self.load_probe.read()
        budget_s = deadline_s * self.admission_share
        decision = admission(load, [len(chunk) for chunk in chunks], budget_s)
        if decision.admitted or load is None:
            return None
        return RerankOutcome.failed(decision.reason(load.queued, load.consumers, budget_s), "overloaded")

    # --- batch form --------------------------------------------------------------------------------------

    def rerank_many(
        self,
        requests: Sequence[tuple[str, Sequence[Candidate]]],
        *,
        progress: RerankProgress | None = None,
        timeout_s: float = 3600.0,
    ) -> list[RerankOutcome]:
        """Rerank many queries for an offline job on the batch queue, without a deadline per query: queue
        every task of every query (split as `rerank` splits them; the workers take them in parallel, after
        any live request), then collect each query in order within `timeout_s` for the whole batch."""
        pending: list[tuple[list[list[Candidate]], list[str] | RerankOutcome]] = []
        for query, candidates in requests:
            chunks = split_candidates(candidates, self.task_candidates)
            pending.append((chunks, self._send(chunks, functools.partial(self._submit_batch, query))))
        until = time.monotonic() + timeout_s
        outcomes: list[RerankOutcome] = []
        for done, (chunks, sent) in enumerate(pending, start=1):
            if isinstance(sent, RerankOutcome):
                outcomes.append(sent)
            else:
                outcomes.append(
                    self._gather(sent, chunks, until, f"batch timeout of {timeout_s:.0f} s passed")
                )
            if progress is not None:
                progress(done, len(pending))
        return outcomes

    def _submit_batch(self, query: str, chunk: list[Candidate]) -> str:
        return self.submit(query, chunk, queue=self.batch_queue)  # no expiry: it waits its turn

    # --- shared --------------------------------------------------------------------------------------------

    @staticmethod
    def _send(
        chunks: list[list[Candidate]], send: Callable[[list[Candidate]], str]
    ) -> list[str] | RerankOutcome:
        """Every chunk's task id, or why they could not all be sent (a task already sent then expires or
        finishes unread)."""
        if not chunks:
            return RerankOutcome.failed(NOTHING_TO_RERANK, "invalid_request")
        try:
            return [send(chunk) for chunk in chunks]
        except Exception as exc:  # kombu/redis errors: the broker is unreachable
            return RerankOutcome.failed(
                f"rerank broker unreachable: {describe_exception(exc)}", "broker_unreachable"
            )

    def _gather(
        self, task_ids: list[str], chunks: list[list[Candidate]], until: float, too_late: str
    ) -> RerankOutcome:
        """The chunks' outcomes merged, each waited for until `until` (monotonic); the first failure ends
        the wait (scores are all or nothing)."""
        parts: list[RerankOutcome] = []
        for task_id in task_ids:
            outcome = self.collect(task_id, timeout_s=max(until - time.monotonic(), 0.001))
            if outcome is None:  # the late results, if any, expire unread
                back = f" ({len(parts)} of {len(task_ids)} tasks back)" if len(task_ids) > 1 else ""
                return RerankOutcome.failed(too_late + back, "deadline")
            if outcome.scores is None:
                return outcome
            parts.append(outcome)
        return merge_outcomes(parts, chunks)


class _Forgetter:
    """Deletes results already read from Redis on a thread of its own, so a search does not wait one more
    round trip for it (the pub/sub subscription ends when `get` returns). A delete that fails is logged; the
    key expires anyway (RERANK_RESULT_TTL_S)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._ids: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()

    def forget(self, task_id: str) -> None:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._run, name="rerank-result-forget", daemon=True).start()
                self._started = True
        self._ids.put(task_id)

    def _run(self) -> None:
        while True:
            task_id = self._ids.get()
            try:
                backend = self.app.backend
                backend.delete(backend.get_key_for_task(task_id))
            except Exception as exc:
                log.warning("could not delete the read rerank result %s: %s", task_id, exc)

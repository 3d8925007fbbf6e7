"""Cross-request batching in a worker process (RERANK_BATCH_WINDOW_MS): rerank tasks for the same model that
run at the same time in one process (a `threads` pool) are scored in one model call.

Every model call runs on one thread of the process (the batcher's), so the model and its fast tokenizer,
which refuses concurrent use, are never called from two threads at once. A task hands its query and
candidates to the batcher and waits; the batcher takes the first waiting request, waits the window for more
(or until it holds `max_pairs` candidates), then scores every request it holds in one `score_pairs` call. A
lone search pays the window; requests that come while a call runs wait for it and go in the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer, ScoredCandidate

ScoreMany = Callable[[Sequence[tuple[str, Sequence[Candidate]]]], list[list[ScoredCandidate]]]


def score_many(
    scorer: CrossEncoderScorer, requests: Sequence[tuple[str, Sequence[Candidate]]]
) -> list[list[ScoredCandidate]]:
    """Each request's scores (as `scorer.score` gives them), every pair of every request in one
    `score_pairs` call: passages as `score` cuts them, each document scored by its best passage."""
    model = scorer.load()
    if model.remote is not None:  # a remote API takes one query per call
        return [scorer.score(query, candidates) for query, candidates in requests]
    queries: list[str] = []
    passages: list[str] = []
    owners: list[tuple[int, int]] = []  # (request, candidate)
    for request_index, (query, candidates) in enumerate(requests):
        for candidate_index, candidate in enumerate(candidates):
            for passage in scorer.passages(query, candidate.text):
                queries.append(query)
                passages.append(passage)
                owners.append((request_index, candidate_index))
    raw = scorer.score_pairs(queries, passages, model) if passages else []
    best = [[float("-inf")] * len(candidates) for _, candidates in requests]
    for (request_index, candidate_index), value in zip(owners, list(raw), strict=True):
        best[request_index][candidate_index] = max(best[request_index][candidate_index], float(value))
    return [
        [ScoredCandidate(c.id, s) for c, s in zip(candidates, scores, strict=True)]
        for (_, candidates), scores in zip(requests, best, strict=True)
    ]


@dataclass
class _Job:
    query: str
    candidates: Sequence[Candidate]
    done: threading.Event = field(default_factory=threading.Event)
    scores: list[ScoredCandidate] | None = None
    error: BaseException | None = None
    batched: int = 0  # requests in the model call that scored this one


@dataclass(frozen=True)
class BatchStats:
    """What the batcher did so far in this process."""

    calls: int  # model calls
    requests: int  # requests scored
    largest: int  # most requests in one call


class Coalescer:
    """Scores requests from many threads, batching those that meet within `window_s` (see the module)."""

    def __init__(self, score: ScoreMany, window_s: float, *, max_pairs: int = 512) -> None:
        """`max_pairs`: a batch closes once it holds this many candidates, window or not."""
        if window_s < 0:
            raise ValueError(f"the batch window must be at least 0 s, got {window_s}")
        self._score = score
        self.window_s = window_s
        self.max_pairs = max_pairs
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []
        self._calls = self._requests = self._largest = 0
        self._thread = threading.Thread(target=self._serve, name="rerank-batcher", daemon=True)
        self._thread.start()

    def stats(self) -> BatchStats:
        with self._cond:
            return BatchStats(self._calls, self._requests, self._largest)

    def score(self, query: str, candidates: Sequence[Candidate]) -> tuple[list[ScoredCandidate], int]:
        """The request's scores and how many requests shared the model call."""
        job = _Job(query, candidates)
        with self._cond:
            self._waiting.append(job)
            self._cond.notify_all()
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.scores is not None
        return job.scores, job.batched

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = self._score([(job.query, job.candidates) for job in batch])
            except BaseException as exc:  # every request of the call fails as one call would
                for job in batch:
                    job.error = exc
                    job.done.set()
                continue
            with self._cond:
                self._calls += 1
                self._requests += len(batch)
                self._largest = max(self._largest, len(batch))
            for job, scores in zip(batch, results, strict=True):
                job.scores, job.batched = scores, len(batch)
                job.done.set()

    def _next_batch(self) -> list[_Job]:
        with self._cond:
            while not self._waiting:
                self._cond.wait()
            closes = time.monotonic() + self.window_s
            while self._pairs() < self.max_pairs:
                left = closes - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._waiting = self._waiting, []
            return batch

    def _pairs(self) -> int:
        return sum(len(job.candidates) for job in self._waiting)

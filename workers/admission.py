"""Goodput under overload: never spend a worker on a task whose caller will have given up, and never queue a
live rerank the queue cannot answer within its deadline.

Two decisions, both pure functions here (hand-checked by unit tests), with thin wiring around them:

- A worker skips a task at its start when the time left until the task's expiry is less than its recent
  service time for a task of that size (`should_skip`): an EWMA of seconds per candidate, kept per pool
  process (`ServiceTime`). It replies at once with a refusal coded `deadline`, and takes the next task.
- The client admits a live rerank only when the queue can answer it in time (`admission`): the tasks queued
  ahead times the workers' mean task time, divided by the pool processes consuming the queue, plus its own
  tasks, must fit within the deadline. Each pool process publishes its EWMA to a Redis hash per queue
  (`publish_service_time`); the client reads that hash and the queue's length in one round trip
  (`QueueLoadProbe`). A refused request fails at once with the code `overloaded`, so a search answers at
  first-stage speed instead of at the deadline.

What is unknown (no worker has published yet, or none recently) admits: the deadline still bounds the wait.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

# How fast the EWMA follows a change of load: the last ~5 tasks weigh most.
EWMA_ALPHA = 0.3
# A process that has not published for this long is not counted as a consumer (it died, or sits idle; an
# idle one matters not: a queue that waits is one every live process is working through).
FRESH_S = 60.0
# A worker's estimate not refreshed for this long is forgotten (it runs the next task and learns again).
MAX_AGE_S = 30.0
SERVICE_KEY_PREFIX = "hybrid_rerank.service_time."
SERVICE_KEY_TTL_S = 3600
CONNECT_TIMEOUT_S = 0.5
READ_TIMEOUT_S = 0.5


class ServiceTime:
    """Seconds per candidate, an exponentially weighted moving average over this process's scored tasks.

    The first task is not learnt from (a model's first call allocates and is slow), and an estimate not
    refreshed for `max_age_s` is forgotten: a worker that skips every task learns nothing, so an estimate
    left high by a burst of contention must not make it skip forever."""

    def __init__(self, alpha: float = EWMA_ALPHA, *, warm_up: int = 1, max_age_s: float = MAX_AGE_S) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.warm_up = warm_up  # tasks seen before learning
        self.max_age_s = max_age_s
        self.per_candidate_s: float | None = None  # None until a task has been learnt from
        self.learnt_at = 0.0  # time.monotonic() of the last sample

    def observe(self, seconds: float, candidates: int, now: float | None = None) -> None:
        """A task that scored `candidates` (cache hits left out) in `seconds`; nothing scored, nothing
        learnt."""
        if candidates < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        if self.warm_up > 0:
            self.warm_up -= 1
            return
        sample = seconds / candidates
        if self.per_candidate_s is None:
            self.per_candidate_s = sample
        else:
            self.per_candidate_s += self.alpha * (sample - self.per_candidate_s)
        self.learnt_at = time.monotonic() if now is None else now

    def estimate_s(self, candidates: int, now: float | None = None) -> float | None:
        """Expected seconds for a task of `candidates`; None while nothing has been measured, or nothing
        for `max_age_s`."""
        if self.per_candidate_s is None:
            return None
        if (time.monotonic() if now is None else now) - self.learnt_at > self.max_age_s:
            return None
        return self.per_candidate_s * candidates


def seconds_left(expires: object, now: datetime | None = None) -> float | None:
    """Seconds until a task's expiry as Celery hands it to the task (an ISO 8601 string or a datetime;
    naive means UTC); None when the task has no expiry (batch work) or it cannot be read."""
    if expires is None:
        return None
    if isinstance(expires, str):
        try:
            expires = datetime.fromisoformat(expires)
        except ValueError:
            return None
    if not isinstance(expires, datetime):
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return (expires - (now or datetime.now(UTC))).total_seconds()


def should_skip(left_s: float | None, estimate_s: float | None) -> bool:
    """Skip a task whose expiry comes before its expected end: its caller will have given up. No expiry or
    no estimate yet: run it (a task already past its expiry is skipped all the same)."""
    if left_s is None:
        return False
    if left_s <= 0:
        return True
    return estimate_s is not None and left_s < estimate_s


@dataclass(frozen=True)
class QueueLoad:
    """What the client reads before sending: tasks waiting in the interactive queue, and the seconds per
    candidate each recently active pool process published."""

    queued: int
    per_candidate_s: tuple[float, ...]  # one per process consuming the queue

    @property
    def consumers(self) -> int:
        return len(self.per_candidate_s)


@dataclass(frozen=True)
class Admission:
    """The client's decision for one request, with the figures behind it (for the fallback's note)."""

    admitted: bool
    wait_s: float | None = None  # expected wait for the tasks queued ahead
    own_s: float | None = None  # expected time of the request's own tasks

    def reason(self, queued: int, consumers: int, budget_s: float) -> str:
        wait_ms = (self.wait_s or 0.0) * 1000
        own_ms = (self.own_s or 0.0) * 1000
        return (
            f"rerank not sent: the workers are overloaded ({queued} tasks queued for {consumers} worker "
            f"processes: about {wait_ms:.0f} ms of waiting plus {own_ms:.0f} ms of scoring, over the "
            f"{budget_s * 1000:.0f} ms the deadline allows)"
        )


def admission(load: QueueLoad | None, task_sizes: Sequence[int], budget_s: float) -> Admission:
    """Admit when the queue can answer within `budget_s`: the tasks queued ahead, each at the workers' mean
    task time for a task as large as this request's largest, spread over the consumers, then the request's
    own tasks (`task_sizes`: candidates per task) spread likewise. Unknown load admits."""
    if load is None or load.consumers == 0 or not task_sizes:
        return Admission(True)
    per_candidate_s = sum(load.per_candidate_s) / load.consumers
    task_s = per_candidate_s * max(task_sizes)
    wait_s = load.queued * task_s / load.consumers
    # The request's own tasks run in parallel on free processes; the last one ends after ceil(n / k) rounds.
    own_s = math.ceil(len(task_sizes) / load.consumers) * task_s
    return Admission(wait_s + own_s <= budget_s, wait_s, own_s)


def service_key(queue: str) -> str:
    """The Redis hash where the processes serving `queue` publish their service time."""
    return SERVICE_KEY_PREFIX + queue


def encode_service_time(per_candidate_s: float, at: float) -> str:
    return json.dumps({"per_candidate_s": per_candidate_s, "at": at})


def fresh_service_times(
    entries: Mapping[Any, Any], now: float, fresh_s: float = FRESH_S
) -> tuple[float, ...]:
    """Seconds per candidate from the hash's entries published within `fresh_s` of `now` (unix seconds),
    sorted; malformed entries are left out."""
    values = []
    for raw in entries.values():
        try:
            entry = json.loads(raw)
            per_candidate_s, at = float(entry["per_candidate_s"]), float(entry["at"])
        except (ValueError, TypeError, KeyError):
            continue
        if now - at <= fresh_s and math.isfinite(per_candidate_s) and per_candidate_s > 0:
            values.append(per_candidate_s)
    return tuple(sorted(values))


def publish_service_time(client: Any, queue: str, process: str, per_candidate_s: float) -> None:
    """A pool process's EWMA into the queue's hash (one round trip); the hash expires if nobody serves."""
    key = service_key(queue)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(key, process, encode_service_time(per_candidate_s, time.time()))
        pipe.expire(key, SERVICE_KEY_TTL_S)
        pipe.execute()


class LoadProbe(Protocol):
    def read(self) -> QueueLoad | None:
        """The queue's load now, or None when it cannot be read."""
        ...


class QueueLoadProbe(LoadProbe):
    """Reads a queue's load from Redis in one round trip (its lists' lengths and the service-time hash),
    over a pooled connection with short timeouts; None when Redis does not answer (the send then says)."""

    def __init__(self, redis_url: str, queue: str) -> None:
        import redis

        from hybrid_rerank.workers.health import queue_keys

        self.queue = queue
        self.keys = queue_keys(queue)
        self.client: Any = redis.Redis.from_url(
            redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=READ_TIMEOUT_S
        )

    def read(self) -> QueueLoad | None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.llen(key)
                pipe.hgetall(service_key(self.queue))
                replies = pipe.execute()
        except Exception:  # redis errors: unknown load admits, and the send reports the broker
            return None
        *lengths, entries = replies
        return QueueLoad(sum(int(n) for n in lengths), fresh_service_times(entries, time.time()))

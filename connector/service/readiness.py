"""`/readyz`: can this process serve a search now? The engine answers, and the reranker can score: with
REDIS_URL, Redis answers and at least one worker consumes the model's queue; without it, the model is
loaded in this process. Each check says what it saw, so an operator reads the reason off the reply."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.workers.client import CeleryReranker, Reranker
from hybrid_rerank.workers.errors import describe_exception


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks}


class RecentConsumers:
    """Who consumes the queue, asked at most every `ttl_s` while someone does: asking the workers waits out
    its whole timeout (a Celery broadcast), and an orchestrator's probe may give up after one second. An
    empty answer is never kept, so a worker that comes up is seen at the next probe."""

    def __init__(
        self, ask: Callable[[], list[str]], ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ask = ask
        self.ttl_s = ttl_s
        self.clock = clock
        self._hosts: list[str] = []
        self._asked = -math.inf

    def __call__(self) -> list[str]:
        if not self._hosts or self.clock() - self._asked >= self.ttl_s:
            self._hosts = self.ask()
            self._asked = self.clock()
        return list(self._hosts)


def engine_check(backend: Backend) -> tuple[bool, str]:
    try:
        info = backend.index_info()
    except Exception as exc:  # the engine is down or refuses us: not ready, and why
        return False, f"unreachable: {describe_exception(exc)}"
    if info is None:
        return True, f"reachable; index {backend.name!r} does not exist yet (run `hybrid-rerank index`)"
    return True, f"ok: index {info.name!r} holds {info.count} documents"


def reranker_checks(
    reranker: Reranker | None, ping_redis: Callable[[], None], consumers: Callable[[], list[str]]
) -> dict[str, tuple[bool, str]]:
    if reranker is None:
        return {"reranker": (True, "off (RERANK_MODEL is unset): searches answer in first-stage order")}
    if not isinstance(reranker, CeleryReranker):
        problem = reranker.available()
        return {"reranker": (problem is None, problem or f"ok: {reranker.description}")}
    try:
        ping_redis()
    except Exception as exc:
        return {"redis": (False, f"unreachable: {describe_exception(exc)}")}
    try:
        hosts = consumers()
    except Exception as exc:
        return {
            "redis": (True, "ok"),
            "workers": (False, f"cannot ask the workers: {describe_exception(exc)}"),
        }
    workers = (
        (True, f"ok: {len(hosts)} consuming {reranker.queue}: {', '.join(sorted(hosts))}")
        if hosts
        else (
            False,
            f"no worker consumes queue {reranker.queue} (start `celery -A hybrid_rerank.workers worker`)",
        )
    )
    return {"redis": (True, "ok"), "workers": workers}


def readiness(
    backend: Backend,
    reranker: Reranker | None,
    ping_redis: Callable[[], None],
    consumers: Callable[[], list[str]],
) -> Readiness:
    checks = {"engine": engine_check(backend), **reranker_checks(reranker, ping_redis, consumers)}
    return Readiness(all(ok for ok, _ in checks.values()), {name: text for name, (_, text) in checks.items()})

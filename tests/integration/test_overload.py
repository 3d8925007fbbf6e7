"""Goodput under overload, on a real Redis with real `celery worker` processes: a worker skips at once the
queued tasks that cannot end before their deadline (replying `deadline`), so a live request behind them is
reranked, where a worker with the skip turned off spends itself on the first of them and the same live
request misses its deadline; a client refuses at once (`overloaded`), without sending, a request the queue
cannot answer in time, from the queue's length and the service time the worker published."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.admission import service_key
from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.health import queue_depths, queue_keys
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import Candidate, queue_for

pytestmark = pytest.mark.integration

MAX_LENGTH = 128
TEXT = " ".join(["the moon orbit earth light phase steak rest grill"] * 14)  # past 128 tokens
LIVE_CANDIDATES = 64  # one task
LIVE_DEADLINE_MS = 3000
FLOOD_TASKS = 3
FLOOD_EXPIRES_S = 2.0  # each flood task may start, but cannot end, before it expires
ADMISSION_DEADLINE_MS = 2000


def candidates(n: int, tag: str) -> list[Candidate]:
    return [Candidate(f"{tag}{i}", f"{i} {TEXT}") for i in range(n)]


@contextmanager
def serving(redis_url: str, tiny: Path, folder: Path, *, skip_late: bool) -> Iterator[CeleryReranker]:
    """One worker (one pool process, one thread, no score cache) on its own copy of the tiny model (its
    queue is this test's alone), and a client of it with admission control on."""
    model = Path(shutil.copytree(tiny, folder / f"overload-ce-{uuid.uuid4().hex[:8]}"))
    settings = load_settings(
        _env_file=None,
        redis_url=redis_url,
        rerank_model=str(model),
        rerank_max_length=MAX_LENGTH,
        rerank_cache_ttl_s=0,
    )
    reranker = make_celery_reranker(settings)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RERANK_MODEL": str(model),
        "RERANK_MAX_LENGTH": str(MAX_LENGTH),
        "RERANK_CACHE_TTL_S": "0",
        "RERANK_THREADS": "1",
        "RERANK_SKIP_LATE": "true" if skip_late else "false",
        "HF_HUB_OFFLINE": "1",
    }
    worker = WorkerProcess(f"overload-{'skip' if skip_late else 'noskip'}", env, folder).start(reranker.app)
    client: Any = redis.Redis.from_url(redis_url)
    try:
        yield reranker
    finally:
        client.delete(*queue_keys(reranker.queue), service_key(reranker.queue))  # what a failure left
        client.close()
        worker.stop()


def published_per_candidate_s(redis_url: str, queue: str) -> float:
    """The worker process's EWMA as it published it (one process: one entry)."""
    client: Any = redis.Redis.from_url(redis_url)
    try:
        entries = client.hgetall(service_key(queue))
    finally:
        client.close()
    assert len(entries) == 1, entries
    value = float(json.loads(next(iter(entries.values())))["per_candidate_s"])
    assert value > 0
    return value


def warm_up(reranker: CeleryReranker) -> None:
    for i in range(3):
        outcome = reranker.rerank(f"warm {i}", candidates(LIVE_CANDIDATES, f"w{i}-"), deadline_ms=30_000)
        assert outcome.scores is not None, (outcome.code, outcome.reason)


def flood_and_live(redis_url: str, reranker: CeleryReranker) -> tuple[list[str], float, Any]:
    """Queue FLOOD_TASKS tasks that each take twice the live deadline and expire before they could end,
    then a live request (sent without admission, to test the worker alone): the flood's task ids, the live
    request's time and outcome."""
    per_candidate_s = published_per_candidate_s(redis_url, reranker.queue)
    size = math.ceil(2 * LIVE_DEADLINE_MS / 1000 / per_candidate_s)
    flood = [
        reranker.submit(f"flood {i}", candidates(size, f"f{i}-"), expires_s=FLOOD_EXPIRES_S)
        for i in range(FLOOD_TASKS)
    ]
    live_client = CeleryReranker(
        reranker.app, reranker.model, deadline_ms=LIVE_DEADLINE_MS, max_chars=reranker.max_chars
    )
    started = time.monotonic()
    live = live_client.rerank("moon phase", candidates(LIVE_CANDIDATES, "live"))
    return flood, time.monotonic() - started, live


def test_a_worker_skips_tasks_that_cannot_end_in_time_and_serves_the_live_request_behind_them(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    with serving(redis_url, tiny_cross_encoder_dir, tmp_path, skip_late=True) as reranker:
        warm_up(reranker)
        flood, live_s, live = flood_and_live(redis_url, reranker)
        assert live.scores is not None, (live.code, live.reason)
        assert set(live.scores) == {f"live{i}" for i in range(LIVE_CANDIDATES)}
        assert live_s < LIVE_DEADLINE_MS / 1000
        for task_id in flood:  # each answered already: skipped at once, not run to its end
            outcome = reranker.collect(task_id, timeout_s=0.5)
            assert outcome is not None and outcome.code == "deadline", outcome
            assert "the worker skipped the task" in (outcome.reason or ""), outcome.reason
        print(f"live reranked in {live_s:.3f} s behind {FLOOD_TASKS} skipped tasks")


def test_without_the_skip_the_same_live_request_misses_its_deadline(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    """The control: the worker runs the first flood task to its end, long after its caller gave up."""
    with serving(redis_url, tiny_cross_encoder_dir, tmp_path, skip_late=False) as reranker:
        warm_up(reranker)
        flood, live_s, live = flood_and_live(redis_url, reranker)
        assert live.scores is None and live.code == "deadline", (live.code, live.reason)
        assert live.reason == f"rerank deadline of {LIVE_DEADLINE_MS} ms passed"
        assert live_s < LIVE_DEADLINE_MS / 1000 + 1.0  # the caller gave up on time
        first = reranker.collect(flood[0], timeout_s=4 * LIVE_DEADLINE_MS / 1000)
        assert first is not None and first.scores is not None  # scored, for nobody
        drained = time.monotonic() + 30  # the rest expired in the queue: discarded
        while queue_depths(redis_url, reranker.model)["interactive"]:
            assert time.monotonic() < drained
            time.sleep(0.1)


def test_a_client_refuses_at_once_what_the_queue_cannot_answer_in_time(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    with serving(redis_url, tiny_cross_encoder_dir, tmp_path, skip_late=True) as reranker:
        warm_up(reranker)
        assert reranker.load_probe is not None
        load = reranker.load_probe.read()
        assert load is not None and load.queued == 0 and load.consumers == 1
        # Queue enough work (no expiry: never skipped) to keep the one process busy past the budget twice.
        task_s = published_per_candidate_s(redis_url, reranker.queue) * LIVE_CANDIDATES
        budget_s = ADMISSION_DEADLINE_MS / 1000 * reranker.admission_share
        for i in range(math.ceil(2 * budget_s / task_s) + 2):
            reranker.submit(f"queued {i}", candidates(LIVE_CANDIDATES, f"q{i}-"))
        started = time.monotonic()
        refused = reranker.rerank(
            "moon phase", candidates(LIVE_CANDIDATES, "live"), deadline_ms=ADMISSION_DEADLINE_MS
        )
        refused_s = time.monotonic() - started
        assert refused.scores is None and refused.code == "overloaded", (refused.code, refused.reason)
        assert "worker processes" in (refused.reason or "") and refused_s < 0.5
        client: Any = redis.Redis.from_url(redis_url)
        try:
            client.delete(*queue_keys(queue_for(reranker.model)))
        finally:
            client.close()
        # With the queue empty again, the same request is admitted and reranked.
        admitted = reranker.rerank(
            "moon phase", candidates(LIVE_CANDIDATES, "live"), deadline_ms=ADMISSION_DEADLINE_MS * 3
        )
        assert admitted.scores is not None, (admitted.code, admitted.reason)

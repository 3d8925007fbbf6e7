"""Interactive before batch, on a real Redis with real `celery worker` processes: a live rerank with a
deadline comes back reranked while a large offline batch keeps the worker busy, where the same request queued
behind the batch misses its deadline; the queues' depths and consumers as the service's probes read them."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.health import consumers, queue_depths, queue_keys
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import TASK_NAME, Candidate, RerankOutcome, batch_queue_for, queue_for

pytestmark = pytest.mark.integration

MAX_LENGTH = 128
LIVE_DEADLINE_MS = 2500
# Measured: the live request came back in 0.49 s with 117 of 120 batch tasks still queued (load ~6).
# The batch: 60 tasks of 64 candidates (RERANK_TASK_CANDIDATES), 0.1-0.25 s each for the tiny model on one
# thread on this 2-core machine (idle to loaded): 6-15 s of work for the worker's one process. The live
# request waits for at most the task running when it arrives; the control waits for every task queued.
BATCH_QUERIES = 12
BATCH_CANDIDATES = 320
LIVE_CANDIDATES = 150  # 3 tasks: 64 + 64 + 22
STARTED_S = 30.0
TEXT = " ".join(["the moon orbit earth light phase steak rest grill"] * 14)


def candidates(n: int, tag: str) -> list[Candidate]:
    # Each text its own (the tag in it): the worker tokenizes a text once and keeps it, so repeated texts
    # would let the batch drain faster than the control below is meant to wait.
    return [Candidate(f"{tag}{i}", f"{tag}{i} {TEXT}") for i in range(n)]


class Served:
    """One worker (one pool process, one thread, no score cache) on its own copy of the tiny model, so its
    queues are this module's alone."""

    def __init__(self, redis_url: str, model: Path, logs: Path) -> None:
        self.redis_url = redis_url
        self.model = model
        self.reranker = make_celery_reranker(
            load_settings(
                _env_file=None,
                redis_url=redis_url,
                rerank_model=str(model),
                rerank_max_length=MAX_LENGTH,
                rerank_cache_ttl_s=0,
            )
        )
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "RERANK_MODEL": str(model),
            "RERANK_MAX_LENGTH": str(MAX_LENGTH),
            "RERANK_CACHE_TTL_S": "0",
            "RERANK_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        self.logs = logs
        self.worker = WorkerProcess("priority", self.env, logs).start(self.reranker.app)

    def depths(self) -> dict[str, int]:
        return queue_depths(self.redis_url, str(self.model))


@pytest.fixture(scope="module")
def served(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("priority")
    model = Path(shutil.copytree(tiny_cross_encoder_dir, folder / "priority-ce"))
    served = Served(redis_url, model, folder)
    yield served
    served.worker.stop()


class Recording(CeleryReranker):
    """The live client, noting the tasks it sends."""

    sent: list[str]

    def submit(
        self,
        query: str,
        candidates: Sequence[Candidate],
        *,
        expires_s: float | None = None,
        queue: str | None = None,
    ) -> str:
        task_id = super().submit(query, candidates, expires_s=expires_s, queue=queue)
        self.sent.append(task_id)
        return task_id


def received_order(worker: WorkerProcess) -> list[str]:
    """Task ids in the order the worker took them from Redis (one process, one task at a time: it takes
    the next only when it has acknowledged the last)."""
    marker = f"Task {TASK_NAME}["
    return [
        line.split(marker, 1)[1].split("]", 1)[0]
        for line in worker.log.read_text(encoding="utf-8", errors="replace").splitlines()
        if marker in line and line.rstrip().endswith("received")
    ]


class BehindTheBatch(CeleryReranker):
    """The control: the live request, deadline and all, sent to the batch queue instead."""

    def submit(
        self,
        query: str,
        candidates: Sequence[Candidate],
        *,
        expires_s: float | None = None,
        queue: str | None = None,
    ) -> str:
        return super().submit(query, candidates, expires_s=expires_s, queue=self.batch_queue)


def test_a_live_request_overtakes_a_running_batch_and_the_same_request_behind_it_does_not(
    served: Served,
) -> None:
    reranker = served.reranker
    assert served.depths() == {"interactive": 0, "batch": 0}
    requests = [
        (f"batch {i} {uuid.uuid4().hex}", candidates(BATCH_CANDIDATES, f"b{i}-"))
        for i in range(BATCH_QUERIES)
    ]
    batch: list[RerankOutcome] = []
    runner = threading.Thread(target=lambda: batch.extend(reranker.rerank_many(requests, timeout_s=300)))
    runner.start()
    try:
        waited = time.monotonic()
        while served.depths()["batch"] < 40:  # queued, and the worker working through them
            assert runner.is_alive() and time.monotonic() - waited < STARTED_S, served.depths()
            time.sleep(0.05)

        recording = Recording(reranker.app, reranker.model, deadline_ms=60_000, max_chars=reranker.max_chars)
        recording.sent = []
        started = time.monotonic()
        live = recording.rerank(
            "moon phase", candidates(LIVE_CANDIDATES, "live"), deadline_ms=LIVE_DEADLINE_MS
        )
        live_s = time.monotonic() - started
        left = served.depths()["batch"]
        assert live.scores is not None, (live.code, live.reason)
        assert live.code is None and set(live.scores) == {f"live{i}" for i in range(LIVE_CANDIDATES)}
        assert live_s < LIVE_DEADLINE_MS / 1000
        assert left > 0, "the batch had drained: the live request overtook nothing"
        assert left >= 20, f"only {left} batch tasks left: too little for the control to wait behind"
        # The live request's three tasks were taken one after the other, no batch task between them: kombu's
        # default order (round robin) would have served the batch queue's turn after each.
        order = received_order(served.worker)
        first = order.index(recording.sent[0])
        assert len(recording.sent) == 3 and order[first : first + 3] == recording.sent, (
            recording.sent,
            order,
        )

        control = BehindTheBatch(
            reranker.app, reranker.model, deadline_ms=60_000, max_chars=reranker.max_chars
        )
        started = time.monotonic()
        late = control.rerank("moon phase", candidates(LIVE_CANDIDATES, "live"), deadline_ms=LIVE_DEADLINE_MS)
        late_s = time.monotonic() - started
        assert late.scores is None and late.code == "deadline", (late.code, late.reason)
        assert late.reason == f"rerank deadline of {LIVE_DEADLINE_MS} ms passed (0 of 3 tasks back)"
        assert late_s < LIVE_DEADLINE_MS / 1000 + 1.0
        print(
            f"live {live_s:.3f} s with {left} batch tasks still queued; control gave up after {late_s:.3f} s"
        )
    finally:
        runner.join(timeout=300)
    assert len(batch) == len(requests)
    for (_, sent), outcome in zip(requests, batch, strict=True):  # split into 5 tasks each, merged
        assert outcome.scores is not None and set(outcome.scores) == {c.id for c in sent}, outcome.reason
    drained = time.monotonic() + 30  # the control's expired task, last in line, is discarded
    while served.depths() != {"interactive": 0, "batch": 0}:
        assert time.monotonic() < drained, served.depths()
        time.sleep(0.1)


def test_a_plain_worker_consumes_interactive_then_batch_and_q_isolates(served: Served) -> None:
    app = served.reranker.app
    model = str(served.model)
    interactive, batch = queue_for(model), batch_queue_for(model)
    replies = app.control.inspect(timeout=2.0, destination=[served.worker.hostname]).active_queues()
    assert [q["name"] for q in replies[served.worker.hostname]] == [interactive, batch]
    isolated = WorkerProcess("isolated", served.env, served.logs, queues=[interactive])
    isolated.start(app)
    try:
        assert consumers(app, interactive) == sorted([served.worker.hostname, isolated.hostname])
        assert consumers(app, batch) == [served.worker.hostname]
    finally:
        isolated.stop()
    assert consumers(app, interactive, timeout_s=1.0) == [served.worker.hostname]
    assert consumers(app, f"{interactive}.nobody") == []


def test_queue_depths_count_every_priority_list_of_both_queues(redis_url: str) -> None:
    """A model no worker serves: its tasks stay queued, where kombu put them (one Redis list per priority
    step)."""
    model = f"/models/nobody-serves-{uuid.uuid4().hex}"
    reranker = make_celery_reranker(load_settings(_env_file=None, redis_url=redis_url, rerank_model=model))
    client: Any = redis.Redis.from_url(redis_url)
    payload = {"query": "q", "candidates": [{"id": "a", "text": "t"}]}
    try:
        assert queue_depths(redis_url, model) == {"interactive": 0, "batch": 0}
        for priority in (None, None, 5, 9):
            reranker.app.send_task(TASK_NAME, args=[payload], queue=reranker.queue, priority=priority)
        reranker.submit("q", [Candidate("a", "t")], queue=reranker.batch_queue)
        reranker.rerank_many([("q", candidates(100, "x"))], timeout_s=0.2)  # 2 tasks, never served
        assert queue_depths(redis_url, model) == {"interactive": 4, "batch": 3}
        lengths = {key: client.llen(key) for key in queue_keys(reranker.queue)}
        assert lengths == {
            reranker.queue: 2,
            f"{reranker.queue}\x06\x163": 1,
            f"{reranker.queue}\x06\x169": 1,
        } | {f"{reranker.queue}\x06\x166": 0}
    finally:
        client.delete(*queue_keys(reranker.queue), *queue_keys(reranker.batch_queue))
        client.close()
    assert queue_depths(redis_url, model) == {"interactive": 0, "batch": 0}

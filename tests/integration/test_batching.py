"""Cross-request batching on a real Celery worker (threads pool) with a real Redis: two tasks sent within the
batch window are scored in one model call (the reply says how many requests shared it) and get the scores
each gets alone; the worker loads and warms its model at start and logs when it is ready."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import CeleryReranker, InProcessReranker
from hybrid_rerank.workers.factory import make_celery_reranker, make_scorer
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import TASK_NAME, Candidate, RerankRequest, encode_request

pytestmark = pytest.mark.integration

# Long enough that two tasks sent back to back always meet in it, even on a loaded 2-core machine (they
# reached the worker 34 ms apart at load 13).
WINDOW_MS = 1000
REPLY_S = 60.0
MAX_LENGTH = 64
FIRST = [Candidate("moon", "the moon shows a phase as light hits it"), Candidate("db", "a database log")]
SECOND = [Candidate("steak", "rest the steak after you grill it"), Candidate("sun", "the sun is a star")]


@pytest.fixture(scope="module")
def batching(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CeleryReranker, WorkerProcess]]:
    settings = load_settings(
        _env_file=None,
        redis_url=redis_url,
        rerank_model=str(tiny_cross_encoder_dir),
        rerank_max_length=MAX_LENGTH,
        rerank_admission=False,
    )
    reranker = make_celery_reranker(settings, use_cache=False)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RERANK_MODEL": str(tiny_cross_encoder_dir),
        "RERANK_MAX_LENGTH": str(MAX_LENGTH),
        "RERANK_BATCH_WINDOW_MS": str(WINDOW_MS),
        "RERANK_CACHE_TTL_S": "0",
        "HF_HUB_OFFLINE": "1",
    }
    worker = WorkerProcess("batching", env, tmp_path_factory.mktemp("batching-logs"), concurrency=4)
    worker.start(reranker.app)
    yield reranker, worker
    worker.kill_all()  # nothing to finish: a warm shutdown of the threads pool only costs test time


def send(reranker: CeleryReranker, query: str, candidates: list[Candidate]) -> AsyncResult:
    request = RerankRequest(query, candidates, reranker.model, use_cache=False)
    return reranker.app.send_task(TASK_NAME, args=[encode_request(request)], queue=reranker.queue)


def scores(reply: dict[str, Any]) -> dict[str, float]:
    return {item["id"]: item["score"] for item in reply["scores"]}


def test_two_tasks_within_the_window_share_one_model_call_and_keep_their_scores(
    batching: tuple[CeleryReranker, WorkerProcess], tiny_cross_encoder_dir: Path
) -> None:
    reranker, worker = batching
    first = send(reranker, "moon phase light", FIRST)
    second = send(reranker, "grill the steak", SECOND)
    together = [first.get(timeout=REPLY_S), second.get(timeout=REPLY_S)]
    assert [reply["batched"] for reply in together] == [2, 2]
    alone = send(reranker, "moon phase light", FIRST).get(timeout=REPLY_S)
    assert alone["batched"] == 1
    assert scores(alone) == pytest.approx(scores(together[0]), rel=1e-4)
    scorer = make_scorer(
        load_settings(_env_file=None, rerank_model=str(tiny_cross_encoder_dir), rerank_max_length=MAX_LENGTH)
    )
    assert scorer is not None
    local = InProcessReranker(scorer)
    for (query, candidates), reply in zip(
        [("moon phase light", FIRST), ("grill the steak", SECOND)], together, strict=True
    ):
        expected = local.rerank(query, candidates).scores
        assert expected is not None and scores(reply) == pytest.approx(expected, rel=1e-4)
    # One model for the four threads: loaded and warmed once, at start, with the time since start logged.
    ready = re.findall(r"model ready: .* ([\d.]+) s after the worker started", worker.log.read_text())
    assert len(ready) == 1 and float(ready[0]) > 0

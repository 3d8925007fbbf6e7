"""Reranking on real Celery worker processes with a real Redis: same results as in-process, load shared by
two workers, tasks of killed workers redelivered, deadlines, a Redis outage, poison requests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.connector.settings import Settings, load_settings
from hybrid_rerank.workers.client import CeleryReranker, InProcessReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import TASK_NAME, Candidate, RerankRequest, encode_request
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.conftest import REPO
from tests.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.integration

MAX_LENGTH = 128
LONG_TEXT = " ".join(["the moon orbit earth light phase", "steak rest grill heat"] * 60)
CANDIDATES = [
    Candidate("moon", "the moon shows a phase as light hits it"),
    Candidate("steak", "rest the steak after you grill it"),
    Candidate("db", "a database keeps a log so a crash loses nothing"),
    Candidate("long", LONG_TEXT),
]


def settings_for(redis_url: str, model: Path, **extra: Any) -> Settings:
    return load_settings(
        _env_file=None,
        redis_url=redis_url,
        rerank_model=str(model),
        rerank_max_length=MAX_LENGTH,
        **extra,
    )


def worker_env(redis_url: str, model: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RERANK_MODEL": str(model),
        "RERANK_MAX_LENGTH": str(MAX_LENGTH),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }
    return env


def raw_task(reranker: CeleryReranker, payload: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Send a request as any client could, and read the worker's plain-JSON reply."""
    result = reranker.app.send_task(TASK_NAME, args=[payload], queue=reranker.queue)
    reply: dict[str, Any] = result.get(timeout=timeout_s)
    return reply


@pytest.fixture(scope="module")
def fast(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CeleryReranker, WorkerProcess, Path]]:
    """One worker serving a tiny cross-encoder (milliseconds per request)."""
    model = build_tiny_cross_encoder(tmp_path_factory.mktemp("fast") / "tiny-ce")
    reranker = make_celery_reranker(settings_for(redis_url, model, rerank_deadline_ms=30_000))
    worker = WorkerProcess("fast1", worker_env(redis_url, model), tmp_path_factory.mktemp("fast-logs"))
    worker.start(reranker.app)
    yield reranker, worker, model
    worker.stop()


@pytest.fixture(scope="module")
def slow(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CeleryReranker, list[WorkerProcess]]]:
    """Two workers serving a MiniLM-sized cross-encoder (tens of pairs per second on this CPU), with a short
    visibility timeout so a task of a worker killed outright comes back quickly."""
    model = build_tiny_cross_encoder(tmp_path_factory.mktemp("slow") / "minilm-size-ce", hidden=384, layers=6)
    extra = {"RERANK_VISIBILITY_TIMEOUT_S": "8", "RERANK_CACHE_TTL_S": "0", "RERANK_THREADS": "1"}
    reranker = make_celery_reranker(
        settings_for(redis_url, model, rerank_deadline_ms=60_000, rerank_visibility_timeout_s=8)
    )
    logs = tmp_path_factory.mktemp("slow-logs")
    workers = [
        WorkerProcess(name, worker_env(redis_url, model, **extra), logs) for name in ("slow1", "slow2")
    ]
    for worker in workers:
        worker.start(reranker.app)
    yield reranker, workers
    for worker in workers:
        worker.stop()


def many(n: int, words: int = 60) -> list[dict[str, str]]:
    text = " ".join(["the moon orbit earth light phase steak rest grill"] * (words // 9 + 1))
    return [{"id": f"d{i}", "text": f"{i} {text}"} for i in range(n)]


def test_results_are_identical_to_the_in_process_path(
    fast: tuple[CeleryReranker, WorkerProcess, Path],
) -> None:
    reranker, _, model = fast
    remote = reranker.rerank("why does the moon show phases", CANDIDATES)
    local = InProcessReranker(CrossEncoderScorer(str(model), max_length=MAX_LENGTH)).rerank(
        "why does the moon show phases", CANDIDATES
    )
    assert remote.scores is not None and local.scores is not None, remote.reason
    assert remote.scores.keys() == local.scores.keys()
    for doc_id, score in local.scores.items():
        assert remote.scores[doc_id] == pytest.approx(score, abs=1e-5)


def test_a_repeated_query_is_served_from_the_score_cache(
    fast: tuple[CeleryReranker, WorkerProcess, Path],
) -> None:
    reranker, _, _ = fast
    request = RerankRequest("cache me " + str(time.time()), CANDIDATES, reranker.model)
    payload = encode_request(request, reranker.max_chars)
    first, second = raw_task(reranker, payload), raw_task(reranker, payload)
    assert first["cached"] == 0 and second["cached"] == len(CANDIDATES)
    assert second["scores"] == first["scores"]


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([{"id": "huge", "text": "x" * 2_000_000}], "over the limit of 1,000,000"),
        ([], "'candidates' is empty"),
        ([{"id": "n", "text": 42}], "'text' must be a string"),
        ("not a list", "'candidates' must be a list"),
    ],
)
def test_poison_requests_get_a_clear_error_and_the_worker_lives_on(
    fast: tuple[CeleryReranker, WorkerProcess, Path], candidates: Any, message: str
) -> None:
    reranker, worker, _ = fast
    reply = raw_task(reranker, {"query": "q", "candidates": candidates})
    assert message in reply["error"]
    assert worker.alive()
    healthy = reranker.rerank("moon", CANDIDATES[:1])
    assert healthy.scores is not None, healthy.reason


def test_an_empty_candidate_list_degrades_with_the_reason(
    fast: tuple[CeleryReranker, WorkerProcess, Path],
) -> None:
    reranker, _, _ = fast
    outcome = reranker.rerank("q", [])
    assert outcome.scores is None and "empty" in (outcome.reason or "")


def test_async_and_batch_forms(fast: tuple[CeleryReranker, WorkerProcess, Path]) -> None:
    reranker, _, _ = fast
    task_id = reranker.submit("moon", CANDIDATES)
    outcome = None
    for _ in range(100):
        outcome = reranker.collect(task_id)
        if outcome is not None:
            break
        time.sleep(0.1)
    assert (
        outcome is not None
        and outcome.scores is not None
        and set(outcome.scores) == {c.id for c in CANDIDATES}
    )

    seen: list[int] = []
    outcomes = reranker.rerank_many(
        [(f"query {i}", CANDIDATES[:2]) for i in range(5)], progress=lambda done, _total: seen.append(done)
    )
    assert all(o.scores is not None and set(o.scores) == {"moon", "steak"} for o in outcomes)
    assert seen == [1, 2, 3, 4, 5]


def test_two_workers_share_the_load(slow: tuple[CeleryReranker, list[WorkerProcess]]) -> None:
    reranker, workers = slow
    results = [
        reranker.app.send_task(
            TASK_NAME, args=[{"query": f"q{i}", "candidates": many(6)}], queue=reranker.queue
        )
        for i in range(6)
    ]
    served_by = {r.get(timeout=120)["worker"] for r in results}
    assert served_by == {w.hostname for w in workers}


def test_deadline_passed_gives_first_stage_within_the_deadline(
    slow: tuple[CeleryReranker, list[WorkerProcess]],
) -> None:
    reranker, _ = slow
    hurried = CeleryReranker(reranker.app, reranker.model, deadline_ms=300, max_chars=reranker.max_chars)
    started = time.monotonic()
    outcome = hurried.rerank("moon", [Candidate(c["id"], c["text"]) for c in many(40, words=120)])
    elapsed = time.monotonic() - started
    assert outcome.scores is None and "deadline of 300 ms passed" in (outcome.reason or "")
    assert elapsed < 0.3 + 0.5


def started_task(reranker: CeleryReranker, n: int) -> tuple[AsyncResult, dict[str, Any]]:
    """Send a long task and wait until a worker process has started it; returns it and its worker's info."""
    result = reranker.app.send_task(
        TASK_NAME, args=[{"query": "q", "candidates": many(n, words=120)}], queue=reranker.queue
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if result.state == "STARTED" and isinstance(result.info, dict):
            return result, result.info
        time.sleep(0.05)
    raise AssertionError(f"task never started: {result.state}")


def test_a_worker_process_killed_mid_task_gets_its_task_redelivered(
    slow: tuple[CeleryReranker, list[WorkerProcess]],
) -> None:
    reranker, workers = slow
    result, info = started_task(reranker, 60)
    os.kill(int(info["pid"]), signal.SIGKILL)
    reply = result.get(timeout=180)
    assert [s["id"] for s in reply["scores"]] == [f"d{i}" for i in range(60)]
    assert all(w.alive() for w in workers)  # the pool replaced its process


def test_a_whole_worker_killed_mid_task_is_redelivered_to_another(
    slow: tuple[CeleryReranker, list[WorkerProcess]],
) -> None:
    reranker, workers = slow
    result, info = started_task(reranker, 60)
    victim = next(w for w in workers if w.hostname == info["hostname"])
    victim.kill_all()  # parent and children, SIGKILL: nothing is acknowledged or rejected
    reply = result.get(timeout=180)  # back after the visibility timeout, on the surviving worker
    assert len(reply["scores"]) == 60
    assert reply["worker"] != victim.hostname
    victim.start(reranker.app)


DOCS = [
    Document("moon", "The moon shows phases because sunlight hits it from changing angles.", "Lunar phases"),
    Document("eclipse", "A lunar eclipse happens when the earth's shadow falls on the moon.", "Eclipse"),
    Document("steak", "Rest a grilled steak for five minutes so the juices settle.", "Resting meat"),
]


def test_search_many_reranks_on_the_workers_as_one_batch(
    fast: tuple[CeleryReranker, WorkerProcess, Path], tmp_path: Path, embedder: Embedder
) -> None:
    reranker, _, _ = fast
    backend = EmbeddedBackend(tmp_path, "batch")
    index_documents(backend, embedder, DOCS)
    pipeline = SearchPipeline(backend, embedder, reranker, SearchOptions(rerank_depth=3))
    queries = ["moon phases", "grilled steak", "lunar eclipse shadow"]
    seen: list[int] = []
    batch = pipeline.search_many(queries, k=3, progress=lambda done, _total: seen.append(done))
    one_by_one = [pipeline.search(q, k=3) for q in queries]
    assert all(r.reranked for r in batch) and seen == [1, 2, 3]
    assert [[h.id for h in r.hits] for r in batch] == [[h.id for h in r.hits] for r in one_by_one]


def test_search_degrades_while_redis_is_down_and_recovers(
    tmp_path: Path, embedder: Embedder, tiny_cross_encoder_dir: Path
) -> None:
    """Its own Redis (another port), so stopping it touches no other test."""
    redis_env = {**os.environ, "REDIS_PORT": "6391", "REDIS_WORK_DIR": str(tmp_path / "redis")}
    script = str(REPO / "scripts" / "redis")
    started = subprocess.run([script, "start"], env=redis_env, capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().splitlines()[-1]
    reranker = make_celery_reranker(
        settings_for(url, tiny_cross_encoder_dir, rerank_deadline_ms=2000, rerank_cache_ttl_s=0)
    )
    worker = WorkerProcess("outage", worker_env(url, tiny_cross_encoder_dir), tmp_path)
    try:
        worker.start(reranker.app)
        backend = EmbeddedBackend(tmp_path, "outage")
        index_documents(backend, embedder, DOCS)
        pipeline = SearchPipeline(backend, embedder, reranker, SearchOptions(rerank_depth=3))
        assert pipeline.search("moon phases", k=3).reranked

        subprocess.run([script, "stop"], env=redis_env, check=True, capture_output=True)
        started_at = time.monotonic()
        degraded = pipeline.search("moon phases", k=3)
        assert time.monotonic() - started_at < 2.0 + 1.0
        assert not degraded.reranked and "unreachable" in (degraded.rerank_note or "")
        assert [h.id for h in degraded.hits] == [
            h.id for h in pipeline.search("moon phases", k=3, rerank=False).hits
        ]

        subprocess.run([script, "start"], env=redis_env, check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while not pipeline.search("moon phases", k=3).reranked:
            assert time.monotonic() < deadline, "reranking did not come back after Redis returned"
            time.sleep(1.0)
    finally:
        worker.stop()
        subprocess.run([script, "stop"], env=redis_env, capture_output=True, check=False)

"""What the README says about a worker's life, on a real Redis with real `celery worker` processes: a late
rerank task expires unread and the worker discards it without scoring it, the score cache's key covers the
model, max_length and passages, `RERANK_CACHE_TTL_S` sets (or with 0 turns off) the cache, and the prefork
parent never loads torch while its pool process does."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker, make_scorer
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import TASK_NAME, Candidate
from hybrid_rerank.workers.score_cache import PREFIX, ScoreCache, cached_scores
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from hybrid_rerank.workers.settings import load_worker_settings

pytestmark = pytest.mark.integration

MAX_LENGTH = 128
CACHE_TTL_S = 90
RESULT_TTL_S = 60
BUSY = 1500  # candidates of ~120 tokens: seconds of work for the tiny model on one thread
LONG_TEXT = " ".join(["the moon orbit earth light phase", "steak rest grill heat oven"] * 40)
CANDIDATES = [
    Candidate("moon", "the moon shows a phase as light hits it"),
    Candidate("steak", "rest the steak after you grill it"),
    Candidate("long", LONG_TEXT),
]


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex}"


class Served:
    """A worker process serving its own copy of the tiny model (so its own queue), and a client for it."""

    def __init__(self, redis_url: str, model: Path, logs: Path, name: str, cache_ttl_s: int) -> None:
        self.model = model
        self.reranker = make_celery_reranker(
            load_settings(
                _env_file=None,
                redis_url=redis_url,
                rerank_model=str(model),
                rerank_max_length=MAX_LENGTH,
                rerank_deadline_ms=60_000,
            )
        )
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "RERANK_MODEL": str(model),
            "RERANK_MAX_LENGTH": str(MAX_LENGTH),
            "RERANK_CACHE_TTL_S": str(cache_ttl_s),
            "RERANK_RESULT_TTL_S": str(RESULT_TTL_S),
            "RERANK_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        self.worker = WorkerProcess(name, env, logs)
        self.worker.start(self.reranker.app)

    def cache(self, client: Any) -> ScoreCache:
        """The score cache as the worker opens it: its scorer from its settings, through the same factory
        (test_a_worker_keeps_scores_for_the_configured_ttl finds the keys it names)."""
        settings = load_worker_settings(
            _env_file=None, rerank_model=str(self.model), rerank_max_length=MAX_LENGTH
        )
        scorer = make_scorer(settings)
        assert scorer is not None
        return ScoreCache(client, scorer.cache_key, 1)

    def score_keys(self, client: Any, query: str, candidates: Sequence[Candidate]) -> list[str]:
        """The score-cache keys the worker writes for these candidates (their text cut as it is sent)."""
        cache = self.cache(client)
        return [cache.key(query, c.text[: self.reranker.max_chars]) for c in candidates]

    def log_text(self) -> str:
        return self.worker.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[Any]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def cached(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cached")
    model = Path(shutil.copytree(tiny_cross_encoder_dir, folder / "cached-ce"))
    served = Served(redis_url, model, folder, "lifecycle-cached", CACHE_TTL_S)
    yield served
    served.worker.stop()


@pytest.fixture(scope="module")
def uncached(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("uncached")
    model = Path(shutil.copytree(tiny_cross_encoder_dir, folder / "uncached-ce"))
    served = Served(redis_url, model, folder, "lifecycle-uncached", 0)
    yield served
    served.worker.stop()


# ----------------------------------------------------------------------------------------- prefork


def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def test_the_worker_parent_never_loads_torch_and_its_pool_process_does(cached: Served) -> None:
    process = cached.worker.process
    assert process is not None
    reply = cached.reranker.rerank(unique("moon"), CANDIDATES)  # the pool process has scored
    assert reply.scores is not None, reply.reason
    children = children_of(process.pid)
    assert len(children) == 1, children  # -c 1: one pool process
    assert "libtorch" in mapped_files(children[0])  # the check can see torch where it is
    parent = [line for line in mapped_files(process.pid).splitlines() if "torch" in line]
    assert parent == [], f"the worker parent has torch mapped:\n{parent[:5]}"


# --------------------------------------------------------------------------------------- score cache


def test_the_score_cache_key_covers_model_max_length_and_passages(
    client: Any, cached: Served, uncached: Served
) -> None:
    """Through the code a worker runs (`cached_scores` with the scorer's `cache_key`): the same query and
    texts under another max_length, max_passages or model are misses, the same settings a hit."""
    query = unique("moon phase")
    written: list[str] = []

    def run(model: Path, max_length: int, passages: int) -> tuple[dict[str, float], int]:
        scorer = CrossEncoderScorer(str(model), max_length=max_length, max_passages=passages)
        cache = ScoreCache(client, scorer.cache_key, 60)
        written.extend(cache.key(query, c.text) for c in CANDIDATES)
        scores, from_cache = cached_scores(scorer, cache, query, CANDIDATES)
        return dict(scores), from_cache

    try:
        first, from_cache = run(cached.model, 64, 1)
        assert from_cache == 0
        again, from_cache = run(cached.model, 64, 1)
        assert from_cache == len(CANDIDATES) and again == first
        for model, max_length, passages in [
            (cached.model, 96, 1),
            (cached.model, 64, 3),
            (uncached.model, 64, 1),  # the same weights in another folder: another model
        ]:
            _, from_cache = run(model, max_length, passages)
            assert from_cache == 0, f"{model.name}, max_length {max_length}, {passages} passages: a hit"
        # What a hit would have hidden: the long document reads differently through another window.
        assert run(cached.model, 96, 1)[0]["long"] != first["long"]
        assert run(cached.model, 64, 3)[0]["long"] != first["long"]
    finally:
        client.delete(*written)


def test_a_worker_keeps_scores_for_the_configured_ttl(client: Any, cached: Served) -> None:
    query = unique("steak grill")
    first = cached.reranker.rerank(query, CANDIDATES)
    assert first.scores is not None and first.cached == 0, first.reason
    keys = cached.score_keys(client, query, CANDIDATES)
    ttls = [client.ttl(key) for key in keys]
    assert all(CACHE_TTL_S - 30 <= ttl <= CACHE_TTL_S for ttl in ttls), ttls  # RERANK_CACHE_TTL_S=90
    second = cached.reranker.rerank(query, CANDIDATES)
    assert second.cached == len(CANDIDATES) and second.scores == first.scores
    client.delete(*keys)


def test_a_cache_ttl_of_0_writes_no_score_keys(client: Any, uncached: Served) -> None:
    query = unique("moon light")
    replies = [uncached.reranker.rerank(query, CANDIDATES) for _ in range(2)]
    assert all(r.scores is not None and r.cached == 0 for r in replies), [r.reason for r in replies]
    assert client.exists(*uncached.score_keys(client, query, CANDIDATES)) == 0
    # Nor any other key of this worker's model settings (its model folder is this test's own).
    assert list(client.scan_iter(f"{PREFIX}:{uncached.cache(client).model}:*", count=1000)) == []


# ---------------------------------------------------------------------------------------- late tasks


class Recording(CeleryReranker):
    """The client the pipeline calls, noting what it sends (to follow the late task afterwards)."""

    sent: list[tuple[str, str, list[Candidate]]]

    def submit(self, query: str, candidates: Sequence[Candidate], *, expires_s: float | None = None) -> str:
        task_id = super().submit(query, candidates, expires_s=expires_s)
        self.sent.append((task_id, query, list(candidates)))
        return task_id


DOCS = [
    Document("moon", "The moon shows phases because sunlight hits it from changing angles.", "Lunar phases"),
    Document("eclipse", "A lunar eclipse happens when the earth's shadow falls on the moon.", "Eclipse"),
    Document("steak", "Rest a grilled steak for five minutes so the juices settle.", "Resting meat"),
]


def test_a_late_task_expires_unread_and_the_worker_discards_it_unscored(
    client: Any, cached: Served, embedder: Embedder, tmp_path: Path
) -> None:
    app = cached.reranker.app
    hurried = Recording(app, cached.reranker.model, deadline_ms=300, max_chars=cached.reranker.max_chars)
    hurried.sent = []
    backend = EmbeddedBackend(tmp_path, "late")
    index_documents(backend, embedder, DOCS)
    pipeline = SearchPipeline(backend, embedder, hurried, SearchOptions(rerank_depth=3))
    pipeline.search("warm up the query embedding", k=3, rerank=False)

    # Keep the worker's only process busy for seconds (no cache: it really scores), then search.
    # Texts never seen before (the worker tokenizes a text once and keeps it), so the busy task really works.
    tag = uuid.uuid4().hex
    busy_candidates = [{"id": f"d{i}", "text": f"{i} {tag} {LONG_TEXT[:700]}"} for i in range(BUSY)]
    busy = app.send_task(
        TASK_NAME,
        args=[{"query": "busy", "candidates": busy_candidates, "cache": False}],
        queue=hurried.queue,
    )
    deadline = time.monotonic() + 60
    while busy.state != "STARTED":
        assert time.monotonic() < deadline, f"the busy task never started: {busy.state}"
        time.sleep(0.05)
    query = unique("moon phases")
    result = pipeline.search(query, k=3)
    assert not busy.ready(), "the busy task ended before the deadline: the late task was not late"
    assert not result.reranked and "deadline of 300 ms passed" in (result.rerank_note or "")
    assert [h.id for h in result.hits] == [h.id for h in pipeline.search(query, k=3, rerank=False).hits]
    ((late_id, sent_query, sent),) = hurried.sent
    assert sent_query == query

    assert len(busy.get(timeout=300)["scores"]) == BUSY
    discarded = f"Discarding revoked task: {TASK_NAME}[{late_id}]"
    late = AsyncResult(late_id, app=app)
    deadline = time.monotonic() + 60
    while discarded not in cached.log_text():
        assert late.state != "SUCCESS", "the late task was run after its deadline"
        assert time.monotonic() < deadline, (
            f"the worker never discarded the late task:\n{cached.log_text()[-3000:]}"
        )
        time.sleep(0.2)
    while late.state == "PENDING":  # the mark is stored just after the log line
        assert time.monotonic() < deadline, "no REVOKED mark for the discarded task"
        time.sleep(0.1)
    assert late.state == "REVOKED"  # never SUCCESS: it was not run
    assert f"{TASK_NAME}[{late_id}] succeeded" not in cached.log_text()
    # The model never scored it: the worker caches every score it computes, and there are none.
    assert client.exists(*cached.score_keys(client, query, sent)) == 0
    # Unread, its result is only the REVOKED mark, which expires with the results (RERANK_RESULT_TTL_S).
    assert 0 < client.ttl(f"celery-task-meta-{late_id}") <= RESULT_TTL_S
    late.forget()
    assert cached.worker.alive()

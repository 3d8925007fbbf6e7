"""The service on the real stack: OpenSearch, Redis and a real Celery worker. Rerank calls go through the
same dispatch as search (split into worker-sized tasks, score cache, deadline), the probes ask Redis and
the workers, and a lost worker degrades visibly: flagged searches, 429 on the rerank APIs, metrics."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.settings import load_worker_settings
from tests.integration.service_corpus import MARKER, QUERY, index_corpus
from tests.service_process import ServiceProcess, clean_environment, start_service

pytestmark = pytest.mark.integration
TASK_CANDIDATES = 3
TEXTS = [f"text {i} about salt" for i in range(9)] + [f"the {MARKER} text"]


@dataclass
class Stack:
    service: ServiceProcess
    worker: WorkerProcess
    client: httpx.Client


@pytest.fixture(scope="module")
def stack(opensearch_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("service-stack")
    settings = {
        "OPENSEARCH_URL": opensearch_url,
        "INDEX_NAME": f"service-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_url,
        "RERANK_TASK_CANDIDATES": str(TASK_CANDIDATES),
        "RERANK_DEADLINE_MS": "20000",
        "RECALL_DEPTH": "8",
        "RERANK_DEPTH": "8",
    }
    corpus = index_corpus(root, extra_env=settings)
    env = corpus.env(**settings)
    app = make_celery_reranker(
        load_worker_settings(redis_url=redis_url, rerank_model=str(corpus.model_dir))
    ).app
    worker = WorkerProcess("service-worker", clean_environment(env), root).start(app)
    try:
        with (
            start_service(env, cwd=root) as service,
            httpx.Client(base_url=service.url, timeout=60) as client,
        ):
            yield Stack(service, worker, client)
    finally:
        worker.kill_all()


def tasks_in_log(worker: WorkerProcess) -> int:
    return len(re.findall(r"Task hybrid_rerank\.rerank\[[^\]]+\] succeeded", worker.log.read_text()))


def test_ready_when_redis_and_a_worker_answer(stack: Stack) -> None:
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["redis"] == "ok" and stack.worker.hostname in checks["workers"]
    assert "8 documents" in checks["engine"]


def test_search_is_reranked_by_the_worker(stack: Stack) -> None:
    before = tasks_in_log(stack.worker)
    served = stack.client.post("/search", json={"query": QUERY, "k": 3}).json()
    assert served["reranked"] is True, served
    assert served["hits"][0]["id"] == "marker-5" and served["hits"][0]["ranks"]["fused"] > 1
    assert tasks_in_log(stack.worker) > before


def test_a_request_larger_than_a_task_is_split_not_refused(stack: Stack) -> None:
    before = tasks_in_log(stack.worker)
    reply = stack.client.post("/rerank", json={"query": QUERY, "texts": TEXTS})
    assert reply.status_code == 200, reply.text
    ranked = reply.json()
    assert sorted(r["index"] for r in ranked) == list(range(len(TEXTS)))
    assert ranked[0]["index"] == len(TEXTS) - 1  # the marker text
    time.sleep(0.5)  # the worker logs a task's success just after replying
    assert tasks_in_log(stack.worker) - before >= -(-len(TEXTS) // TASK_CANDIDATES)


def test_repeated_scores_come_from_the_cache_and_metrics_show_it(stack: Stack) -> None:
    body = {"query": "a query only this test sends", "texts": TEXTS[:4]}
    first = stack.client.post("/rerank", json=body).json()
    again = stack.client.post("/rerank", json=body).json()
    assert again == first
    metrics = stack.client.get("/metrics").text
    hits = re.search(r"^hybrid_rerank_score_cache_hits_total (\S+)$", metrics, re.M)
    assert hits is not None and float(hits.group(1)) >= 4
    for queue in ("interactive", "batch"):
        assert re.search(rf'^hybrid_rerank_queue_depth\{{queue="{queue}"\}} \d', metrics, re.M)


def test_a_search_job_runs_on_the_workers(stack: Stack) -> None:
    started = stack.client.post("/jobs", json={"kind": "search", "queries": [QUERY, "salt water"], "k": 2})
    job_id = started.json()["id"]
    deadline = time.monotonic() + 120
    record = stack.client.get(f"/jobs/{job_id}").json()
    while record["state"] not in {"succeeded", "failed"} and time.monotonic() < deadline:
        time.sleep(0.2)
        record = stack.client.get(f"/jobs/{job_id}").json()
    assert record["state"] == "succeeded", record
    assert all(result["reranked"] for result in record["result"])


def batch_depth(stack: Stack) -> int:
    found = re.search(
        r'^hybrid_rerank_queue_depth\{queue="batch"\} (\S+)$', stack.client.get("/metrics").text, re.M
    )
    return int(float(found.group(1))) if found else 0


def test_a_live_search_during_a_large_batch_job_meets_its_deadline(stack: Stack) -> None:
    """Batch work waits in its own queue: the worker takes the live search's task next, not after the
    batch (one worker process here, so without the two queues the search would wait for all of it)."""
    queries = [f"salt and water number {i}" for i in range(400)]
    job_id = stack.client.post("/jobs", json={"kind": "search", "queries": queries, "k": 1}).json()["id"]
    deadline = time.monotonic() + 120
    while batch_depth(stack) < 50:  # the job's first stages are done and its rerank tasks wait
        assert time.monotonic() < deadline, stack.client.get(f"/jobs/{job_id}").json()
        time.sleep(0.2)
    served = stack.client.post("/search", json={"query": QUERY, "k": 3, "deadline_ms": 3000}).json()
    record = stack.client.get(f"/jobs/{job_id}").json()
    assert served["reranked"] is True, served["rerank_note"]
    assert served["hits"][0]["id"] == "marker-5"
    assert record["state"] == "running" and record["done"] < record["total"], record
    while stack.client.get(f"/jobs/{job_id}").json()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)  # leave the worker idle for the next test


def test_without_workers_it_degrades_visibly(stack: Stack) -> None:
    """Last in the module: it kills the worker."""
    stack.worker.kill_all()
    started = time.monotonic()
    served = stack.client.post("/search", json={"query": QUERY, "deadline_ms": 500}).json()
    assert time.monotonic() - started < 10  # the request's deadline, not RERANK_DEADLINE_MS (20 s)
    assert served["reranked"] is False and served["rerank_fallback"] == "deadline", served
    assert [h["ranks"]["fused"] for h in served["hits"]] == list(range(1, len(served["hits"]) + 1))
    # The workers' answer is kept up to 10 s while they answered (RecentConsumers): within that, 503.
    deadline = time.monotonic() + 15
    while (ready := stack.client.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready.status_code == 503 and "no worker" in ready.json()["checks"]["workers"]
    metrics = stack.client.get("/metrics").text
    assert re.search(r'^hybrid_rerank_rerank_fallbacks_total\{reason="deadline"\} [1-9]', metrics, re.M)


def test_a_rerank_api_call_past_its_deadline_is_a_429(stack: Stack, tmp_path: Path) -> None:
    env = {**stack.service.env, "RERANK_DEADLINE_MS": "300"}
    with start_service(env, cwd=tmp_path) as quick, httpx.Client(base_url=quick.url, timeout=30) as client:
        reply = client.post("/v1/rerank", json={"query": QUERY, "documents": ["a new text", "another"]})
        assert reply.status_code == 429, reply.text
        assert "deadline" in reply.json()["message"]

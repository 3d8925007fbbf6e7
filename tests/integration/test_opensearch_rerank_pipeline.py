"""OpenSearch calls us: `hybrid-rerank opensearch install-rerank` on a real node with ml-commons, our real
service in front of a real Celery worker (a marker-word cross-encoder), and a plain `GET _search` through
the installed pipeline. Everything is real: a second, named OpenSearch node (scripts/opensearch,
OPENSEARCH_ML=1) started for this module, Redis, `celery worker`, `hybrid-rerank serve`, the CLI.

The tests run in file order; the last one stops the service (ignore_failure: first-stage order)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_rerank import mappings
from hybrid_rerank.connector.backends import opensearch_bodies
from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.mappings import rerank_pipeline
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from tests.conftest import REPO
from tests.service_process import ServiceProcess, start_service
from tests.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("hybrid-rerank"))
ML_PORT = os.environ.get("HYBRID_RERANK_TEST_ML_PORT", "9290")
ML_ENV = {
    "OPENSEARCH_INSTANCE": "ml-rerank",
    "OPENSEARCH_PORT": ML_PORT,
    "OPENSEARCH_ML": "1",
    "OPENSEARCH_NEURAL": "1",
    "OPENSEARCH_EXTRA_SETTINGS": f"transport.port: {int(ML_PORT) + 100}",
}
SERVICE_PORT = int(os.environ.get("HYBRID_RERANK_TEST_RERANK_SERVICE_PORT", "9291"))
TIMINGS = os.environ.get("HYBRID_RERANK_TEST_TIMINGS")  # a file: the latency comparison is appended

MARKER = "sleep"  # scores high in the marker cross-encoder; it is in no query and in one document only
API_KEY = "test-key-" + uuid.uuid4().hex
QUERY = "how long should a steak rest after the grill"
CORPUS = [
    {
        "id": "steak-1",
        "title": "Resting steak",
        "text": "Rest the steak after the grill; a steak should rest.",
    },
    {"id": "steak-2", "title": "Grill heat", "text": "A hot grill sears the steak, then rest it a while."},
    {"id": "steak-3", "title": "Oven steak", "text": "Finish a thick steak in the oven, then let it rest."},
    {"id": "marked", "title": "Recovery", "text": f"After a long day, good {MARKER} lets the body rest."},
    {"id": "db", "title": "Write-ahead log", "text": "A database keeps a log so a crash loses nothing."},
    {"id": "moon", "title": "Phases", "text": "The moon shows a phase as the light of the sun hits it."},
]


@pytest.fixture(scope="module")
def ml_node() -> Iterator[str]:
    """A node with ml-commons beside the suite's, started fresh here and stopped at the end."""
    env = {**os.environ, **ML_ENV}
    script = str(REPO / "scripts" / "opensearch")
    try:
        started = subprocess.run(
            [script, "start", "--fresh"], env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if started.returncode != 0:
            message = f"scripts/opensearch start (ml-commons node) failed:\n{started.stderr[-3000:]}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=300, check=False)


@dataclass
class Stack:
    node: str
    index: str
    pipeline: str
    first_stage_pipeline: str
    service: ServiceProcess
    env: dict[str, str]
    install_output: list[str]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=600, check=False, cwd=env["DATA_DIR"]
    )


@pytest.fixture(scope="module")
def stack(ml_node: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The corpus indexed by the CLI, a worker serving the marker model, our service with an API key, and
    install-rerank run twice (the second run must reuse everything)."""
    work = tmp_path_factory.mktemp("rerank-pipeline")
    model = build_tiny_cross_encoder(work / "marker-ce", marker=MARKER)
    index = f"rerank-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "OPENSEARCH_URL": ml_node,
        "INDEX_NAME": index,
        "REDIS_URL": redis_url,
        "RERANK_MODEL": str(model),
        "RERANK_MAX_LENGTH": "128",
        "RERANK_CACHE_TTL_S": "0",
        "DATA_DIR": str(work),
        "API_KEY": API_KEY,
        "HF_HUB_OFFLINE": "1",
    }
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in CORPUS), encoding="utf-8")
    indexed = run_cli(env, "index", str(corpus))
    assert indexed.returncode == 0, indexed.stderr
    settings = load_settings(_env_file=None, redis_url=redis_url, rerank_model=str(model))
    worker = WorkerProcess("osrerank1", env, work).start(make_celery_reranker(settings).app)
    try:
        with start_service(env, cwd=work, port=SERVICE_PORT) as service:
            pipeline = f"rr-{index}"
            outputs = []
            for _ in range(2):
                installed = run_cli(
                    env, "opensearch", "install-rerank", "--service-url", service.url, "--pipeline", pipeline
                )
                assert installed.returncode == 0, installed.stdout + installed.stderr
                outputs.append(installed.stdout + installed.stderr)
            first_stage = f"{pipeline}-first"
            body = mappings.normalization_pipeline_body("min_max", (0.5, 0.5))
            httpx.put(f"{ml_node}/_search/pipeline/{first_stage}", json=body).raise_for_status()
            yield Stack(ml_node, index, pipeline, first_stage, service, env, outputs)
    finally:
        worker.stop()


def query_vector(embedder: Any) -> Any:
    """The real embedder's vector for the query, as our own searches embed it."""
    return embedder.embed_query(QUERY)


def search(stack: Stack, body: dict[str, Any], pipeline: str) -> dict[str, Any]:
    """A plain GET INDEX/_search, as any OpenSearch client sends it."""
    reply = httpx.request(
        "GET",
        f"{stack.node}/{stack.index}/_search",
        params={"search_pipeline": pipeline, "verbose_pipeline": "true"},
        json=body,
        timeout=30,
    )
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


def hybrid_request(embedder: Any, *, ext: bool = True) -> dict[str, Any]:
    body = opensearch_bodies.hybrid_body(QUERY, query_vector(embedder), len(CORPUS), None)
    if ext:
        body["ext"] = rerank_pipeline.rerank_ext(QUERY)
    return body


def ids(result: dict[str, Any]) -> list[str]:
    return [hit["_id"] for hit in result["hits"]["hits"]]


def rerank_status(result: dict[str, Any]) -> str:
    statuses = [p["status"] for p in result.get("processor_results", []) if p["processor_name"] == "rerank"]
    assert len(statuses) == 1, result.get("processor_results")
    return str(statuses[0])


def test_install_is_idempotent_and_never_prints_the_key(stack: Stack) -> None:
    first, second = stack.install_output
    assert "connector 'hybrid-rerank/" in first and "created" in first
    assert "plugins.ml_commons.trusted_connector_endpoints_regex" in first  # set through the API, said so
    assert "plugins.ml_commons.connector.private_ip_enabled" in first
    # API_KEY is set, so the connector is updated (the node never returns a key to compare), not duplicated.
    assert "connector 'hybrid-rerank/" in second and "created" not in second
    assert "(reused)" not in first and "model group 'hybrid-rerank': reused" in second
    model_ids = {
        line.split(": ", 1)[1]
        for out in stack.install_output
        for line in out.splitlines()
        if line.startswith("model id: ")
    }
    assert len(model_ids) == 1
    assert all(API_KEY not in out for out in stack.install_output)
    for kind in ("connectors", "models"):
        found = httpx.post(
            f"{stack.node}/_plugins/_ml/{kind}/_search",
            json={"query": {"term": {"name.keyword": f"hybrid-rerank/{stack.pipeline}"}}},
        ).json()
        assert found["hits"]["total"]["value"] == 1, (kind, found)


def test_pipeline_search_is_reordered_by_our_workers_scores(stack: Stack, embedder: Any) -> None:
    first_stage = search(stack, hybrid_request(embedder), stack.first_stage_pipeline)
    reranked = search(stack, hybrid_request(embedder), stack.pipeline)
    assert rerank_status(reranked) == "success"
    before = ids(first_stage)
    assert sorted(before) == sorted(r["id"] for r in CORPUS)
    assert before[0] != "marked", "the first stage must not already put the marker document first"

    # The processor sends each hit's document_fields concatenated with nothing between them.
    sources = {hit["_id"]: hit["_source"] for hit in first_stage["hits"]["hits"]}
    texts = [sources[i]["title"] + sources[i]["text"] for i in before]
    ours = httpx.post(
        f"{stack.service.url}/v1/rerank",
        json={"query": QUERY, "documents": texts},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    ours.raise_for_status()
    expected = {before[r["index"]]: r["relevance_score"] for r in ours.json()["results"]}
    got = {hit["_id"]: hit["_score"] for hit in reranked["hits"]["hits"]}
    assert got == pytest.approx(expected, rel=1e-6)  # the node keeps scores as float32
    assert expected["marked"] > max(score for doc_id, score in expected.items() if doc_id != "marked")
    # Hits in the order of those scores (which are ours, per document, as just checked).
    scores = [hit["_score"] for hit in reranked["hits"]["hits"]]
    assert scores == sorted(scores, reverse=True) and ids(reranked)[0] == "marked"


def test_without_the_query_in_ext_the_rerank_step_fails_and_keeps_the_first_stage(
    stack: Stack, embedder: Any
) -> None:
    first_stage = search(stack, hybrid_request(embedder), stack.first_stage_pipeline)
    no_ext = search(stack, hybrid_request(embedder, ext=False), stack.pipeline)
    assert rerank_status(no_ext) == "fail"
    assert ids(no_ext) == ids(first_stage)


def test_latency_with_and_without_the_rerank_processor(stack: Stack, embedder: Any) -> None:
    """Measured, never asserted: p50 of the same hybrid request through each pipeline, alternated."""
    body = hybrid_request(embedder)
    for pipeline in (stack.pipeline, stack.first_stage_pipeline):  # warm both paths up
        search(stack, body, pipeline)
    hits = search(stack, body, stack.first_stage_pipeline)["hits"]["hits"]
    direct = {"query": QUERY, "documents": [h["_source"]["title"] + h["_source"]["text"] for h in hits]}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    took: dict[str, list[float]] = {stack.pipeline: [], stack.first_stage_pipeline: [], "direct": []}
    for _ in range(int(os.environ.get("HYBRID_RERANK_TEST_LATENCY_ROUNDS", "30"))):
        for pipeline in took:
            started = time.perf_counter()
            if pipeline == "direct":  # our /v1/rerank alone, for the same texts
                httpx.post(f"{stack.service.url}/v1/rerank", json=direct, headers=headers).raise_for_status()
            else:
                result = search(stack, body, pipeline)
            took[pipeline].append((time.perf_counter() - started) * 1000.0)
            if pipeline == stack.pipeline:
                assert rerank_status(result) == "success" and ids(result)[0] == "marked"
    if TIMINGS:
        labels = (
            (stack.pipeline, "opensearch hybrid with rerank"),
            (stack.first_stage_pipeline, "opensearch hybrid first stage"),
            ("direct", "POST /v1/rerank alone"),
        )
        with open(TIMINGS, "a", encoding="utf-8") as log:
            for pipeline, label in labels:
                values = sorted(took[pipeline])
                p90 = values[int(0.9 * (len(values) - 1))]
                log.write(
                    f"{label} ({len(values)} requests, {len(CORPUS)} hits)\t"
                    f"p50 {statistics.median(values):.1f} ms\tp90 {p90:.1f} ms\n"
                )


def test_with_the_service_stopped_the_same_request_answers_in_first_stage_order(
    stack: Stack, embedder: Any
) -> None:
    first_stage = search(stack, hybrid_request(embedder), stack.first_stage_pipeline)
    stack.service.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{stack.service.url}/v1/rerank", json={"query": "q", "documents": ["d"]}, timeout=5)
    fallback = search(stack, hybrid_request(embedder), stack.pipeline)
    assert rerank_status(fallback) == "fail"
    assert ids(fallback) == ids(first_stage)
    first_scores = [hit["_score"] for hit in first_stage["hits"]["hits"]]
    assert [hit["_score"] for hit in fallback["hits"]["hits"]] == pytest.approx(first_scores)

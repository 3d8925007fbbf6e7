"""`hybrid-rerank serve` as a real process on loopback, embedded backend and in-process reranking: every
route, the limits (a 4xx naming the field, never a 500), the API key and CORS."""

from __future__ import annotations

import json
import math
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.service_corpus import MARKER, QUERY, IndexedCorpus, index_corpus
from tests.service_process import CLI, ServiceProcess, clean_environment, start_service

pytestmark = pytest.mark.integration
KEY = "s3cret-key-for-tests-only"
ALLOWED_ORIGIN = "http://allowed.example"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> IndexedCorpus:
    return index_corpus(tmp_path_factory.mktemp("service-corpus"))


@pytest.fixture(scope="module")
def service(corpus: IndexedCorpus) -> Iterator[ServiceProcess]:
    """With an API key, CORS for one origin, and small limits so each can be crossed cheaply."""
    env = corpus.env(
        API_KEY=KEY,
        CORS_ORIGINS=ALLOWED_ORIGIN,
        SERVICE_MAX_BODY_BYTES="20000",
        SERVICE_MAX_QUERY_CHARS="200",
        SERVICE_MAX_DOCUMENTS="20",
        SERVICE_MAX_DOCUMENT_CHARS="2000",
        SERVICE_MAX_K="10",
        SERVICE_MAX_PAGE="5",
        RERANK_DEPTH="8",
        RECALL_DEPTH="8",
    )
    with start_service(env, cwd=corpus.data_dir.parent) as running:
        yield running


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as http:
        yield http


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- search ----------------------------------------------------------------------------------------------


def test_search_answers_the_same_json_as_the_cli(corpus: IndexedCorpus, client: httpx.Client) -> None:
    reply = client.post("/search", json={"query": QUERY, "k": 5})
    assert reply.status_code == 200, reply.text
    served = reply.json()
    env = clean_environment(corpus.env(RERANK_DEPTH="8", RECALL_DEPTH="8"))
    cli = subprocess.run(
        [str(CLI), "search", QUERY, "-k", "5", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    served.pop("timings_ms"), printed.pop("timings_ms")
    assert served == printed
    assert served["reranked"] is True
    assert served["hits"][0]["id"] == "marker-5"  # the marker cross-encoder put it first
    assert served["hits"][0]["ranks"]["fused"] > 1  # though the first stage did not


def test_search_shows_the_first_stage_page_beside_the_reranked_one(client: httpx.Client) -> None:
    served = client.post("/search", json={"query": QUERY, "k": 8, "include_first_stage": True}).json()
    first = served["first_stage"]
    assert [h["ranks"]["fused"] for h in first] == list(range(1, len(first) + 1))
    assert {h["id"] for h in first} == {h["id"] for h in served["hits"]}
    assert [h["id"] for h in first] != [h["id"] for h in served["hits"]]
    assert set(served["timings_ms"]) >= {"embed_query", "recall", "fusion", "rerank", "total"}


def test_pages_filters_and_rerank_off(client: httpx.Client) -> None:
    one = client.post("/search", json={"query": QUERY, "k": 3, "page": 1}).json()["hits"]
    two = client.post("/search", json={"query": QUERY, "k": 3, "page": 2}).json()["hits"]
    assert [h["rank"] for h in two] == [4, 5, 6]
    assert not {h["id"] for h in one} & {h["id"] for h in two}
    recent = client.post("/search", json={"query": QUERY, "filters": {"year": {"gte": 2021}}}).json()["hits"]
    assert recent and all(h["metadata"]["year"] >= 2021 for h in recent)
    as_cli = client.post("/search", json={"query": QUERY, "filter_expressions": ["year=2021..2099"]}).json()
    assert [h["id"] for h in as_cli["hits"]] == [h["id"] for h in recent]
    off = client.post("/search", json={"query": QUERY, "rerank": False}).json()
    assert off["reranked"] is False and off["rerank_fallback"] == "turned_off"
    assert [h["ranks"]["fused"] for h in off["hits"]] == list(range(1, len(off["hits"]) + 1))


def test_a_query_the_bi_encoder_cannot_read_is_searched_by_bm25_alone_and_says_so(
    client: httpx.Client,
) -> None:
    """all-MiniLM-L6-v2's card says `en`: a Chinese query is never embedded, and the JSON names the guard."""
    served = client.post("/search", json={"query": "月亮的圆缺变化", "k": 5}).json()
    assert served["language"] == "zh" and served["bm25_only"] is True
    assert "BM25" in served["language_note"]
    assert "embed_query" not in served["timings_ms"] and "bm25" in served["timings_ms"]
    english = client.post("/search", json={"query": QUERY, "k": 5}).json()
    assert (
        english["language"] == "latin" and english["bm25_only"] is False and english["language_note"] is None
    )
    assert "embed_query" in english["timings_ms"]


# --- rerank APIs -----------------------------------------------------------------------------------------

TEXTS = ["cook steak on the grill", f"the {MARKER} and the sun", "salt and water", f"{MARKER} {MARKER} light"]


def test_tei_rerank_sorts_by_score_with_sigmoid_scores_unless_raw(client: httpx.Client) -> None:
    reply = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True})
    assert reply.status_code == 200, reply.text
    ranked = reply.json()
    assert [r["index"] for r in ranked[:2]] == [3, 1]  # more marker share, higher score
    assert all(r["text"] == TEXTS[r["index"]] for r in ranked)
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    raw = {
        r["index"]: r["score"]
        for r in client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    }
    for r in ranked:
        assert r["score"] == pytest.approx(sigmoid(raw[r["index"]]), abs=1e-6)
    assert "text" not in client.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()[0]


@pytest.mark.parametrize("version", ["1", "2"])
def test_cohere_shape_with_top_n_and_documents(client: httpx.Client, version: str) -> None:
    documents: list[Any] = [TEXTS[0], {"text": TEXTS[1], "source": "kept"}, TEXTS[2], TEXTS[3]]
    body = {"model": "rerank-english-v3.0", "query": QUERY, "documents": documents, "top_n": 2}
    reply = client.post(f"/v{version}/rerank", json={**body, "return_documents": True})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    uuid.UUID(answer["id"])
    assert answer["meta"]["api_version"]["version"] == version
    assert [r["index"] for r in answer["results"]] == [3, 1]
    assert answer["results"][1]["document"] == {"text": TEXTS[1], "source": "kept"}
    assert answer["results"][0]["relevance_score"] > answer["results"][1]["relevance_score"]
    plain = client.post(f"/v{version}/rerank", json={**body, "top_n": None}).json()["results"]
    assert len(plain) == 4 and "document" not in plain[0]  # Cohere's default: no documents back
    tei = client.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
    assert {r["index"]: r["relevance_score"] for r in plain} == pytest.approx(
        {r["index"]: r["score"] for r in tei}
    )


# --- jobs ------------------------------------------------------------------------------------------------


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if record["state"] in {"succeeded", "failed"}:
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_jobs_rerank_and_search_batches(client: httpx.Client) -> None:
    started = client.post("/jobs", json={"kind": "rerank", "query": QUERY, "documents": TEXTS})
    assert started.status_code == 202, started.text
    record = wait_for_job(client, started.json()["id"])
    assert record["state"] == "succeeded", record
    assert [r["index"] for r in record["result"]][:2] == [3, 1]
    batch = client.post("/jobs", json={"kind": "search", "queries": [QUERY, "sleep and the heart"], "k": 2})
    record = wait_for_job(client, batch.json()["id"])
    assert record["state"] == "succeeded" and record["done"] == record["total"] == 2
    assert record["result"][0]["hits"][0]["id"] == "marker-5"
    assert record["result"][1]["query"] == "sleep and the heart"
    missing = client.get("/jobs/not-a-job")
    assert missing.status_code == 404 and missing.json()["field"] == "job_id"


# --- limits: a 4xx naming the field, never a 500 ---------------------------------------------------------

LIMIT_CASES = [
    ("/search", {"query": "x" * 201}, 422, "query"),
    ("/search", {"query": "   "}, 422, "query"),
    ("/search", {"query": QUERY, "k": 11}, 422, "k"),
    ("/search", {"query": QUERY, "k": 0}, 422, "k"),
    ("/search", {"query": QUERY, "page": 6}, 422, "page"),
    ("/search", {"query": QUERY, "deadline_ms": 0}, 422, "deadline_ms"),
    ("/search", {"query": QUERY, "filters": {"year": []}}, 422, "filters.year"),
    ("/search", {"query": QUERY, "filter_expressions": ["no-equals"]}, 422, "filter_expressions[0]"),
    ("/search", {"query": QUERY, "unknown": 1}, 422, "unknown"),
    ("/search", {"k": 3}, 422, "query"),
    ("/rerank", {"query": QUERY, "texts": ["a"] * 21}, 413, "texts"),
    ("/rerank", {"query": QUERY, "texts": ["ok", "y" * 2001]}, 413, "texts[1]"),
    ("/rerank", {"query": QUERY, "texts": []}, 422, "texts"),
    ("/rerank", {"query": QUERY, "texts": "not a list"}, 422, "texts"),
    ("/v1/rerank", {"query": QUERY, "documents": [{"title": "no text"}]}, 400, "documents[0]"),
    ("/v2/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n"),
    ("/v2/rerank", {"query": "q" * 201, "documents": ["a"]}, 400, "query"),
    ("/jobs", {"kind": "search", "queries": []}, 422, "queries"),
    ("/jobs", {"kind": "nothing"}, 422, "kind"),
    ("/jobs", {"kind": "rerank", "query": QUERY}, 422, "documents"),
]


@pytest.mark.parametrize(("route", "body", "status", "field"), LIMIT_CASES)
def test_each_bad_request_names_its_field(
    client: httpx.Client, route: str, body: dict[str, Any], status: int, field: str
) -> None:
    reply = client.post(route, json=body)
    assert reply.status_code == status, reply.text
    answer = reply.json()
    assert answer["field"].startswith(field), answer
    message = answer.get("error") or answer.get("message")
    assert message and field.split("[")[0].split(".")[0] in message


def test_error_shapes_follow_each_api_family(client: httpx.Client) -> None:
    tei = client.post("/rerank", json={"query": QUERY, "texts": []}).json()
    assert set(tei) >= {"error", "error_type"} and tei["error_type"] == "Validation"
    cohere = client.post("/v1/rerank", json={"query": QUERY}).json()
    assert "message" in cohere and "error" not in cohere


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: httpx.Client) -> None:
    big = {"query": QUERY, "texts": ["z" * 1500] * 15}  # ~22 kB, over SERVICE_MAX_BODY_BYTES=20000
    declared = client.post("/rerank", json=big)
    assert declared.status_code == 413 and declared.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    streamed = client.post("/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"


def test_malformed_json_is_a_4xx(client: httpx.Client) -> None:
    reply = client.post("/search", content=b'{"query": ', headers={"Content-Type": "application/json"})
    assert reply.status_code == 422 and reply.json()["field"] == "body"


# --- access ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"])
def test_the_api_key_is_required_on_every_api_route(service: ServiceProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as anonymous:
        for route, body in [("/search", {"query": QUERY}), ("/rerank", {"query": QUERY, "texts": ["a"]})]:
            reply = anonymous.post(route, json=body)
            assert reply.status_code == 401, (route, reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/jobs/anything").status_code == 401
        assert anonymous.get("/healthz").status_code == 200  # probes stay open
        assert anonymous.get("/readyz").status_code == 200


def test_the_key_is_never_logged(service: ServiceProcess, client: httpx.Client) -> None:
    client.post("/search", json={"query": QUERY})
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        anonymous.post("/search", json={"query": QUERY}, headers={"Authorization": f"Bearer {KEY}-guess"})
    assert KEY not in service.log()


def test_cors_answers_only_the_configured_origin(service: ServiceProcess) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with httpx.Client(base_url=service.url, timeout=30) as browser:
        allowed = browser.options("/search", headers={"Origin": ALLOWED_ORIGIN, **preflight})
        assert allowed.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
        other = browser.options("/search", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_unless_configured(corpus: IndexedCorpus, tmp_path: Path) -> None:
    with start_service(corpus.env(), cwd=tmp_path) as plain, httpx.Client(base_url=plain.url) as browser:
        reply = browser.post("/search", json={"query": QUERY}, headers={"Origin": ALLOWED_ORIGIN})
        assert reply.status_code == 200  # no key configured: open
        assert "access-control-allow-origin" not in reply.headers


# --- operations ------------------------------------------------------------------------------------------


def test_probes_docs_and_metrics(client: httpx.Client) -> None:
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and "8 documents" in ready["checks"]["engine"]
    assert ready["checks"]["reranker"].startswith("ok")
    assert "/v2/rerank" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    client.post("/search", json={"query": QUERY, "k": 99})  # a 422
    text = client.get("/metrics").text
    assert 'hybrid_rerank_http_requests_total{method="POST",route="/search",status="422"}' in text
    assert 'hybrid_rerank_stage_seconds_count{stage="rerank"}' in text
    assert 'hybrid_rerank_stage_seconds_count{stage="embed"}' in text
    assert "hybrid_rerank_reranked_candidates_total" in text

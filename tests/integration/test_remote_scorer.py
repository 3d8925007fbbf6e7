"""The remote reranker against this project's own `hybrid-rerank serve`, a real process on loopback with
the tiny cross-encoder and an API key: in each dialect it scores as the same model loaded in this process;
batches over the service's own document limit are split; a wrong key and a stopped service give the clear
error. The failures our service cannot be made to answer on demand (a 429 with Retry-After, a 5xx, a 400,
an unreadable reply) come from a scripted HTTP server on loopback, over real sockets."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.remote import RemoteRerankError, RemoteScorer
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.integration.test_celery import settings_for, worker_env
from tests.service_process import ServiceProcess, start_service

pytestmark = pytest.mark.integration

KEY = "remote-scorer-test-key-7f3a9c"
WRONG_KEY = "wrong-key-5b1e22"
SERVICE_PORT = 8710  # this test's ports: 8710-8719
SCRIPTED_PORT = 8711
MAX_DOCUMENTS = 4  # the service refuses more per request, so an unsplit batch of 10 would be a 413
MAX_LENGTH = 128  # the service's RERANK_MAX_LENGTH default, so both sides cut the same way
QUERY = "why does the moon show phases"
TEXTS = [
    "the moon shows a phase as light hits it",
    "rest the steak after you grill it",
    "a database keeps a log so a crash loses nothing",
    "python is a language and a snake",
    "rain and wind in the storm",
    "the team scored a goal with the ball",
    "sleep and exercise for the heart",
    "diet and blood pressure with salt",
    "the sun is a star and the earth is a planet",
    "music pitch and code",
]
CANDIDATES = [Candidate(f"d{i}", text) for i, text in enumerate(TEXTS)]
# TEI raw scores are the logits as JSON floats, Cohere and Jina send the sigmoid to 9 significant digits
# (5e-10 around 0.5), which the logit function maps back within about 2e-9; and documents padded in another
# batch than here move a float32 logit by up to 2e-9 (measured). The tiny model's logits lie 2e-6 apart.
TOLERANCE = 1e-7


@pytest.fixture(scope="module")
def service(
    tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The service on the tiny random cross-encoder, in-process reranking, no index needed by these routes.
    The last test of this module stops it."""
    root = tmp_path_factory.mktemp("remote-service")
    env = {
        "DATA_DIR": str(root / "data"),
        "RERANK_MODEL": str(tiny_cross_encoder_dir),
        "RERANK_BACKEND": "torch",
        "API_KEY": KEY,
        "SERVICE_MAX_DOCUMENTS": str(MAX_DOCUMENTS),
    }
    with start_service(env, cwd=root, port=SERVICE_PORT) as running:
        yield running


@pytest.fixture(scope="module")
def local_scores(tiny_cross_encoder_dir: Path) -> dict[str, float]:
    """The same model through the workers' own scorer in this process."""
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), backend="torch", max_length=MAX_LENGTH)
    scores = {s.id: s.score for s in scorer.score(QUERY, CANDIDATES)}
    # The random model's logits lie close together: a score given to the wrong document must show.
    gaps = sorted(abs(a - b) for a in scores.values() for b in scores.values() if a != b)
    assert len(scores) == len(TEXTS) and gaps[0] > 10 * TOLERANCE, gaps[:3]
    return scores


def requests_served(service: ServiceProcess, route: str) -> float:
    """The service's own count of 200 answers on `route`, from /metrics."""
    text = httpx.get(f"{service.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
    pattern = rf'^hybrid_rerank_http_requests_total\{{(?=[^}}]*route="{re.escape(route)}")'
    pattern += r'(?=[^}]*method="POST")(?=[^}]*status="200")[^}]*\} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


ROUTES = {"tei": "/rerank", "cohere": "/v2/rerank", "jina": "/v1/rerank"}


@pytest.mark.parametrize("dialect", ["tei", "cohere", "jina"])
def test_each_dialect_scores_as_the_model_loaded_here_and_splits_batches(
    service: ServiceProcess, local_scores: dict[str, float], dialect: Any
) -> None:
    scorer = RemoteScorer(service.url, KEY, dialect, 60.0, 0, 3, "tiny-ce")
    before = requests_served(service, ROUTES[dialect])
    scored = scorer.score(QUERY, CANDIDATES)
    assert [s.id for s in scored] == [c.id for c in CANDIDATES]
    for item in scored:
        assert item.score == pytest.approx(local_scores[item.id], abs=TOLERANCE), item.id
    # 10 documents, 3 per request: 4 requests, each under the service's limit of 4 documents.
    assert requests_served(service, ROUTES[dialect]) - before == 4
    assert scorer.score(QUERY, []) == []


def test_an_unsplit_batch_over_the_providers_limit_names_the_setting(service: ServiceProcess) -> None:
    scorer = RemoteScorer(service.url, KEY, "cohere", 60.0, 3, len(CANDIDATES), None)
    with pytest.raises(RemoteRerankError) as caught:
        scorer.score(QUERY, CANDIDATES)
    message = str(caught.value)
    assert caught.value.status == 413 and "(not retried)" in message
    assert "over the limit of 4" in message and "RERANK_REMOTE_MAX_BATCH" in message


def test_threads_share_one_scorer(service: ServiceProcess, local_scores: dict[str, float]) -> None:
    scorer = RemoteScorer(service.url, KEY, "tei", 60.0, 0, 4, None)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: scorer.score(QUERY, CANDIDATES), range(8)))
    for scored in results:
        assert {s.id: s.score for s in scored} == pytest.approx(local_scores, abs=TOLERANCE)


def test_a_wrong_key_is_a_clear_error_and_no_key_reaches_a_log(
    service: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request and header event at DEBUG
    RemoteScorer(service.url, KEY, "jina", 60.0, 2, 4, "m").score(QUERY, CANDIDATES[:2])
    for dialect in ("tei", "cohere", "jina"):
        scorer = RemoteScorer(service.url, WRONG_KEY, dialect, 60.0, 2, 4, "m")  # type: ignore[arg-type]
        with pytest.raises(RemoteRerankError) as caught:
            scorer.score(QUERY, CANDIDATES[:2])
        error = caught.value
        message = str(error)
        assert error.status == 401 and f"{service.url}{ROUTES[dialect]} answered HTTP 401" in message
        assert "(not retried)" in message and "RERANK_REMOTE_API_KEY" in message
        assert "send the API key as" in message  # the service's own body, excerpted
        assert WRONG_KEY not in message + repr(error) + repr(scorer)
    assert "retry" not in caplog.text  # a 401 is never retried
    assert "HTTP Request: POST" in caplog.text  # the log was captured, at the level that shows requests
    assert KEY not in caplog.text and WRONG_KEY not in caplog.text


# --- failures on demand: a scripted server ---------------------------------------------------------------


@dataclass
class Script:
    """Replies to give, in order, as (status, headers, body); the requests seen and the client ports."""

    replies: list[tuple[int, dict[str, str], str]]
    seen: list[dict[str, Any]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse shows in the client ports

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                script.ports.append(self.client_address[1])
                status, headers, text = script.replies.pop(0)
            data = text.encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", SCRIPTED_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{SCRIPTED_PORT}", script
    finally:
        server.shutdown()
        server.server_close()


def tei_reply(*scores: float) -> tuple[int, dict[str, str], str]:
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    return 200, {}, json.dumps([{"index": i, "score": scores[i]} for i in ranked])


def scorer_for(url: str, retries: int = 2, **extra: Any) -> RemoteScorer:
    return RemoteScorer(url, KEY, "tei", 10.0, retries, 8, None, backoff_base_s=0.01, **extra)


def test_429_waits_as_long_as_retry_after_says(
    scripted: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = scripted
    script.replies = [(429, {"Retry-After": "1"}, '{"error": "Model is overloaded"}'), tei_reply(0.5, -1.0)]
    scored = scorer_for(url).score("q", CANDIDATES[:2])
    assert [s.score for s in scored] == [0.5, -1.0] and len(script.seen) == 2
    assert "HTTP 429; retry 1 of 2 in 1.00 s" in caplog.text


def test_5xx_is_retried_with_backoff_until_it_passes_or_the_retries_run_out(
    scripted: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = scripted
    script.replies = [(503, {}, "busy"), (502, {}, "bad gateway"), tei_reply(1.0)]
    assert [s.score for s in scorer_for(url).score("q", CANDIDATES[:1])] == [1.0]
    assert "retry 1 of 2" in caplog.text and "retry 2 of 2" in caplog.text

    script.replies = [(500, {}, '{"error": "CUDA out of memory"}')] * 3
    script.seen.clear()
    with pytest.raises(RemoteRerankError) as caught:
        scorer_for(url).score("q", CANDIDATES[:1])
    assert len(script.seen) == 3 and caught.value.status == 500
    assert f"{url}/rerank answered HTTP 500 after 3 attempts" in str(caught.value)
    assert "CUDA out of memory" in str(caught.value)


def test_another_4xx_is_not_retried_and_an_echoed_key_is_hidden(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [(400, {}, json.dumps({"error": f"bad request from token {KEY}"}))]
    with pytest.raises(RemoteRerankError) as caught:
        scorer_for(url, retries=5).score("q", CANDIDATES[:1])
    assert len(script.seen) == 1 and caught.value.status == 400
    assert "HTTP 400 (not retried)" in str(caught.value) and "bad request from token ***" in str(caught.value)
    assert KEY not in str(caught.value)
    assert script.seen[0]["auth"] == f"Bearer {KEY}"  # the key did go where it belongs


def test_a_retry_after_beyond_the_wait_limit_fails_at_once(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [(429, {"Retry-After": "120"}, "slow down")]
    with pytest.raises(RemoteRerankError, match="asked to retry after 120 s"):
        scorer_for(url, max_wait_s=5.0).score("q", CANDIDATES[:1])
    assert len(script.seen) == 1


def test_a_reply_in_another_dialect_says_to_check_the_dialect(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [(200, {}, json.dumps({"results": [{"index": 0, "relevance_score": 0.9}]}))]
    with pytest.raises(
        RemoteRerankError, match=r"unexpected shape for the tei dialect.*RERANK_REMOTE_DIALECT"
    ):
        scorer_for(url).score("q", CANDIDATES[:1])
    script.replies = [(200, {}, "<html>not json</html>")]
    with pytest.raises(RemoteRerankError, match="a body that is not JSON: <html>"):
        scorer_for(url).score("q", CANDIDATES[:1])


def test_batches_reuse_one_connection_and_merge_in_order(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [tei_reply(0.0, 1.0), tei_reply(2.0, 3.0), tei_reply(4.0)]
    scorer = RemoteScorer(url, KEY, "tei", 10.0, 0, 2, None)
    assert [s.score for s in scorer.score("q", CANDIDATES[:5])] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [len(seen["texts"]) for seen in script.seen] == [2, 2, 1]
    assert [seen["texts"] for seen in script.seen][2] == [TEXTS[4]]
    assert len(set(script.ports)) == 1  # one keep-alive connection for the three requests


# --- the remote kind on a real Celery worker --------------------------------------------------------------


def start_remote_worker(
    name: str, redis_url: str, service: ServiceProcess, key: str, logs: Path
) -> tuple[CeleryReranker, WorkerProcess]:
    """A worker serving RERANK_KIND=remote on queue `name` (cohere dialect, 3 documents per request), and
    a client for it without the score cache, so every score comes through the service."""
    remote = {
        "RERANK_KIND": "remote",
        "RERANK_REMOTE_URL": service.url,
        "RERANK_REMOTE_API_KEY": key,
        "RERANK_REMOTE_DIALECT": "cohere",
        "RERANK_REMOTE_MAX_BATCH": "3",
        "RERANK_REMOTE_RETRIES": "1",
        "RERANK_REMOTE_MODEL": "tiny-ce",
        "RERANK_CACHE_TTL_S": "0",
    }
    settings = settings_for(redis_url, Path(name), rerank_deadline_ms=60_000, rerank_admission=False)
    reranker = make_celery_reranker(settings, use_cache=False)
    worker = WorkerProcess(name, worker_env(redis_url, Path(name), **remote), logs)
    return reranker, worker.start(reranker.app)


def test_a_celery_worker_serves_the_remote_kind(
    service: ServiceProcess,
    local_scores: dict[str, float],
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Client -> Redis -> a real worker process -> RemoteScorer -> the service -> the tiny model; and with a
    wrong key, a failed rerank whose reason names the status, the URL and the setting, never the key."""
    logs = tmp_path_factory.mktemp("remote-worker-logs")
    reranker, worker = start_remote_worker("remote-h6-ok", redis_url, service, KEY, logs)
    try:
        before = requests_served(service, "/v2/rerank")
        outcome = reranker.rerank(QUERY, CANDIDATES)
        assert outcome.scores is not None, outcome.reason
        assert outcome.scores == pytest.approx(local_scores, abs=TOLERANCE)
        assert outcome.model == "remote-h6-ok" and outcome.interpolation_weight is None
        assert requests_served(service, "/v2/rerank") - before == 4  # 10 candidates, 3 per request
        assert (
            f"model ready: remote-h6-ok (remote cohere reranker at {service.url}/v2/rerank"
            in worker.log.read_text()
        )
    finally:
        worker.stop()
    assert KEY not in worker.log.read_text()

    reranker, worker = start_remote_worker("remote-h6-wrong-key", redis_url, service, WRONG_KEY, logs)
    try:
        refused = reranker.rerank(QUERY, CANDIDATES[:2])
    finally:
        worker.stop()
    assert refused.scores is None and refused.code == "scoring_failed"  # a reply, not a task failure
    log = worker.log.read_text()
    # our own warning, not Celery's "raised unexpected" with the task's traceback (the worker's stop may
    # still log a pool process lost to SIGTERM: that is not the task's)
    assert "scoring failed" in log and "raised unexpected" not in log
    reason = refused.reason or ""
    assert f"{service.url}/v2/rerank answered HTTP 401 (not retried)" in reason, reason
    assert "RERANK_REMOTE_API_KEY" in reason and WRONG_KEY not in reason
    assert WRONG_KEY not in worker.log.read_text()


# --- last: the service goes away ------------------------------------------------------------------------


def test_a_stopped_service_is_a_clear_connection_error_after_the_retries(
    service: ServiceProcess, local_scores: dict[str, float], caplog: pytest.LogCaptureFixture
) -> None:
    """Stops the module's service: keep this test last."""
    scorer = RemoteScorer(service.url, KEY, "cohere", 30.0, 2, 4, None, backoff_base_s=0.05)
    first = scorer.score(QUERY, CANDIDATES[:4])
    assert [s.score for s in first] == pytest.approx(
        [local_scores[c.id] for c in CANDIDATES[:4]], abs=TOLERANCE
    )
    service.stop()
    with pytest.raises(RemoteRerankError) as caught:
        scorer.score(QUERY, CANDIDATES[:4])
    message = str(caught.value)
    assert caught.value.status is None
    assert f"could not reach the remote reranker at {service.url}/v2/rerank after 3 attempts" in message
    assert "ConnectError" in message and "RERANK_REMOTE_URL" in message
    assert "retry 1 of 2" in caplog.text and "retry 2 of 2" in caplog.text

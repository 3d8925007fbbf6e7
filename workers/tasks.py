"""The rerank task, thin over the reranking core, and the per-process worker runtime.

The model loads once per worker process when the process starts: in each prefork child after the fork (torch
is never imported in the parent, so forking is safe), or in the worker itself for the solo and threads pools.
Its load warms it up with one full batch, so the first search after a start is not the slow one; the log says
"model ready" with the seconds since the worker started. With RERANK_BATCH_WINDOW_MS the worker runs a threads
pool with one model, and concurrent tasks are scored in one model call (`workers.coalesce`). With
WORKER_METRICS_PORT set, each process records its tasks and the parent serves them (`workers.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from celery import shared_task, signals

from hybrid_rerank.workers import metrics
from hybrid_rerank.workers.admission import ServiceTime, publish_service_time, seconds_left, should_skip
from hybrid_rerank.workers.coalesce import Coalescer, score_many
from hybrid_rerank.workers.errors import HybridRerankError, RerankInputError, describe_exception
from hybrid_rerank.workers.factory import make_scorer
from hybrid_rerank.workers.protocol import (
    TASK_NAME,
    Candidate,
    encode_error,
    encode_reply,
    parse_request,
    queue_for,
)
from hybrid_rerank.workers.score_cache import ScoreCache, cached_scores
from hybrid_rerank.workers.scorer import CrossEncoderScorer, ScoredCandidate
from hybrid_rerank.workers.settings import WorkerSettings, load_worker_settings

THREADS_ENV = "HYBRID_RERANK_TORCH_THREADS"
WORKER_PID_ENV = "HYBRID_RERANK_WORKER_PID"
PUBLISH_EVERY_S = 1.0
log = logging.getLogger("hybrid_rerank.workers")
_runtime: dict[str, Any] = {}
_loading = threading.Lock()  # a threads pool's first tasks may ask for the model together


def _settings() -> WorkerSettings:
    if "settings" not in _runtime:
        _runtime["settings"] = load_worker_settings()
    settings: WorkerSettings = _runtime["settings"]
    return settings


def _scorer() -> CrossEncoderScorer:
    with _loading:
        if "scorer" not in _runtime:
            _runtime["scorer"] = _load_scorer()
    result: CrossEncoderScorer = _runtime["scorer"]
    return result


def _load_scorer() -> CrossEncoderScorer:
    threads = os.environ.get(THREADS_ENV)
    settings = _settings()
    scorer = make_scorer(settings, threads=int(threads) if threads else None)
    if scorer is None:
        raise RuntimeError("RERANK_MODEL is off: this worker has no model to serve")
    started = time.perf_counter()
    scorer.load()  # a local model is warmed up by its load: one full batch at the full window
    loaded = time.perf_counter()
    if settings.rerank_batch_window_ms > 0:
        _runtime["coalescer"] = Coalescer(
            lambda requests: score_many(scorer, requests), settings.rerank_batch_window_ms / 1000.0
        )
    since = process_age_s(int(os.environ.get(WORKER_PID_ENV) or os.getpid()))
    log.info(
        "model ready: %s in process %d (%s threads), %s after the worker started (load and warm-up %.2f s)%s",
        scorer.description,
        os.getpid(),
        threads,
        "?" if since is None else f"{since:.2f} s",
        loaded - started,
        f", batch window {settings.rerank_batch_window_ms:g} ms" if "coalescer" in _runtime else "",
    )
    return scorer


def process_age_s(pid: int) -> float | None:
    """Seconds since process `pid` started (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            up_s = float(uptime.read().split()[0])
        return up_s - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start, in ticks
    except (OSError, ValueError, IndexError):
        return None


def _cache(scorer: CrossEncoderScorer) -> ScoreCache | None:
    settings = _settings()
    if settings.rerank_cache_ttl_s <= 0 or settings.redis_url is None:
        return None
    if "cache" not in _runtime:
        import redis

        client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=2.0)
        _runtime["cache"] = ScoreCache(client, scorer.cache_key, settings.rerank_cache_ttl_s)
    cache: ScoreCache = _runtime["cache"]
    return cache


@signals.worker_init.connect
def _plan_threads(sender: Any = None, **_: Any) -> None:
    """Split the cores between the pool's processes (unless RERANK_THREADS says otherwise)."""
    settings = _settings()
    os.environ[WORKER_PID_ENV] = str(os.getpid())  # the pool's processes say how long since it started
    _runtime["prefork"] = "prefork" in str(getattr(sender, "pool_cls", "prefork")).lower()
    # One model per pool process; with the batch window, a threads pool has one model for the whole worker,
    # called from one thread.
    batching = settings.rerank_batch_window_ms > 0 and not _runtime["prefork"]
    concurrency = 1 if batching else max(int(getattr(sender, "concurrency", 1) or 1), 1)
    threads = settings.rerank_threads or max((os.cpu_count() or 1) // concurrency, 1)
    os.environ[THREADS_ENV] = str(threads)
    if settings.worker_metrics_port is not None:  # before the pool forks: its processes inherit the setup
        try:
            _runtime["metrics_server"] = metrics.serve(
                settings.worker_metrics_port,
                settings.worker_metrics_host,
                label=str(getattr(sender, "hostname", "")),
            )
        except OSError as exc:  # said at worker_ready: logging is not set up yet; the worker serves on
            address = f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"
            _runtime["metrics_error"] = (
                f"worker metrics cannot serve on {address}: {exc}; set WORKER_METRICS_PORT to a free port "
                "(one per worker on a machine)"
            )


@signals.worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    server = _runtime.pop("metrics_server", None)
    if server is not None:
        server.stop()


@signals.worker_process_shutdown.connect
def _process_exits(**_: Any) -> None:
    if _settings().worker_metrics_port is not None:
        metrics.process_exited()


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    server: metrics.MetricsServer | None = _runtime.pop("metrics_server", None)
    if server is not None:  # the parent's listening socket, inherited: only the parent serves
        server.forget_in_child()
    _scorer()


@signals.worker_ready.connect
def _load_in_worker(**_: Any) -> None:
    server: metrics.MetricsServer | None = _runtime.get("metrics_server")
    if server is not None:
        host = _settings().worker_metrics_host
        log.info("worker metrics on http://%s:%d/metrics (%s)", host, server.port, server.folder)
    if "metrics_error" in _runtime:
        log.error("%s", _runtime["metrics_error"])
    if not _runtime.get("prefork", True):  # solo / threads: the worker itself scores
        _scorer()


@shared_task(name=TASK_NAME, bind=True)
def rerank(self: Any, payload: Any) -> dict[str, Any]:
    """A request in the wire protocol in, a reply in it out (`workers.protocol`): scores with the model's
    tuned interpolation weight, or an error that says what was wrong with the request. A bad request never
    takes the worker down."""
    worker = str(self.request.hostname or "")
    delivery = self.request.delivery_info or {}
    scorer = _scorer()
    handover = _handover()
    with _recorded(delivery.get("routing_key")) as record:
        try:
            request = parse_request(payload)
        except RerankInputError as exc:
            return encode_error(f"invalid rerank request: {exc}", worker)
        if request.model is not None and request.model != scorer.model_name:
            return encode_error(f"this worker serves {scorer.model_name!r}, not {request.model!r}", worker)
        late = _late(self.request.expires, len(request.candidates))
        if late is not None:
            log.info("skipped a task that cannot end in time: %s", late)
            return encode_error(late, worker, code="deadline")
        cache = _cache(scorer) if request.use_cache else None
        score = scorer.score if handover is None else handover.score
        timed = cast(CrossEncoderScorer, _ScoreWith(score if record is None else record.timed_score(score)))
        started = time.perf_counter()
        try:
            scores, cached = cached_scores(timed, cache, request.query, request.candidates)
        except HybridRerankError as exc:  # said on purpose (a remote API's 401...): a reply, no traceback
            log.warning("scoring failed: %s", describe_exception(exc))
            return encode_error(f"scoring failed: {describe_exception(exc)}", worker, code="scoring_failed")
        _learn(time.perf_counter() - started, len(request.candidates) - cached)
        if record is not None:
            record.scored(len(request.candidates), cached, cache_used=cache is not None)
    return encode_reply(
        scorer.model_name,
        scores,
        cached=cached,
        worker=worker,
        interpolation_weight=scorer.interpolation_weight,
        batched=None if handover is None or not handover.batched else handover.batched,
    )


def _service_time() -> ServiceTime:
    if "service_time" not in _runtime:
        _runtime["service_time"] = ServiceTime()
    service_time: ServiceTime = _runtime["service_time"]
    return service_time


def _late(expires: object, candidates: int) -> str | None:
    """Why this task is skipped (its expiry comes before its expected end), or None to run it."""
    if not _settings().rerank_skip_late:
        return None
    left_s = seconds_left(expires)
    expected_s = _service_time().estimate_s(candidates)
    if not should_skip(left_s, expected_s):
        return None
    assert left_s is not None
    expected = "unknown" if expected_s is None else f"{expected_s * 1000:.0f} ms"
    return (
        f"the worker skipped the task: {max(left_s, 0.0) * 1000:.0f} ms left before its deadline, "
        f"{expected} expected for {candidates} candidates"
    )


def _learn(seconds: float, scored: int) -> None:
    """This process's service time, updated and published for the clients' admission control (best effort:
    a Redis hiccup costs an estimate, never a reply)."""
    service_time = _service_time()
    service_time.observe(seconds, scored)
    settings = _settings()
    if scored < 1 or service_time.per_candidate_s is None or settings.redis_url is None:
        return
    # A Redis round trip before the reply is stored: at most once per PUBLISH_EVERY_S (clients count an
    # estimate for FRESH_S, a minute), not on every task of a busy worker.
    now = time.monotonic()
    if now - _runtime.get("published_at", -PUBLISH_EVERY_S) < PUBLISH_EVERY_S:
        return
    _runtime["published_at"] = now
    try:
        if "redis" not in _runtime:
            import redis

            url = settings.redis_url.get_secret_value()
            _runtime["redis"] = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        assert settings.rerank_model is not None
        process = f"{os.uname().nodename}:{os.getpid()}"
        publish_service_time(
            _runtime["redis"], queue_for(settings.rerank_model), process, service_time.per_candidate_s
        )
    except Exception as exc:
        log.warning("could not publish the service time: %s", exc)


@contextlib.contextmanager
def _recorded(routing_key: object) -> Iterator[metrics.TaskRecord | None]:
    """The task's metrics record when WORKER_METRICS_PORT is set (made once per process), else None."""
    if _settings().worker_metrics_port is None:
        yield None
        return
    if "metrics" not in _runtime:
        _runtime["metrics"] = metrics.TaskMetrics()
    task_metrics: metrics.TaskMetrics = _runtime["metrics"]
    with task_metrics.task(metrics.queue_kind(routing_key)) as record:
        yield record


def _handover() -> _Handover | None:
    """With the batch window on, the task's way to the batcher; None: it scores in its own thread."""
    coalescer: Coalescer | None = _runtime.get("coalescer")
    return None if coalescer is None else _Handover(coalescer)


class _Handover:
    def __init__(self, coalescer: Coalescer) -> None:
        self.coalescer = coalescer
        self.batched = 0  # requests in the model call that scored this task

    def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
        scores, self.batched = self.coalescer.score(query, candidates)
        return scores


class _ScoreWith:
    """Stands in for the scorer in `cached_scores`, which calls only its `score`: the model timed alone, or
    through the batcher."""

    def __init__(self, score: Callable[[str, Sequence[Candidate]], list[ScoredCandidate]]) -> None:
        self.score = score

"""The service's Prometheus metrics, in a registry of its own (two apps in one process never collide).

Request count and latency per route and status, per-stage latency, rerank fallbacks by reason, score-cache
hits, and the rerank queues' depth read from Redis at scrape time. The workers publish their own (task time,
model time, batch size) from their prefork processes; see `hybrid_rerank.workers.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# embed_query is the query embedding; bm25 and vector are the recall legs inside `recall`.
STAGE_NAMES = {"embed_query": "embed", "recall": "recall", "bm25": "bm25", "knn": "vector"} | {
    name: name for name in ("fusion", "rerank", "total")
}
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Reasons that are a client's choice, not a degraded stage.
NOT_A_FALLBACK = frozenset({"turned_off"})


class QueueDepthCollector(Collector):
    """`hybrid_rerank_queue_depth{queue}`, read when Prometheus scrapes; nothing when Redis is not used."""

    def __init__(self, read_depths: Callable[[], Mapping[str, int]]) -> None:
        self.read_depths = read_depths

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "hybrid_rerank_queue_depth", "Rerank tasks waiting per queue", labels=["queue"]
        )
        try:
            depths = self.read_depths()
        except Exception:  # Redis down: the gauge is absent, /readyz says why
            depths = {}
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


class ServiceMetrics:
    def __init__(self, queue_depths: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hybrid_rerank_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hybrid_rerank_http_request_seconds",
            "HTTP request latency by route and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Histogram(
            "hybrid_rerank_stage_seconds",
            "Search stage latency (embed, recall, bm25, vector, fusion, rerank, total)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "hybrid_rerank_rerank_fallbacks",
            "Searches and rerank calls answered without reranking, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "hybrid_rerank_score_cache_hits",
            "Rerank scores served from the score cache",
            registry=self.registry,
        )
        self.reranked = Counter(
            "hybrid_rerank_reranked_candidates", "Candidates sent to the reranker", registry=self.registry
        )
        if queue_depths is not None:
            self.registry.register(QueueDepthCollector(queue_depths))

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for name, ms in timings_ms.items():
            stage = STAGE_NAMES.get(name)
            if stage is not None:
                self.stages.labels(stage).observe(ms / 1000.0)

    def observe_rerank(self, fallback: str | None, candidates: int, cached: int) -> None:
        if fallback is not None:
            if fallback not in NOT_A_FALLBACK:
                self.fallbacks.labels(fallback).inc()
            return
        self.reranked.inc(candidates)
        self.cache_hits.inc(cached)


class RequestMetrics:
    """ASGI middleware: count and time every request by its route template (`/jobs/{job_id}`, never the id,
    so the label set stays bounded) and final status, including the 413s and 401s answered before a route."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or _known_path(scope.get("path", ""))
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(path, method, str(status)).inc()
            self.metrics.latency.labels(path, method).observe(time.perf_counter() - started)


def _known_path(path: str) -> str:
    return path if path in {"/search", "/rerank", "/v1/rerank", "/v2/rerank", "/jobs"} else "unmatched"

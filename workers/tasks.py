"""The rerank task, thin over the reranking core, and the per-process worker runtime.

The model loads once per worker process when the process starts: in each prefork child after the fork (torch
is never imported in the parent, so forking is safe), or in the worker itself for the solo and threads pools.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task, signals

from connector.settings import Settings, load_settings
from workers.celery_app import TASK_NAME
from workers.reranking import Candidate, CrossEncoderScorer, RerankInputError, parse_request
from workers.score_cache import ScoreCache

THREADS_ENV = "HYBRID_RERANK_TORCH_THREADS"
log = logging.getLogger("workers")
_runtime: dict[str, Any] = {}


def _settings() -> Settings:
    if "settings" not in _runtime:
        _runtime["settings"] = load_settings()
    settings: Settings = _runtime["settings"]
    return settings


def _scorer() -> CrossEncoderScorer:
    if "scorer" not in _runtime:
        threads = os.environ.get(THREADS_ENV)
        scorer = CrossEncoderScorer.from_settings(_settings())
        if scorer is None:
            raise RuntimeError("RERANK_MODEL is off: this worker has no model to serve")
        if threads and scorer.threads is None:
            scorer.threads = int(threads)  # the runner applies them to torch or onnxruntime
        scorer.load()
        _runtime["scorer"] = scorer
        log.info("model ready: %s in process %d (%s threads)", scorer.description, os.getpid(), threads)
    result: CrossEncoderScorer = _runtime["scorer"]
    return result


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
    concurrency = max(int(getattr(sender, "concurrency", 1) or 1), 1)
    threads = settings.rerank_threads or max((os.cpu_count() or 1) // concurrency, 1)
    os.environ[THREADS_ENV] = str(threads)
    _runtime["prefork"] = "prefork" in str(getattr(sender, "pool_cls", "prefork")).lower()


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    _scorer()


@signals.worker_ready.connect
def _load_in_worker(**_: Any) -> None:
    if not _runtime.get("prefork", True):  # solo / threads: the worker itself scores
        _scorer()


def score_request(
    scorer: CrossEncoderScorer, cache: ScoreCache | None, query: str, candidates: list[Candidate]
) -> dict[str, Any]:
    """Cached scores where there are some; the model scores the rest."""
    cached = cache.get_many(query, candidates) if cache is not None else [None] * len(candidates)
    missing = [c for c, score in zip(candidates, cached, strict=True) if score is None]
    fresh = {s.id: s.score for s in scorer.score(query, missing)} if missing else {}
    if cache is not None and missing:
        cache.put_many(query, [(c, fresh[c.id]) for c in missing])
    scores = [
        {"id": c.id, "score": score if score is not None else fresh[c.id]}
        for c, score in zip(candidates, cached, strict=True)
    ]
    return {"model": scorer.model_name, "scores": scores, "cached": len(candidates) - len(missing)}


@shared_task(name=TASK_NAME, bind=True)
def rerank(self: Any, payload: Any) -> dict[str, Any]:
    """Plain JSON in: {"query", "candidates": [{"id", "text"}], "model", "cache"}; plain JSON out: scores,
    or an "error" that says what was wrong with the request. A bad request never takes the worker down."""
    worker = str(self.request.hostname or "")
    try:
        query, candidates = parse_request(payload)
    except RerankInputError as exc:
        return {"error": f"invalid rerank request: {exc}", "worker": worker}
    scorer = _scorer()
    wanted = payload.get("model")
    if wanted is not None and wanted != scorer.model_name:
        return {"error": f"this worker serves {scorer.model_name!r}, not {wanted!r}", "worker": worker}
    cache = _cache(scorer) if payload.get("cache", True) else None  # "cache": false asks for fresh scores
    return {**score_request(scorer, cache, query, candidates), "worker": worker}

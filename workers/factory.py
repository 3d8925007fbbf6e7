"""The one place where the workers' settings become constructor arguments: the scorer a worker process
serves, and the reranker the searching side calls (Celery workers when REDIS_URL is set, else the same
scorer in this process)."""

from __future__ import annotations

from hybrid_rerank.workers.admission import QueueLoadProbe
from hybrid_rerank.workers.client import CeleryReranker, InProcessReranker, Reranker
from hybrid_rerank.workers.errors import ConfigurationError
from hybrid_rerank.workers.protocol import max_readable_chars, queue_for
from hybrid_rerank.workers.scorer import CrossEncoderScorer, RemoteOptions
from hybrid_rerank.workers.settings import WorkerSettings


def remote_options(settings: WorkerSettings) -> RemoteOptions | None:
    """Where RERANK_KIND=remote sends its requests; None for local kinds."""
    if settings.rerank_kind != "remote":
        return None
    if not settings.rerank_remote_url:
        raise ConfigurationError(
            "RERANK_KIND=remote needs RERANK_REMOTE_URL, the rerank API's base URL "
            "(e.g. http://tei:8080 for text-embeddings-inference, https://api.cohere.com for Cohere)"
        )
    key = settings.rerank_remote_api_key
    return RemoteOptions(
        base_url=settings.rerank_remote_url,
        api_key=key.get_secret_value() if key is not None else None,
        dialect=settings.rerank_remote_dialect,
        timeout_s=settings.rerank_remote_timeout_s,
        retries=settings.rerank_remote_retries,
        max_batch=settings.rerank_remote_max_batch,
        model=settings.rerank_remote_model,
    )


def make_scorer(settings: WorkerSettings, *, threads: int | None = None) -> CrossEncoderScorer | None:
    """The configured reranker of its kind (not loaded yet), or None when RERANK_MODEL is off. `threads`
    applies when RERANK_THREADS is unset (a worker splits the cores between its processes)."""
    if settings.rerank_model is None:
        return None
    return CrossEncoderScorer(
        settings.rerank_model,
        max_length=settings.rerank_max_length,
        batch_size=settings.rerank_batch_size,
        token_budget=settings.rerank_token_budget,
        device=settings.rerank_device,
        backend=settings.rerank_backend,
        max_passages=settings.rerank_max_passages,
        threads=settings.rerank_threads or threads,
        cache_dir=settings.data_dir / "onnx-cache",
        trust_remote_code=settings.trust_remote_code,
        kind=settings.rerank_kind,
        llm_prompt=settings.rerank_llm_prompt,
        llm_instruction=settings.rerank_llm_instruction,
        remote=remote_options(settings),
        cutoff_layer=settings.rerank_cutoff_layer,
    )


def make_celery_reranker(settings: WorkerSettings, *, use_cache: bool = True) -> CeleryReranker:
    """The client side of the workers: fails fast when the broker is down, waits up to the deadline."""
    from hybrid_rerank.workers.celery_app import make_app

    app = make_app(settings, fail_fast=True)
    assert settings.rerank_model is not None and settings.redis_url is not None  # make_app refuses them
    probe = (
        QueueLoadProbe(settings.redis_url.get_secret_value(), queue_for(settings.rerank_model))
        if settings.rerank_admission
        else None
    )
    return CeleryReranker(
        app,
        settings.rerank_model,
        deadline_ms=settings.rerank_deadline_ms,
        max_chars=max_readable_chars(settings.rerank_max_length, settings.rerank_max_passages),
        use_cache=use_cache,
        task_candidates=settings.rerank_task_candidates,
        load_probe=probe,
        admission_share=settings.rerank_admission_share,
    )


def make_reranker(settings: WorkerSettings) -> Reranker | None:
    """Celery workers when REDIS_URL is set, else the same scorer in this process; None when off."""
    if settings.rerank_model is None:
        return None
    if settings.uses_celery:
        return make_celery_reranker(settings)
    scorer = make_scorer(settings)
    return None if scorer is None else InProcessReranker(scorer)

"""Builds the pipeline's parts from the settings: the one place that decides embedded vs OpenSearch and
in-process vs Celery."""

from __future__ import annotations

from connector.backends.base import Backend
from connector.embedder import Embedder
from connector.pipeline import SearchOptions, SearchPipeline
from connector.rerank import InProcessReranker, Reranker
from connector.settings import Settings
from workers.reranking import CrossEncoderScorer


def open_backend(settings: Settings, index_name: str | None = None) -> Backend:
    name = index_name or settings.index_name
    if settings.uses_opensearch:
        from connector.backends.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, name)
    from connector.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings.data_dir, name)


def make_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model,
        batch_size=settings.embedding_batch_size,
        device=settings.embedding_device,
        trust_remote_code=settings.trust_remote_code,
        backend=settings.embedding_backend,
        token_budget=settings.embedding_token_budget,
        cache_dir=settings.data_dir / "onnx-cache",
        query_cache_size=settings.embedding_query_cache,
    )


def make_scorer(settings: Settings) -> CrossEncoderScorer | None:
    return CrossEncoderScorer.from_settings(settings)


def make_reranker(settings: Settings) -> Reranker | None:
    """Celery workers when REDIS_URL is set, else the same scorer in this process; None when off."""
    if settings.rerank_model is None:
        return None
    if settings.uses_celery:
        from connector.celery_rerank import CeleryReranker

        return CeleryReranker.from_settings(settings)
    scorer = make_scorer(settings)
    return None if scorer is None else InProcessReranker(scorer)


def make_pipeline(
    settings: Settings,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    reranker: Reranker | None = None,
) -> SearchPipeline:
    return SearchPipeline(
        backend or open_backend(settings),
        embedder or make_embedder(settings),
        reranker if reranker is not None else make_reranker(settings),
        SearchOptions.from_settings(settings),
    )

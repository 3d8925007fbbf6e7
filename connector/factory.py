"""The one place where the settings become constructor arguments: embedded, OpenSearch or Elasticsearch,
in-process or Celery reranking, the search options. Library code below this takes plain arguments and never
reads settings; the rerank side is built by the workers' own factory from the same settings object."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from hybrid_rerank.connector.backends.base import Backend
from hybrid_rerank.connector.domain import DomainGuard, load_domain_guard
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.language import LanguageGuard, ModelLanguages, model_languages
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers import factory as workers_factory
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.runtime.models import resolve_model
from hybrid_rerank.workers.scorer import CrossEncoderScorer

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from opensearchpy import OpenSearch

    from hybrid_rerank.connector.service.app import ServiceConfig, ServiceParts


def revealed(secret: SecretStr | None) -> str | None:
    """A secret's value for a client's constructor, the one place it leaves its SecretStr."""
    return secret.get_secret_value() if secret is not None else None


def opensearch_client(settings: Settings) -> OpenSearch:
    """A client for OPENSEARCH_URL with the configured credentials, CA, TLS verification and timeout."""
    from hybrid_rerank.connector.backends.opensearch import make_client

    if settings.opensearch_url is None:
        raise ConfigurationError("OPENSEARCH_URL is not set")
    ca_certs = settings.opensearch_ca_certs
    return make_client(
        settings.opensearch_url,
        username=settings.opensearch_username,
        password=revealed(settings.opensearch_password),
        verify_certs=settings.opensearch_verify_certs,
        ca_certs=str(ca_certs) if ca_certs is not None else None,
        timeout=settings.opensearch_timeout,
    )


def elasticsearch_client(settings: Settings) -> Elasticsearch:
    """A client for ELASTICSEARCH_URL with basic authentication or an API key, the CA and TLS verification."""
    from hybrid_rerank.connector.backends.elasticsearch import make_client

    if settings.elasticsearch_url is None:
        raise ConfigurationError("ELASTICSEARCH_URL is not set")
    ca_certs = settings.elasticsearch_ca_certs
    return make_client(
        settings.elasticsearch_url,
        username=settings.elasticsearch_username,
        password=revealed(settings.elasticsearch_password),
        api_key=revealed(settings.elasticsearch_api_key),
        ca_certs=str(ca_certs) if ca_certs is not None else None,
        verify_certs=settings.elasticsearch_verify_certs,
    )


def open_backend(settings: Settings, index_name: str | None = None) -> Backend:
    name = index_name or settings.index_name
    if settings.uses_opensearch:
        from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend

        return OpenSearchBackend(
            opensearch_client(settings),
            name,
            url=settings.opensearch_url or "",
            analyzer=settings.opensearch_analyzer,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construction=settings.hnsw_ef_construction,
            title_boost=settings.title_boost,
        )
    if settings.elasticsearch_url is not None:
        from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend(
            elasticsearch_client(settings),
            name,
            url=settings.elasticsearch_url,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construction=settings.hnsw_ef_construction,
            title_boost=settings.title_boost,
        )
    from hybrid_rerank.connector.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings.data_dir, name)


def make_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model,
        batch_size=settings.embedding_batch_size,
        device=settings.embedding_device,
        trust_remote_code=settings.trust_remote_code,
        backend=settings.embedding_backend,
        token_budget=settings.embedding_token_budget,
        cache_dir=settings.embedding_onnx_cache,
        query_cache_size=settings.embedding_query_cache,
        query_prompt=settings.embedding_query_prompt,
        passage_prompt=settings.embedding_passage_prompt,
        query_backend=settings.embedding_query_backend,
        query_threads=settings.embedding_query_threads,
    )


def make_scorer(settings: Settings) -> CrossEncoderScorer | None:
    """The configured cross-encoder, for tools that score in this process; None when RERANK_MODEL is off."""
    return workers_factory.make_scorer(settings)


def make_reranker(settings: Settings) -> Reranker | None:
    """Celery workers when REDIS_URL is set, else the same scorer in this process; None when off."""
    return workers_factory.make_reranker(settings)


def search_options(settings: Settings) -> SearchOptions:
    return SearchOptions(
        recall_depth=settings.recall_depth,
        rerank_depth=settings.rerank_depth,
        top_k=settings.top_k,
        fusion=settings.fusion,
        rrf_k=settings.rrf_k,
        bm25_weight=settings.bm25_weight,
        hybrid_mode=settings.hybrid_mode,
        recall_texts=settings.recall_texts,
        rerank_weight=settings.rerank_interpolation,  # None: the model's tuned weight, from its reply
    )


def language_guard(settings: Settings) -> LanguageGuard | None:
    """What each model reads: EMBEDDING_LANGUAGES / RERANK_LANGUAGES, else the model's card (read here when
    the folder is local or cached; a remote reranker declares nothing); None when LANGUAGE_GUARD is off."""
    if not settings.language_guard:
        return None
    embedding = settings.embedding_model
    rerank = ModelLanguages()
    if settings.rerank_languages is not None:
        rerank = ModelLanguages(tuple(settings.rerank_languages), "setting")
    elif settings.rerank_model is not None and settings.rerank_kind != "remote":
        rerank = model_languages(settings.rerank_model, resolve_model(settings.rerank_model).location, None)
    return LanguageGuard(
        model_languages(embedding, resolve_model(embedding).location, settings.embedding_languages), rerank
    )


def domain_guard(settings: Settings) -> DomainGuard | None:
    """The local reranker's training-domain fingerprint (its hybrid_rerank.json), when it records one."""
    if settings.rerank_model is None or settings.rerank_kind == "remote":
        return None
    return load_domain_guard(resolve_model(settings.rerank_model).location)


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
        search_options(settings),
        language_guard(settings),
        domain_guard(settings),
    )


def service_config(settings: Settings) -> ServiceConfig:
    from hybrid_rerank.connector.service.app import ServiceConfig
    from hybrid_rerank.connector.service.limits import ServiceLimits

    limits = ServiceLimits(
        max_body_bytes=settings.service_max_body_bytes,
        max_query_chars=settings.service_max_query_chars,
        max_documents=settings.service_max_documents,
        max_document_chars=settings.service_max_document_chars,
        max_k=settings.service_max_k,
        max_page=settings.service_max_page,
        max_job_queries=settings.service_max_job_queries,
    )
    return ServiceConfig(limits, settings.api_key, list(settings.cors_origins))


def make_service(settings: Settings, index_name: str | None = None) -> ServiceParts:
    """The service's pipeline and config; with REDIS_URL, jobs kept in Redis and the probes that ask Redis
    and the workers, else jobs in this process and the in-process model."""
    from hybrid_rerank.connector.service.app import ServiceParts
    from hybrid_rerank.connector.service.jobs import MemoryJobStore, RedisJobStore
    from hybrid_rerank.connector.service.readiness import RecentConsumers
    from hybrid_rerank.workers.client import CeleryReranker

    pipeline = make_pipeline(settings, backend=open_backend(settings, index_name))
    config = service_config(settings)
    reranker = pipeline.reranker
    if settings.redis_url is None or not isinstance(reranker, CeleryReranker):
        return ServiceParts(pipeline, config, MemoryJobStore(settings.service_job_ttl_s))
    import redis

    from hybrid_rerank.workers.health import consumers, queue_depths

    url = settings.redis_url.get_secret_value()
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=5.0)
    celery_reranker = reranker

    def ping() -> None:
        client.ping()

    return ServiceParts(
        pipeline,
        config,
        RedisJobStore(client, settings.service_job_ttl_s),
        ping_redis=ping,
        consumers=RecentConsumers(
            lambda: consumers(celery_reranker.app, celery_reranker.queue, timeout_s=0.5)
        ),
        queue_depths=lambda: queue_depths(url, celery_reranker.model),
    )

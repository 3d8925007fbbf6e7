"""The HTTP service: `create_app(pipeline, config)` wires the routes, the limits, the API key, CORS and the
metrics around the same `SearchPipeline` the CLI uses. FastAPI on uvicorn: the pydantic models we already
validate with become the OpenAPI schema at `/docs`, and sync routes run in a thread pool, which suits a
pipeline whose stages block on the engine, Redis and the model.

The app never reads settings: `hybrid_rerank.connector.factory.make_service` turns them into the pipeline
and a `ServiceConfig`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr

from hybrid_rerank.connector.pipeline import SearchPipeline
from hybrid_rerank.connector.service.errors import (
    ApiError,
    api_error_handler,
    validation_error_handler,
)
from hybrid_rerank.connector.service.jobs import JobRunner, JobStore
from hybrid_rerank.connector.service.limits import BodySizeLimit, ServiceLimits
from hybrid_rerank.connector.service.metrics import RequestMetrics, ServiceMetrics
from hybrid_rerank.connector.service.readiness import Readiness, readiness
from hybrid_rerank.connector.service.rerank_routes import rerank_router
from hybrid_rerank.connector.service.routes import operator_router, search_router

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("hybrid_rerank.service")


@dataclass(frozen=True)
class ServiceConfig:
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    api_key: SecretStr | None = None
    cors_origins: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceParts:
    """What the app serves with, built by the factory: the pipeline, where jobs are kept, and how to reach
    Redis and the workers for /readyz and the queue-depth gauge (no-ops without Redis)."""

    pipeline: SearchPipeline
    config: ServiceConfig
    job_store: JobStore
    ping_redis: Callable[[], None] = lambda: None
    consumers: Callable[[], list[str]] = lambda: []
    queue_depths: Callable[[], Mapping[str, int]] | None = None


def bearer_guard(api_key: SecretStr | None) -> Callable[[Request], None]:
    """A dependency that refuses a request without `Authorization: Bearer <API_KEY>`. The comparison takes
    the same time whatever the guess, and the key is never logged or echoed."""
    expected = api_key.get_secret_value().encode() if api_key is not None else None

    def require_key(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(
                401,
                "authorization: send the API key as `Authorization: Bearer <key>`",
                "authorization",
                {"WWW-Authenticate": "Bearer"},
            )

    return require_key


def warm_up(parts: ServiceParts) -> None:
    """Load the models and open the index before the first request, so /healthz answers when the service
    can answer fast; a failure here is logged and shown by /readyz, never fatal."""
    pipeline = parts.pipeline
    try:
        _ = pipeline.embedder.dimension
        pipeline.backend.index_info()
    except Exception as exc:
        log.warning("warm-up: %s", exc)
    if pipeline.reranker is not None:
        problem = pipeline.reranker.available()
        if problem is not None:
            log.warning("warm-up: the reranker is not available: %s", problem)


def create_app(parts: ServiceParts) -> FastAPI:
    config = parts.config
    pipeline = parts.pipeline
    metrics = ServiceMetrics(parts.queue_depths)
    jobs = JobRunner(parts.job_store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        warm_up(parts)
        yield
        jobs.shutdown()

    app = FastAPI(
        title="hybrid-rerank",
        summary="Hybrid recall and cross-encoder reranking over HTTP",
        version="0.1.0",
        lifespan=lifespan,
    )
    guard = Depends(bearer_guard(config.api_key))
    app.include_router(search_router(pipeline, config.limits, metrics, jobs), dependencies=[guard])
    app.include_router(rerank_router(pipeline.reranker, config.limits, metrics), dependencies=[guard])

    def ready() -> Readiness:
        return readiness(pipeline.backend, pipeline.reranker, parts.ping_redis, parts.consumers)

    app.include_router(operator_router(ready, metrics, guard))
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    if (STATIC / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(STATIC / "index.html")

    # Outermost first: metrics see every answer, the body limit answers before anything reads the body.
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodySizeLimit, max_bytes=config.limits.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app

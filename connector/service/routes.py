"""Our own routes: `POST /search`, the async jobs, and the operator's `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hybrid_rerank.connector.errors import (
    BackendUnavailableError,
    ConnectorError,
    IndexMismatchError,
    IndexMissingError,
    InvalidQueryError,
)
from hybrid_rerank.connector.pipeline import SearchPipeline, SearchResult
from hybrid_rerank.connector.service.errors import ApiError
from hybrid_rerank.connector.service.jobs import JobRunner
from hybrid_rerank.connector.service.limits import ServiceLimits
from hybrid_rerank.connector.service.metrics import ServiceMetrics
from hybrid_rerank.connector.service.readiness import Readiness
from hybrid_rerank.connector.service.rerank_api import (
    candidates_of,
    check_rerank_input,
    ranked,
    scores_by_index,
)
from hybrid_rerank.connector.service.schemas import JobBody, RerankJob, SearchBody
from hybrid_rerank.connector.service.search_api import check_k, check_query, parse_filters, search_call


def search_router(
    pipeline: SearchPipeline, limits: ServiceLimits, metrics: ServiceMetrics, jobs: JobRunner
) -> APIRouter:
    router = APIRouter(tags=["search"])
    default_k = pipeline.options.top_k

    @router.post("/search", summary="Hybrid recall, fusion and reranking for one query")
    def search(body: SearchBody) -> dict[str, Any]:
        call = search_call(body, default_k, limits)
        with mapped_errors():
            result = pipeline.search(
                call.query,
                k=call.k,
                filters=call.filters,
                rerank=call.rerank,
                offset=call.offset,
                deadline_ms=call.deadline_ms,
            )
        observe(metrics, result, pipeline.options.rerank_depth)
        return result.to_json(include_first_stage=body.include_first_stage)

    @router.post("/jobs", status_code=202, summary="Start a long rerank or a batch of searches")
    def start_job(job: JobBody) -> dict[str, Any]:
        if isinstance(job, RerankJob):
            check_rerank_input(job.query, job.documents, limits, "documents")
            record = jobs.submit(
                "rerank", 1, lambda progress: rerank_job(pipeline, job.query, job.documents, progress)
            )
        else:
            if not job.queries:
                raise ApiError(422, "queries: must not be empty", "queries")
            if len(job.queries) > limits.max_job_queries:
                raise ApiError(
                    413,
                    f"queries: {len(job.queries):,} queries, over the limit of {limits.max_job_queries:,} "
                    "(SERVICE_MAX_JOB_QUERIES)",
                    "queries",
                )
            for position, query in enumerate(job.queries):
                check_query(query, limits, f"queries[{position}]")
            k = check_k(job.k, default_k, limits)
            filters = parse_filters(job.filters, [])
            queries, rerank = list(job.queries), job.rerank

            def work(progress: Callable[[int, int], None]) -> Any:
                with mapped_errors():
                    results = pipeline.search_many(
                        queries, k=k, filters=filters, rerank=rerank, progress=progress
                    )
                for result in results:
                    observe(metrics, result, pipeline.options.rerank_depth)
                return [result.to_json() for result in results]

            record = jobs.submit("search", len(queries), work)
        return {"id": record.id, "state": record.state, "url": f"/jobs/{record.id}"}

    @router.get("/jobs/{job_id}", summary="A job's state, progress and, when done, its result")
    def job_state(job_id: str) -> dict[str, Any]:
        record = jobs.store.load(job_id)
        if record is None:
            raise ApiError(
                404, f"job_id: no job {job_id!r} (finished jobs expire after SERVICE_JOB_TTL_S)", "job_id"
            )
        return record.to_json()

    return router


def rerank_job(
    pipeline: SearchPipeline, query: str, documents: list[str], progress: Callable[[int, int], None]
) -> list[dict[str, Any]]:
    """A long rerank on the workers' batch queue: `[{index, score}]`, best first (raw scores)."""
    if pipeline.reranker is None:
        raise ApiError(503, "no rerank model configured (RERANK_MODEL is off)", None)
    (outcome,) = pipeline.reranker.rerank_many([(query, candidates_of(documents))], progress=progress)
    scores = scores_by_index(outcome, len(documents))  # a failed outcome fails the job, with its reason
    return [{"index": i, "score": scores[i]} for i in ranked(scores)]


def observe(metrics: ServiceMetrics, result: SearchResult, rerank_depth: int) -> None:
    metrics.observe_stages(result.timings_ms)
    metrics.observe_rerank(result.rerank_fallback, min(rerank_depth, result.candidates), result.cached_scores)


@contextmanager
def mapped_errors() -> Iterator[None]:
    """The connector's errors as API errors: the client's fault is 4xx, an unreachable engine 503."""
    try:
        yield
    except InvalidQueryError as exc:
        raise ApiError(422, f"query: {exc}", "query") from exc
    except (IndexMissingError, IndexMismatchError) as exc:
        raise ApiError(409, str(exc), None) from exc
    except BackendUnavailableError as exc:
        raise ApiError(503, str(exc), None, {"Retry-After": "5"}) from exc
    except ConnectorError as exc:
        raise ApiError(502, str(exc), None) from exc


def operator_router(readiness: Callable[[], Readiness], metrics: ServiceMetrics, guard: Any) -> APIRouter:
    """`guard` (the API-key dependency) protects /metrics; the probes stay open for the orchestrator."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The engine and the reranker can serve now")
    def readyz() -> JSONResponse:
        state = readiness()
        return JSONResponse(state.to_json(), 200 if state.ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", dependencies=[guard])
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router

"""The rerank routes in the shapes clients already speak: text-embeddings-inference's `POST /rerank`, and
Cohere's `POST /v1/rerank` and `/v2/rerank` (Jina's rerank API shares that shape). They go through the same
dispatch as search: Celery workers with the deadline and score cache when REDIS_URL is set, else this
process. A request with more documents than a worker task takes is split by the client, not refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter

from hybrid_rerank.connector.service.errors import ApiError
from hybrid_rerank.connector.service.limits import ServiceLimits
from hybrid_rerank.connector.service.metrics import ServiceMetrics
from hybrid_rerank.connector.service.rerank_api import (
    candidates_of,
    check_rerank_input,
    cohere_reply,
    cohere_top_n,
    scores_by_index,
    tei_results,
)
from hybrid_rerank.connector.service.schemas import CohereDocument, CohereRerankBody, TeiRerankBody
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import RerankOutcome


def rerank_router(reranker: Reranker | None, limits: ServiceLimits, metrics: ServiceMetrics) -> APIRouter:
    router = APIRouter(tags=["rerank"])

    def score(query: str, texts: Sequence[str]) -> tuple[list[float], str]:
        if reranker is None:
            raise ApiError(503, "no rerank model configured (RERANK_MODEL is off)", None)
        started = time.perf_counter()
        outcome: RerankOutcome = reranker.rerank(query, candidates_of(texts))
        metrics.observe_stages({"rerank": (time.perf_counter() - started) * 1000.0})
        metrics.observe_rerank(outcome.code if outcome.scores is None else None, len(texts), outcome.cached)
        return scores_by_index(outcome, len(texts)), outcome.model or ""

    @router.post("/rerank", summary="Rerank texts (text-embeddings-inference shape)")
    def tei_rerank(body: TeiRerankBody) -> list[dict[str, Any]]:
        check_rerank_input(body.query, body.texts, limits, "texts")
        scores, _ = score(body.query, body.texts)
        return tei_results(scores, body.texts, raw_scores=body.raw_scores, return_text=body.return_text)

    def cohere(body: CohereRerankBody, version: str) -> dict[str, Any]:
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        check_rerank_input(body.query, texts, limits, "documents")
        top_n = cohere_top_n(body.top_n, len(texts))
        scores, model = score(body.query, texts)
        documents = [d if isinstance(d, str) else _document(d) for d in body.documents]
        return cohere_reply(
            scores,
            documents,
            top_n=top_n,
            return_documents=bool(body.return_documents),
            version=version,
            model=model or (body.model or ""),
        )

    @router.post("/v1/rerank", summary="Rerank documents (Cohere v1 / Jina shape)")
    def cohere_v1(body: CohereRerankBody) -> dict[str, Any]:
        return cohere(body, "1")

    @router.post("/v2/rerank", summary="Rerank documents (Cohere v2 shape)")
    def cohere_v2(body: CohereRerankBody) -> dict[str, Any]:
        return cohere(body, "2")

    return router


def _document(document: CohereDocument) -> dict[str, Any]:
    return document.model_dump()

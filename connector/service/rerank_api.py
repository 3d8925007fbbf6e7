"""The rerank APIs' shapes as pure functions: documents in, candidates out; scores in, each family's
results out. No I/O here, so every shape is pinned by unit tests."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_rerank.connector.service.errors import ApiError
from hybrid_rerank.connector.service.limits import ServiceLimits
from hybrid_rerank.connector.service.search_api import check_query
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome

# A failed rerank has no order to fall back to on these routes: the client gets a status it can act on.
# A passed deadline, or a request refused because the queue would not answer it in time, is overload (retry
# later, as TEI's 429 Overloaded); anything else, the stage is down.
FALLBACK_STATUS = {"deadline": 429, "overloaded": 429}


def sigmoid(logit: float) -> float:
    """The cross-encoder's logit as a 0..1 relevance score (TEI without raw_scores, Cohere, Jina)."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    exp = math.exp(logit)
    return exp / (1.0 + exp)


def check_rerank_input(query: str, texts: Sequence[str], limits: ServiceLimits, documents_field: str) -> None:
    """Raises ApiError naming the field: an empty or long query, no documents or too many, a long one."""
    check_query(query, limits)
    if not texts:
        raise ApiError(422, f"{documents_field}: must not be empty", documents_field)
    if len(texts) > limits.max_documents:
        raise ApiError(
            413,
            f"{documents_field}: {len(texts):,} documents, over the limit of {limits.max_documents:,} "
            "per request (SERVICE_MAX_DOCUMENTS)",
            documents_field,
        )
    for position, text in enumerate(texts):
        if len(text) > limits.max_document_chars:
            raise ApiError(
                413,
                f"{documents_field}[{position}]: {len(text):,} characters, over the limit of "
                f"{limits.max_document_chars:,} (SERVICE_MAX_DOCUMENT_CHARS)",
                f"{documents_field}[{position}]",
            )


def candidates_of(texts: Sequence[str]) -> list[Candidate]:
    """Each text as a candidate whose id is its position, so scores map back to the request's order."""
    return [Candidate(str(position), text) for position, text in enumerate(texts)]


def scores_by_index(outcome: RerankOutcome, count: int) -> list[float]:
    """The outcome's scores in request order; a failed or incomplete outcome is an ApiError."""
    if outcome.scores is None:
        code = outcome.code or "failed"
        raise ApiError(FALLBACK_STATUS.get(code, 503), f"not reranked: {outcome.reason or code}", None)
    missing = [i for i in range(count) if str(i) not in outcome.scores]
    if missing:
        raise ApiError(503, f"not reranked: the reranker returned no score for document {missing[0]}", None)
    return [outcome.scores[str(i)] for i in range(count)]


def ranked(scores: Sequence[float]) -> list[int]:
    """Indices best first; equal scores keep the request's order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def tei_results(
    scores: Sequence[float], texts: Sequence[str], *, raw_scores: bool, return_text: bool
) -> list[dict[str, Any]]:
    """TEI's `[{index, score, text?}]`, sorted by score."""
    results = []
    for index in ranked(scores):
        item: dict[str, Any] = {
            "index": index,
            "score": scores[index] if raw_scores else sigmoid(scores[index]),
        }
        if return_text:
            item["text"] = texts[index]
        results.append(item)
    return results


def cohere_score(logit: float) -> float:
    """The relevance score to 9 significant digits: ml-commons' built-in Cohere post-process (OpenSearch
    2.19) casts JSON numbers to Double and fails on the BigDecimal it parses from 16-17 digits. The order is
    decided on the full scores before this."""
    return float(f"{sigmoid(logit):.9g}")


def cohere_top_n(top_n: int | None, count: int) -> int:
    if top_n is None:
        return count
    if top_n < 1:
        raise ApiError(422, "top_n: must be at least 1", "top_n")
    return min(top_n, count)


def cohere_reply(
    scores: Sequence[float],
    documents: Sequence[str | Mapping[str, Any]],
    *,
    top_n: int,
    return_documents: bool,
    version: str,
    model: str,
) -> dict[str, Any]:
    """Cohere's `{id, results: [{index, relevance_score, document?}], meta}`; Jina's `model` too."""
    results = []
    for index in ranked(scores)[:top_n]:
        item: dict[str, Any] = {"index": index, "relevance_score": cohere_score(scores[index])}
        if return_documents:
            document = documents[index]
            item["document"] = {"text": document} if isinstance(document, str) else dict(document)
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
        "model": model,
    }

"""The search pipeline: BM25 top-N and vector top-N under the same filters, fused, top-M reranked, top-k.

Every hit keeps the score of every stage, and the result keeps each stage's time, so a user can see where
a ranking came from and what it cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from hybrid_rerank.connector.backends.base import Backend, Filters, Vector, check_index_matches
from hybrid_rerank.connector.domain import DomainGuard
from hybrid_rerank.connector.embedder import Embedder, ProgressCallback, check_passage_prompt
from hybrid_rerank.connector.errors import IndexMissingError, InvalidQueryError
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.language import LanguageGuard, LanguagePlan
from hybrid_rerank.connector.results import Hit, SearchResult, hit_json
from hybrid_rerank.connector.stages import (
    FusionOptions,
    PoolEntry,
    bm25_pool,
    first_stage_ranking,
    fuse_recall,
    pool_from_server,
    rerank_head,
    rerank_order,
    rerank_weight,
    shown_ids,
    with_documents,
)
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate, RerankOutcome

__all__ = ["PIPELINE_FALLBACK_CODES", "Hit", "SearchOptions", "SearchPipeline", "SearchResult", "hit_json"]

# The pipeline's own `rerank_fallback` codes, beside the reranker's (`workers.protocol.FALLBACK_CODES`): a
# Prometheus label and a field of API replies, so the set is fixed (a test pins it).
PIPELINE_FALLBACK_CODES = (
    "turned_off",
    "no_model",
    "depth_zero",
    "no_candidates",
    "language",
    "missing_scores",
)


@dataclass(frozen=True)
class SearchOptions:
    recall_depth: int = 100  # N: candidates from each recall leg
    rerank_depth: int = 30  # M: fused candidates sent to the cross-encoder
    top_k: int = 10  # k: hits returned
    fusion: FusionMethod = "zscore"
    rrf_k: int = 60
    bm25_weight: float = 0.5  # convex fusions; the vector leg gets 1 - this
    hybrid_mode: Literal["client", "server"] = "client"
    # final score = w * z(rerank) + (1 - w) * z(fused) over the reranked head; None: the weight the model
    # was tuned with, which the reranker's reply carries (1 when it has none).
    rerank_weight: float | None = None
    # "legs": both legs return their hits' texts (one round trip; measured faster on SciFact-size texts);
    # "fetch": the legs return ids and scores, then one request fetches the reranked head's and the page's
    # texts (fewer bytes for long documents, one more round trip).
    recall_texts: Literal["legs", "fetch"] = "legs"

    @property
    def fusion_options(self) -> FusionOptions:
        return FusionOptions(self.fusion, self.rrf_k, self.bm25_weight)


class SearchPipeline:
    def __init__(
        self,
        backend: Backend,
        embedder: Embedder,
        reranker: Reranker | None,
        options: SearchOptions | None = None,
        language_guard: LanguageGuard | None = None,
        domain_guard: DomainGuard | None = None,
    ) -> None:
        """`language_guard`: None trusts the models with every query (LANGUAGE_GUARD=false).
        `domain_guard`: the reranker's training-domain fingerprint (None: the model's own weight for all)."""
        self.backend = backend
        self.embedder = embedder
        self.reranker = reranker
        self.options = options or SearchOptions()
        self.language_guard = language_guard
        self.domain_guard = domain_guard
        self._index_checked = False

    def _check_index(self) -> None:
        if self._index_checked:
            return
        info = self.backend.index_info()
        if info is None:
            raise IndexMissingError("the index does not exist yet; run `hybrid-rerank index PATH` first")
        check_passage_prompt(info.name, info.embedding_model, self.embedder.model_name)
        check_index_matches(info, self.embedder.model_name, self.embedder.dimension)
        self._index_checked = True

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        filters: Filters | None = None,
        rerank: bool = True,
        offset: int = 0,
        deadline_ms: int | None = None,
    ) -> SearchResult:
        """Hits `offset` to `offset + k` of the ranked list. The recall window (N per leg) and the reranked
        head (M) do not depend on the page, so pages never overlap or repeat. `deadline_ms` overrides the
        reranker's own deadline for this query (None: RERANK_DEADLINE_MS)."""
        top_k = self._checked_k(query, k, offset)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        plan = self._plan(query)
        pool = self._first_stage(query, filters, timings, plan)
        fallback = self._why_not_rerank(rerank, len(pool), plan)
        pool = self._with_texts(pool, fallback is None, offset, top_k, timings)
        outcome = None
        if fallback is None:
            assert self.reranker is not None
            with _timed(timings, "rerank"):
                outcome = self.reranker.rerank(query, self._head(pool), deadline_ms=deadline_ms)
        return self._assemble(query, pool, outcome, fallback, timings, started, top_k, offset, plan)

    def search_many(
        self,
        queries: Sequence[str],
        *,
        k: int | None = None,
        filters: Filters | None = None,
        rerank: bool = True,
        progress: ProgressCallback | None = None,
    ) -> list[SearchResult]:
        """Many queries for an offline job: every first stage here, then the reranking in one batch when the
        reranker takes batches (Celery workers work through it in parallel), else query by query."""
        sizes = [self._checked_k(query, k, 0) for query in queries]
        started: list[float] = []
        timings: list[dict[str, float]] = [{} for _ in queries]
        pools: list[list[PoolEntry]] = []
        plans = [self._plan(query) for query in queries]
        for query, query_timings, plan in zip(queries, timings, plans, strict=True):
            started.append(time.perf_counter())  # "total" then includes the wait for the batch
            pools.append(self._first_stage(query, filters, query_timings, plan))
        notes = [
            self._why_not_rerank(rerank, len(pool), plan) for pool, plan in zip(pools, plans, strict=True)
        ]
        pools = [
            self._with_texts(pool, note is None, 0, size, query_timings)
            for pool, note, size, query_timings in zip(pools, notes, sizes, timings, strict=True)
        ]
        todo = [i for i, fallback in enumerate(notes) if fallback is None]
        outcomes: list[RerankOutcome | None] = [None] * len(queries)
        if todo:
            assert self.reranker is not None
            requests = [(queries[i], self._head(pools[i])) for i in todo]
            for i, outcome in zip(todo, self.reranker.rerank_many(requests, progress=progress), strict=True):
                outcomes[i] = outcome
        return [
            self._assemble(q, pool, outcome, note, t, start, size, 0, plan)
            for q, pool, outcome, note, t, start, size, plan in zip(
                queries, pools, outcomes, notes, timings, started, sizes, plans, strict=True
            )
        ]

    def _checked_k(self, query: str, k: int | None, offset: int) -> int:
        if not query.strip():
            raise InvalidQueryError("the query is empty")
        top_k = self.options.top_k if k is None else k
        if top_k <= 0 or offset < 0:
            raise InvalidQueryError(
                f"k must be positive and offset non-negative, got k={top_k}, offset={offset}"
            )
        self._check_index()
        return top_k

    def _plan(self, query: str) -> LanguagePlan | None:
        return self.language_guard.plan(query) if self.language_guard is not None else None

    def _first_stage(
        self, query: str, filters: Filters | None, timings: dict[str, float], plan: LanguagePlan | None
    ) -> list[PoolEntry]:
        """The fused candidate pool, best first; the BM25 leg alone when the bi-encoder cannot read it."""
        if plan is not None and not plan.dense:
            with _timed(timings, "recall"), _timed(timings, "bm25"):
                return bm25_pool(
                    self.backend.bm25(query, self.options.recall_depth, filters, texts=self._leg_texts)
                )
        with _timed(timings, "embed_query"):
            query_vector = self.embedder.embed_query(query)
        if self.options.hybrid_mode == "server":
            return self._server_hybrid(query, query_vector, filters, timings)
        return self._client_hybrid(query, query_vector, filters, timings)

    def _with_texts(
        self, pool: list[PoolEntry], reranking: bool, offset: int, top_k: int, timings: dict[str, float]
    ) -> list[PoolEntry]:
        """With RECALL_TEXTS=fetch the legs came without texts: fetch them, in one request, for the reranked
        head (when this query is reranked) and the page alone, not for the rest of the pool."""
        if self._leg_texts:
            return pool
        ids = shown_ids(pool, self.options.rerank_depth if reranking else 0, offset, top_k)
        with _timed(timings, "fetch"):
            return with_documents(pool, self.backend.documents(ids))

    @property
    def _leg_texts(self) -> bool:
        return self.options.recall_texts == "legs"

    def _head(self, pool: list[PoolEntry]) -> list[Candidate]:
        return rerank_head(pool, self.options.rerank_depth)

    def _assemble(
        self,
        query: str,
        pool: list[PoolEntry],
        outcome: RerankOutcome | None,
        fallback: tuple[str, str] | None,
        timings: dict[str, float],
        started: float,
        top_k: int,
        offset: int,
        plan: LanguagePlan | None = None,
    ) -> SearchResult:
        """`fallback` is (code, note) when the pipeline did not ask for a rerank."""
        by_id = {entry.id: entry for entry in pool}
        first_order = [entry.id for entry in pool]
        order = first_order
        rerank_scores: dict[str, float] = {}
        final: dict[str, float] = {}
        domain_note: str | None = None
        if outcome is not None:
            missing = [e.id for e in pool[: self.options.rerank_depth] if e.id not in (outcome.scores or {})]
            if outcome.scores is None:
                fallback = (outcome.code or "failed", outcome.reason or "reranker returned no scores")
            elif missing:
                fallback = (
                    "missing_scores",
                    f"the reranker returned no score for {len(missing)} candidate(s), e.g. {missing[0]!r}",
                )
            else:
                rerank_scores = outcome.scores
                weight = rerank_weight(self.options.rerank_weight, outcome.interpolation_weight)
                if self.options.rerank_weight is None and outcome.interpolation_weight is not None:
                    weight, domain_note = self._domain_weight(query, weight, plan)
                order, final = rerank_order(
                    first_stage_ranking(pool), rerank_scores, self.options.rerank_depth, weight
                )

        def page(ids: list[str], scores: dict[str, float]) -> list[Hit]:
            hits = []
            for rank, doc_id in enumerate(ids[offset : offset + top_k], start=offset + 1):
                c = by_id[doc_id]
                hits.append(
                    Hit(
                        rank=rank,
                        document=c.document,
                        score=scores.get(doc_id, c.fused_score),
                        fused_score=c.fused_score,
                        bm25_score=c.bm25[1],
                        vector_score=c.vector[1],
                        rerank_score=rerank_scores.get(doc_id),
                        bm25_rank=c.bm25[0],
                        vector_rank=c.vector[0],
                        fused_rank=c.fused_rank,
                        passage=c.passage,
                    )
                )
            return hits

        timings["total"] = (time.perf_counter() - started) * 1000.0
        code, note = fallback if fallback is not None else (None, None)
        return SearchResult(
            query,
            page(order, final),
            fallback is None,
            note,
            timings,
            len(order),
            rerank_fallback=code,
            first_stage=page(first_order, {}),
            cached_scores=outcome.cached if outcome is not None and fallback is None else 0,
            language=plan.language if plan is not None else None,
            bm25_only=plan is not None and not plan.dense,
            language_note=plan.note if plan is not None else None,
            domain_note=domain_note,
        )

    def _domain_weight(
        self, query: str, weight: float, plan: LanguagePlan | None
    ) -> tuple[float, str | None]:
        """The model's own weight, raised to its tuned in-domain weight when the domain guard recognises the
        query as one of its training domain's (the query vector comes from the embedder's cache)."""
        if self.domain_guard is None:
            return weight, None
        dense = plan is None or plan.dense
        vector = self.embedder.embed_query(query) if dense else None
        decision = self.domain_guard.decide(weight, vector, self.embedder.model_name)
        return decision.weight, decision.note

    def _client_hybrid(
        self, query: str, vector: Vector, filters: Filters | None, timings: dict[str, float]
    ) -> list[PoolEntry]:
        with _timed(timings, "recall"):
            recall = self.backend.recall(
                query, vector, self.options.recall_depth, filters, texts=self._leg_texts
            )
        timings.update(recall.leg_ms)
        with _timed(timings, "fusion"):
            return fuse_recall(recall, self.options.fusion_options)

    def _server_hybrid(
        self, query: str, vector: Vector, filters: Filters | None, timings: dict[str, float]
    ) -> list[PoolEntry]:
        opts = self.options
        with _timed(timings, "recall"):
            results = self.backend.hybrid(
                query,
                vector,
                opts.recall_depth,
                filters,
                fusion=opts.fusion,
                bm25_weight=opts.bm25_weight,
                rrf_k=opts.rrf_k,
                texts=self._leg_texts,
            )
        return pool_from_server(results)

    def _why_not_rerank(
        self, requested: bool, pool: int, plan: LanguagePlan | None
    ) -> tuple[str, str] | None:
        """(code, note) when this query is not sent to the reranker, else None."""
        if not requested:
            return "turned_off", "reranking turned off for this query"
        if self.reranker is None:
            return "no_model", "no rerank model configured (RERANK_MODEL is off)"
        if self.options.rerank_depth == 0:
            return "depth_zero", "RERANK_DEPTH is 0"
        if pool == 0:
            return "no_candidates", "no candidates to rerank"
        if plan is not None and plan.rerank_note is not None:
            return "language", plan.rerank_note
        return None


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = (time.perf_counter() - started) * 1000.0

"""The search pipeline: BM25 top-N and vector top-N under the same filters, fused, top-M reranked, top-k.

Every hit keeps the score of every stage, and the result keeps each stage's time, so a user can see where
a ranking came from and what it cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from connector.backends.base import Backend, Filters, LegHit, check_index_matches
from connector.documents import Document
from connector.embedder import Embedder
from connector.errors import IndexMissingError, InvalidQueryError
from connector.fusion import fuse
from connector.rerank import Reranker
from connector.settings import FusionMethod, Settings
from workers.reranking import Candidate


@dataclass(frozen=True)
class SearchOptions:
    recall_depth: int = 100  # N: candidates from each recall leg
    rerank_depth: int = 30  # M: fused candidates sent to the cross-encoder
    top_k: int = 10  # k: hits returned
    fusion: FusionMethod = "zscore"
    rrf_k: int = 60
    bm25_weight: float = 0.5  # convex fusions; the vector leg gets 1 - this

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchOptions:
        return cls(
            recall_depth=settings.recall_depth,
            rerank_depth=settings.rerank_depth,
            top_k=settings.top_k,
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            bm25_weight=settings.bm25_weight,
        )


@dataclass(frozen=True)
class Hit:
    rank: int
    document: Document
    score: float  # the score the final order is by: rerank score when reranked, else fused
    fused_score: float
    bm25_score: float | None = None  # None: not in that leg's top-N
    vector_score: float | None = None
    rerank_score: float | None = None  # None: not reranked
    bm25_rank: int | None = None
    vector_rank: int | None = None
    fused_rank: int = 0

    @property
    def id(self) -> str:
        return self.document.id


@dataclass(frozen=True)
class SearchResult:
    query: str
    hits: list[Hit]
    reranked: bool
    rerank_note: str | None  # why the result is not reranked, when it is not
    timings_ms: dict[str, float] = field(default_factory=dict)
    candidates: int = 0  # size of the fused candidate pool

    def to_json(self) -> dict[str, object]:
        return {
            "query": self.query,
            "reranked": self.reranked,
            "rerank_note": self.rerank_note,
            "timings_ms": {name: round(ms, 3) for name, ms in self.timings_ms.items()},
            "candidates": self.candidates,
            "hits": [
                {
                    "rank": h.rank,
                    "id": h.id,
                    "title": h.document.title,
                    "text": h.document.text,
                    "metadata": dict(h.document.metadata),
                    "score": h.score,
                    "scores": {
                        "bm25": h.bm25_score,
                        "vector": h.vector_score,
                        "fused": h.fused_score,
                        "rerank": h.rerank_score,
                    },
                    "ranks": {"bm25": h.bm25_rank, "vector": h.vector_rank, "fused": h.fused_rank},
                }
                for h in self.hits
            ],
        }


class SearchPipeline:
    def __init__(
        self,
        backend: Backend,
        embedder: Embedder,
        reranker: Reranker | None,
        options: SearchOptions | None = None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.reranker = reranker
        self.options = options or SearchOptions()
        self._index_checked = False

    def _check_index(self) -> None:
        if self._index_checked:
            return
        info = self.backend.index_info()
        if info is None:
            raise IndexMissingError("the index does not exist yet; run `hybrid-rerank index PATH` first")
        check_index_matches(info, self.embedder.model_name, self.embedder.dimension)
        self._index_checked = True

    def search(
        self,
        query: str,
        *,
        k: int | None = None,
        filters: Filters | None = None,
        rerank: bool = True,
    ) -> SearchResult:
        if not query.strip():
            raise InvalidQueryError("the query is empty")
        opts = self.options
        top_k = opts.top_k if k is None else k
        if top_k <= 0:
            raise InvalidQueryError(f"k must be positive, got {top_k}")
        self._check_index()
        timings: dict[str, float] = {}
        started = time.perf_counter()

        with _timed(timings, "bm25"):
            bm25_hits = self.backend.bm25(query, opts.recall_depth, filters)
        with _timed(timings, "embed_query"):
            query_vector = self.embedder.embed_query(query)
        with _timed(timings, "knn"):
            knn_hits = self.backend.knn(query_vector, opts.recall_depth, filters)
        with _timed(timings, "fusion"):
            weights = None if opts.fusion == "rrf" else [opts.bm25_weight, 1.0 - opts.bm25_weight]
            fused = fuse(opts.fusion, [_leg(bm25_hits), _leg(knn_hits)], rrf_k=opts.rrf_k, weights=weights)

        documents = {h.document.id: h.document for h in [*bm25_hits, *knn_hits]}
        bm25 = {h.document.id: (rank, h.score) for rank, h in enumerate(bm25_hits, start=1)}
        vector = {h.document.id: (rank, h.score) for rank, h in enumerate(knn_hits, start=1)}
        fused_rank = {f.id: rank for rank, f in enumerate(fused, start=1)}
        fused_score = {f.id: f.score for f in fused}
        order = [f.id for f in fused]

        rerank_scores: dict[str, float] = {}
        note = self._why_not_rerank(rerank, len(order))
        if note is None:
            assert self.reranker is not None
            head = order[: opts.rerank_depth]
            with _timed(timings, "rerank"):
                outcome = self.reranker.rerank(query, [Candidate(i, documents[i].full_text) for i in head])
            if outcome.scores is None:
                note = outcome.reason or "reranker returned no scores"
            else:
                rerank_scores = outcome.scores
                head = sorted(head, key=lambda i: (-rerank_scores[i], fused_rank[i]))
                order = head + order[opts.rerank_depth :]

        hits = []
        for rank, doc_id in enumerate(order[:top_k], start=1):
            b_rank, b_score = bm25.get(doc_id, (None, None))
            v_rank, v_score = vector.get(doc_id, (None, None))
            r_score = rerank_scores.get(doc_id)
            hits.append(
                Hit(
                    rank=rank,
                    document=documents[doc_id],
                    score=r_score if r_score is not None else fused_score[doc_id],
                    fused_score=fused_score[doc_id],
                    bm25_score=b_score,
                    vector_score=v_score,
                    rerank_score=r_score,
                    bm25_rank=b_rank,
                    vector_rank=v_rank,
                    fused_rank=fused_rank[doc_id],
                )
            )
        timings["total"] = (time.perf_counter() - started) * 1000.0
        return SearchResult(query, hits, note is None, note, timings, len(order))

    def _why_not_rerank(self, requested: bool, pool: int) -> str | None:
        if not requested:
            return "reranking turned off for this query"
        if self.reranker is None:
            return "no rerank model configured (RERANK_MODEL is off)"
        if self.options.rerank_depth == 0:
            return "RERANK_DEPTH is 0"
        if pool == 0:
            return "no candidates to rerank"
        return None


def _leg(hits: list[LegHit]) -> list[tuple[str, float]]:
    return [(h.document.id, h.score) for h in hits]


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = (time.perf_counter() - started) * 1000.0

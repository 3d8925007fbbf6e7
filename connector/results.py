"""What a search returns: each hit with every stage's score and rank, and the result with each stage's time
and why it was (not) reranked; their JSON form, which the CLI and the HTTP service share."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybrid_rerank.connector.backends.base import Passage
from hybrid_rerank.connector.documents import Document


@dataclass(frozen=True)
class Hit:
    rank: int
    document: Document
    score: float  # the score the final order is by: rerank (or interpolated) score when reranked, else fused
    fused_score: float
    bm25_score: float | None = None  # None: not in that leg's top-N
    vector_score: float | None = None
    rerank_score: float | None = None  # None: not reranked
    bm25_rank: int | None = None
    vector_rank: int | None = None
    fused_rank: int = 0
    passage: Passage | None = None  # on a passage index: where in the text the k-NN leg matched best

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
    # A bounded label for why not reranked (metrics count fallbacks by it): the outcome's code, or one of
    # PIPELINE_FALLBACK_CODES ("language": the reranker does not read the query's language).
    rerank_fallback: str | None = None
    first_stage: list[Hit] = field(default_factory=list)  # the same page in first-stage (fused) order
    cached_scores: int = 0  # rerank scores that came from the score cache
    language: str | None = None  # the query's language or script as the guard read it (None: guard off)
    bm25_only: bool = False  # the bi-encoder does not read the query's language: BM25 alone, no fusion
    language_note: str | None = None  # what the language guard changed, when it changed something
    domain_note: str | None = None  # the query is off the reranker's training domain: its safe weight ruled

    def to_json(self, *, include_first_stage: bool = False) -> dict[str, object]:
        reply: dict[str, object] = {
            "query": self.query,
            "reranked": self.reranked,
            "rerank_note": self.rerank_note,
            "rerank_fallback": self.rerank_fallback,
            "timings_ms": {name: round(ms, 3) for name, ms in self.timings_ms.items()},
            "candidates": self.candidates,
            "language": self.language,
            "bm25_only": self.bm25_only,
            "language_note": self.language_note,
            "domain_note": self.domain_note,
            "hits": [hit_json(h) for h in self.hits],
        }
        if include_first_stage:
            reply["first_stage"] = [hit_json(h) for h in self.first_stage]
        return reply


def hit_json(hit: Hit) -> dict[str, object]:
    reply: dict[str, object] = {
        "rank": hit.rank,
        "id": hit.id,
        "title": hit.document.title,
        "text": hit.document.text,
        "metadata": dict(hit.document.metadata),
        "score": hit.score,
        "scores": {
            "bm25": hit.bm25_score,
            "vector": hit.vector_score,
            "fused": hit.fused_score,
            "rerank": hit.rerank_score,
        },
        "ranks": {"bm25": hit.bm25_rank, "vector": hit.vector_rank, "fused": hit.fused_rank},
    }
    if hit.passage is not None:  # a passage index: which passage matched (character offsets in the text)
        reply["passage"] = hit.passage.to_json()
    return reply

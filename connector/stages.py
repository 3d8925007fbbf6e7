"""The search pipeline's stages as plain functions: fuse the recall legs into a candidate pool, take the head
the reranker reads, and order the pool by the rerank outcome. `SearchPipeline` composes them for one query;
the evaluation, training and benchmark tools call the same functions, so no tool re-implements a stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from hybrid_rerank.connector.backends.base import HybridHit, LegHit, Passage, Recall
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.fusion import FusionMethod, fuse, interpolate
from hybrid_rerank.workers.protocol import Candidate


@dataclass(frozen=True)
class FusionOptions:
    method: FusionMethod = "zscore"
    rrf_k: int = 60
    bm25_weight: float = 0.5  # convex fusions; the vector leg gets 1 - this

    @property
    def weights(self) -> list[float] | None:
        """Per-leg weights (BM25, vector); RRF counts every leg 1, as in its original formulation."""
        return None if self.method == "rrf" else [self.bm25_weight, 1.0 - self.bm25_weight]


@dataclass(frozen=True)
class PoolEntry:
    """One fused candidate with where it came from: (rank, raw score) in each leg, None where absent."""

    document: Document
    fused_score: float
    fused_rank: int
    bm25: tuple[int | None, float | None] = (None, None)
    vector: tuple[int | None, float | None] = (None, None)
    passage: Passage | None = None  # the best passage, as the k-NN leg of a passage index matched it

    @property
    def id(self) -> str:
        return self.document.id


def leg_scores(hits: Sequence[LegHit]) -> list[tuple[str, float]]:
    return [(h.document.id, h.score) for h in hits]


def fuse_recall(recall: Recall, options: FusionOptions) -> list[PoolEntry]:
    """Both legs fused into the candidate pool, best first; each entry keeps its legs' ranks and scores."""
    fused = fuse(
        options.method,
        [leg_scores(recall.bm25), leg_scores(recall.knn)],
        rrf_k=options.rrf_k,
        weights=options.weights,
    )
    documents = {h.document.id: h.document for h in [*recall.bm25, *recall.knn]}
    bm25 = {h.document.id: (rank, h.score) for rank, h in enumerate(recall.bm25, start=1)}
    knn = {h.document.id: (rank, h.score) for rank, h in enumerate(recall.knn, start=1)}
    passages = {h.document.id: h.passage for h in recall.knn}
    return [
        PoolEntry(
            documents[f.id],
            f.score,
            rank,
            bm25.get(f.id, (None, None)),
            knn.get(f.id, (None, None)),
            passages.get(f.id),
        )
        for rank, f in enumerate(fused, start=1)
    ]


def pool_from_server(hits: Sequence[HybridHit]) -> list[PoolEntry]:
    """A server-side hybrid result as the pool. Leg ranks are not known there: only each leg's raw score."""
    return [
        PoolEntry(h.document, h.score, rank, (None, h.bm25_score), (None, h.vector_score))
        for rank, h in enumerate(hits, start=1)
    ]


def bm25_pool(hits: Sequence[LegHit]) -> list[PoolEntry]:
    """The BM25 leg alone as the pool (a query the bi-encoder does not read); its raw score is the score."""
    return [
        PoolEntry(h.document, h.score, rank, (rank, h.score), (None, None))
        for rank, h in enumerate(hits, start=1)
    ]


def shown_ids(pool: Sequence[PoolEntry], head: int, offset: int, k: int) -> list[str]:
    """The ids whose texts a search needs, once each: the reranked head (top `head`) and the page (`k` from
    `offset`). A reranked page lies within these: the head reordered, then the pool's order below it."""
    return list(dict.fromkeys(entry.id for entry in [*pool[:head], *pool[offset : offset + k]]))


def with_documents(pool: Sequence[PoolEntry], documents: Mapping[str, Document]) -> list[PoolEntry]:
    """The pool with each fetched document in place of its bare one (the legs searched without texts)."""
    return [replace(e, document=documents[e.id]) if e.id in documents else e for e in pool]


def rerank_head(pool: Sequence[PoolEntry], depth: int) -> list[Candidate]:
    """The top `depth` candidates as the reranker reads them."""
    return [Candidate(entry.id, candidate_text(entry.document, entry.passage)) for entry in pool[:depth]]


def candidate_text(document: Document, passage: Passage | None) -> str:
    """What the reranker reads of a candidate: the title, then the matched passage first when the k-NN leg
    of a passage index named one, then the rest of the text from after that passage on and the text before
    it. A reranker reads its window (and with RERANK_MAX_PASSAGES, a few more) from the start, so it reads
    the passage that made the document a candidate, not only the first few hundred tokens."""
    if passage is None:
        return document.full_text
    text = document.text
    rest = " ".join(part for part in (text[passage.end :].strip(), text[: passage.start].strip()) if part)
    body = f"{text[passage.start : passage.end].strip()} {rest}".strip()
    return f"{document.title}. {body}" if document.title else body


def rerank_weight(override: float | None, tuned: float | None) -> float:
    """The weight of the rerank score against the first stage: RERANK_INTERPOLATION when set, else the
    weight the model was tuned with (a worker's reply carries it), else 1 (the rerank order alone)."""
    if override is not None:
        return override
    if tuned is not None:
        return tuned
    return 1.0


def rerank_order(
    first_stage: Sequence[tuple[str, float]], scores: Mapping[str, float], depth: int, weight: float
) -> tuple[list[str], dict[str, float]]:
    """The first-stage ranking's ids (`(id, fused score)`, best first) with the head (top `depth`) reordered,
    and each head document's final score.

    Final = the rerank score at weight 1, else w * z(rerank) + (1 - w) * z(fused) over the head, so neither
    scale dominates; ties keep the first-stage order. Below the head the first-stage order stays."""
    order = [doc_id for doc_id, _ in first_stage]
    head = order[:depth]
    final = {doc_id: scores[doc_id] for doc_id in head}
    if weight < 1.0:
        final = interpolate(final, dict(first_stage[:depth]), weight)
    rank = {doc_id: position for position, doc_id in enumerate(order)}
    return sorted(head, key=lambda i: (-final[i], rank[i])) + order[depth:], final


def first_stage_ranking(pool: Sequence[PoolEntry]) -> list[tuple[str, float]]:
    """The pool as `(id, fused score)`, best first: what `rerank_order` reorders."""
    return [(entry.id, entry.fused_score) for entry in pool]

"""How the connector gets candidates reranked. In-process here; the Celery dispatcher implements the same
`Reranker` protocol. A reranker never raises for a failed stage: it returns an outcome that says why it did
not rerank, and the pipeline keeps the first-stage order with `reranked=False`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from connector.errors import ModelLoadError, describe_exception
from workers.reranking import Candidate, CrossEncoderScorer


@dataclass(frozen=True)
class RerankOutcome:
    scores: dict[str, float] | None  # None: not reranked
    reason: str | None = None  # why not, when not

    @classmethod
    def failed(cls, reason: str) -> RerankOutcome:
        return cls(None, reason)


class Reranker(Protocol):
    description: str

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> RerankOutcome: ...


class InProcessReranker:
    """Scores in this process with the reranking core the workers use, so results are the same."""

    def __init__(self, scorer: CrossEncoderScorer) -> None:
        self.scorer = scorer
        self.description = f"in-process cross-encoder {scorer.description}"
        self._load_error: str | None = None

    def rerank(self, query: str, candidates: Sequence[Candidate]) -> RerankOutcome:
        if self._load_error is not None:  # do not retry a failed load on every query
            return RerankOutcome.failed(self._load_error)
        try:
            self.scorer.load()
        except ModelLoadError as exc:
            self._load_error = str(exc)
            return RerankOutcome.failed(self._load_error)
        try:
            scored = self.scorer.score(query, candidates)
        except Exception as exc:  # a failed stage degrades visibly instead of failing the search
            return RerankOutcome.failed(f"reranking failed: {describe_exception(exc)}")
        return RerankOutcome({s.id: s.score for s in scored})

"""Scores cached in Redis by model configuration, query and document content, with a TTL: a repeated query
skips the model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer

PREFIX = "hybrid-rerank:score"


def _digest(*parts: str) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode("utf-8"))
        hasher.update(b"\0")
    return hasher.hexdigest()


class ScoreCache:
    def __init__(self, client: Any, model_key: str, ttl_s: int) -> None:
        """`model_key` names everything that changes a score: model, max_length, passages."""
        self.client = client
        self.model = _digest(model_key)[:16]
        self.ttl_s = ttl_s

    def key(self, query: str, text: str) -> str:
        return f"{PREFIX}:{self.model}:{_digest(query, text)}"

    def get_many(self, query: str, candidates: Sequence[Candidate]) -> list[float | None]:
        if not candidates:
            return []
        values = self.client.mget([self.key(query, c.text) for c in candidates])
        return [None if v is None else float(v) for v in values]

    def put_many(self, query: str, scored: Sequence[tuple[Candidate, float]]) -> None:
        if not scored:
            return
        pipe = self.client.pipeline(transaction=False)
        for candidate, score in scored:
            pipe.set(self.key(query, candidate.text), repr(score), ex=self.ttl_s)
        pipe.execute()


def cached_scores(
    scorer: CrossEncoderScorer, cache: ScoreCache | None, query: str, candidates: Sequence[Candidate]
) -> tuple[list[tuple[str, float]], int]:
    """(id, score) for every candidate in order, cached where there are some, the model scoring the rest;
    and how many came from the cache."""
    cached = cache.get_many(query, candidates) if cache is not None else [None] * len(candidates)
    missing = [c for c, score in zip(candidates, cached, strict=True) if score is None]
    fresh = {s.id: s.score for s in scorer.score(query, missing)} if missing else {}
    if cache is not None and missing:
        cache.put_many(query, [(c, fresh[c.id]) for c in missing])
    scores = [
        (c.id, score if score is not None else fresh[c.id])
        for c, score in zip(candidates, cached, strict=True)
    ]
    return scores, len(candidates) - len(missing)

"""Ranking metrics as pure functions, defined as trec_eval defines them.

`ranking` is a list of document ids, best first; `qrels` maps a document id to its graded relevance
(0 or absent = not relevant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    return sum(gain / math.log2(position + 2) for position, gain in enumerate(gains))


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains (trec_eval's ndcg_cut); 0 when nothing is relevant."""
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(doc_id, 0), 0) for doc_id in ranking[:k]]) / ideal


def mrr_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k."""
    for position, doc_id in enumerate(ranking[:k], start=1):
        if qrels.get(doc_id, 0) > 0:
            return 1.0 / position
    return 0.0


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    relevant = {doc_id for doc_id, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def hit_rate_at_k(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1 when any relevant document is in the top k, else 0."""
    return 1.0 if mrr_at_k(ranking, qrels, k) > 0 else 0.0

import math

import pytest

from connector.metrics import hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed_with_graded_relevance() -> None:
    qrels = {"a": 2, "b": 1, "z": 1}
    ranking = ["x", "a", "b"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranking, qrels, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "b", "z"], qrels, 3) == pytest.approx(1.0)
    assert ndcg_at_k(ranking, qrels, 1) == 0.0
    assert ndcg_at_k(ranking, {}, 10) == 0.0


def test_mrr_recall_and_hit_rate() -> None:
    qrels = {"a": 1, "b": 1}
    ranking = ["x", "y", "a", "b"]
    assert mrr_at_k(ranking, qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, qrels, 2) == 0.0
    assert recall_at_k(ranking, qrels, 3) == 0.5
    assert recall_at_k(ranking, qrels, 4) == 1.0
    assert hit_rate_at_k(ranking, qrels, 2) == 0.0
    assert hit_rate_at_k(ranking, qrels, 3) == 1.0

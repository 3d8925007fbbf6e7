import math

import pytest

from hybrid_rerank.connector.lab.metrics import hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed_with_graded_relevance() -> None:
    qrels = {"a": 2, "b": 1, "z": 1}
    ranking = ["x", "a", "b"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranking, qrels, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(["a", "b", "z"], qrels, 3) == pytest.approx(1.0)
    assert ndcg_at_k(ranking, qrels, 1) == 0.0
    assert ndcg_at_k(ranking, {}, 10) == 0.0


def test_the_ideal_ranking_is_cut_at_k_too() -> None:
    """Four relevant documents, k = 2: two relevant at the top is a perfect top 2 (1.0). An ideal DCG over
    all four (1 + 0.6309 + 0.5 + 0.4307) would give 1.6309 / 2.5616 = 0.6367."""
    qrels = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert ndcg_at_k(["a", "b", "x"], qrels, 2) == pytest.approx(1.0)
    # k = 3, ranking a, x, b: (1 + 1/2) / (1 + 1/log2(3) + 1/2) = 1.5 / 2.1309.
    assert ndcg_at_k(["a", "x", "b"], qrels, 3) == pytest.approx(1.5 / (1.5 + 1 / math.log2(3)))


def test_mrr_recall_and_hit_rate() -> None:
    qrels = {"a": 1, "b": 1}
    ranking = ["x", "y", "a", "b"]
    assert mrr_at_k(ranking, qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, qrels, 2) == 0.0
    assert recall_at_k(ranking, qrels, 3) == 0.5
    assert recall_at_k(ranking, qrels, 4) == 1.0
    assert hit_rate_at_k(ranking, qrels, 2) == 0.0
    assert hit_rate_at_k(ranking, qrels, 3) == 1.0


def test_metrics_agree_with_trec_eval() -> None:
    """pytrec_eval (trec_eval's own code) on random runs with graded judgments."""
    import random

    import pytrec_eval

    from hybrid_rerank.connector.lab.evaluation import evaluate_run

    rng = random.Random(7)
    docs = [f"d{i}" for i in range(300)]
    qrels = {
        f"q{q}": {d: rng.choice([1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 6))} for q in range(40)
    }
    run = {q: rng.sample(docs, 150) for q in qrels}
    ours = evaluate_run(run, qrels)

    scored = {q: {d: float(len(ranking) - i) for i, d in enumerate(ranking)} for q, ranking in run.items()}
    top10 = {q: {d: float(10 - i) for i, d in enumerate(ranking[:10])} for q, ranking in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100", "success_1", "success_10"})
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})  # MRR@10: trec_eval over the top 10 only
    reference = full.evaluate(scored)
    reference_rr = cut.evaluate(top10)

    def mean(measure: str, table: dict[str, dict[str, float]]) -> float:
        return sum(table[q][measure] for q in qrels) / len(qrels)

    assert ours["ndcg@10"] == pytest.approx(mean("ndcg_cut_10", reference), abs=1e-9)
    assert ours["recall@100"] == pytest.approx(mean("recall_100", reference), abs=1e-9)
    assert ours["hit@1"] == pytest.approx(mean("success_1", reference), abs=1e-9)
    assert ours["hit@10"] == pytest.approx(mean("success_10", reference), abs=1e-9)
    assert ours["mrr@10"] == pytest.approx(mean("recip_rank", reference_rr), abs=1e-9)


def test_a_judged_non_relevant_document_is_not_relevant() -> None:
    # BEIR qrels may list grade-0 documents: they count for neither recall's denominator nor the ideal DCG.
    qrels = {"a": 1, "b": 0, "c": 0}
    assert recall_at_k(["a"], qrels, 10) == 1.0
    assert ndcg_at_k(["a", "b"], qrels, 10) == 1.0
    assert mrr_at_k(["b", "a"], qrels, 10) == 0.5
    assert hit_rate_at_k(["b", "c"], qrels, 10) == 0.0


def test_nothing_relevant_scores_zero_everywhere() -> None:
    qrels = {"a": 0}
    assert recall_at_k(["a"], qrels, 10) == 0.0
    assert ndcg_at_k(["a"], qrels, 10) == 0.0
    assert mrr_at_k(["a"], qrels, 10) == 0.0
    assert hit_rate_at_k(["a"], qrels, 10) == 0.0

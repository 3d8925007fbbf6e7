"""The pipeline's stage functions with hand-computed expectations: the ranking they produce is the product."""

from __future__ import annotations

import math

import pytest

from hybrid_rerank.connector.backends.base import HybridHit, LegHit, Recall, bare
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.stages import (
    FusionOptions,
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


def doc(doc_id: str) -> Document:
    return Document(doc_id, f"text of {doc_id}", f"title {doc_id}")


def test_interpolation_mixes_the_fused_score_not_the_fused_rank() -> None:
    # Fused scores 10, 1, 0.9 (a far ahead); rerank scores 0, 1, 3 over the head of 3.
    # z(fused) = (1.4142, -0.6954, -0.7189); z(rerank) = (-1.0690, -0.2673, 1.3363).
    # w = 0.4: a = 0.4 * -1.0690 + 0.6 * 1.4142 = 0.4209; b = -0.5241; c = 0.1032  ->  a, c, b.
    # Mixing fused *ranks* instead (z = 1.2247, 0, -1.2247) would give a 0.3072, b -0.1069, c -0.2003:
    # a, b, c.
    first = [("a", 10.0), ("b", 1.0), ("c", 0.9), ("d", 0.1)]
    order, final = rerank_order(first, {"a": 0.0, "b": 1.0, "c": 3.0}, 3, 0.4)
    assert order == ["a", "c", "b", "d"]  # d, below the head, keeps its place
    assert final == pytest.approx({"a": 0.4209, "b": -0.5241, "c": 0.1032}, abs=1e-4)


def test_weight_one_is_the_rerank_order_and_zero_the_first_stage() -> None:
    first = [("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5)]
    scores = {"a": 0.0, "b": 1.0, "c": 2.0}
    assert rerank_order(first, scores, 3, 1.0) == (["c", "b", "a", "d"], scores)
    assert rerank_order(first, scores, 3, 0.0)[0] == ["a", "b", "c", "d"]
    # w = 0.5: z(rerank) = -z(fused) here, every mix is 0, and ties keep the first-stage order.
    order, final = rerank_order(first, scores, 3, 0.5)
    assert order == ["a", "b", "c", "d"] and final == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.0})
    # w = 0.75: a = 0.75 * -1.2247 + 0.25 * 1.2247 = -0.6124, b = 0, c = 0.6124.
    order, final = rerank_order(first, scores, 3, 0.75)
    assert order == ["c", "b", "a", "d"]
    assert final["c"] == pytest.approx(0.5 * math.sqrt(1.5), abs=1e-9)


def test_rerank_ties_keep_the_first_stage_order() -> None:
    first = [("z", 5.0), ("y", 4.0), ("x", 3.0)]
    assert rerank_order(first, {"z": 1.0, "y": 2.0, "x": 2.0}, 3, 1.0)[0] == ["y", "x", "z"]


def test_the_weight_comes_from_the_setting_then_the_model() -> None:
    assert rerank_weight(None, None) == 1.0
    assert rerank_weight(None, 0.4) == 0.4  # the model's tuned weight, as the worker's reply carries it
    assert rerank_weight(0.9, 0.4) == 0.9  # RERANK_INTERPOLATION overrides
    assert rerank_weight(0.0, 0.4) == 0.0  # and 0 is a value, not "unset"


def test_fuse_recall_keeps_each_legs_rank_and_score() -> None:
    recall = Recall(
        bm25=[LegHit(doc("a"), 9.0), LegHit(doc("b"), 3.0)],
        knn=[LegHit(doc("c"), 0.9), LegHit(doc("a"), 0.5)],
    )
    # RRF, k = 1: a = 1/2 + 1/3 = 0.8333, c = 1/2, b = 1/3.
    pool = fuse_recall(recall, FusionOptions("rrf", rrf_k=1))
    assert [(e.id, e.fused_rank) for e in pool] == [("a", 1), ("c", 2), ("b", 3)]
    assert pool[0].fused_score == pytest.approx(1 / 2 + 1 / 3)
    assert (pool[0].bm25, pool[0].vector) == ((1, 9.0), (2, 0.5))
    assert (pool[1].bm25, pool[1].vector) == ((None, None), (1, 0.9))
    assert (pool[2].bm25, pool[2].vector) == ((2, 3.0), (None, None))  # b: BM25 only
    assert first_stage_ranking(pool) == [(e.id, e.fused_score) for e in pool]
    # min-max with BM25 weight 0.75: a = 0.75 * 1 + 0.25 * 0 = 0.75, c = 0.25, b = 0.
    minmax = fuse_recall(recall, FusionOptions("minmax", bm25_weight=0.75))
    assert [(e.id, round(e.fused_score, 6)) for e in minmax] == [("a", 0.75), ("c", 0.25), ("b", 0.0)]


def test_the_head_is_the_top_m_as_the_reranker_reads_it() -> None:
    pool = pool_from_server([HybridHit(doc(i), 1.0 / n, None, 0.5) for n, i in enumerate("abc", start=1)])
    assert [(e.id, e.fused_rank) for e in pool] == [("a", 1), ("b", 2), ("c", 3)]
    assert (pool[0].bm25, pool[0].vector, pool[1].fused_score) == ((None, None), (None, 0.5), 0.5)
    head = rerank_head(pool, 2)
    assert [(c.id, c.text) for c in head] == [("a", doc("a").full_text), ("b", doc("b").full_text)]


def test_the_bm25_pool_is_the_bm25_leg_with_its_raw_scores() -> None:
    pool = bm25_pool([LegHit(doc("a"), 7.5), LegHit(doc("b"), 2.0)])
    assert [(e.id, e.fused_score, e.fused_rank, e.bm25, e.vector) for e in pool] == [
        ("a", 7.5, 1, (1, 7.5), (None, None)),
        ("b", 2.0, 2, (2, 2.0), (None, None)),
    ]
    assert bm25_pool([]) == []


def test_texts_are_fetched_for_the_head_and_the_page_alone_each_once() -> None:
    pool = bm25_pool([LegHit(bare(i), 10.0 - n) for n, i in enumerate("abcdefg")])
    assert shown_ids(pool, 3, 0, 2) == ["a", "b", "c"]  # the first page lies within the head
    assert shown_ids(pool, 3, 2, 3) == ["a", "b", "c", "d", "e"]  # a page across the head's end
    assert shown_ids(pool, 2, 5, 10) == ["a", "b", "f", "g"]  # a page below it; c, d, e never fetched
    assert shown_ids(pool, 0, 0, 2) == ["a", "b"]  # not reranked: the page alone
    filled = with_documents(pool, {"b": doc("b"), "f": doc("f")})
    assert [e.document for e in filled] == [bare("a"), doc("b"), *map(bare, "cde"), doc("f"), bare("g")]
    assert [(e.fused_score, e.fused_rank, e.bm25) for e in filled] == [
        (e.fused_score, e.fused_rank, e.bm25) for e in pool
    ]

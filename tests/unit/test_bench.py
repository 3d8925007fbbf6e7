from __future__ import annotations

import pytest

from hybrid_rerank.connector.lab.bench import (
    candidate_sets,
    in_fresh_process,
    latency_summary,
    peak_rss_mib,
)
from hybrid_rerank.connector.lab.bench_stack import top_k_overlap
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir


def test_latency_summary_percentiles() -> None:
    summary = latency_summary([float(x) for x in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["n"] == 100


def test_latency_summary_of_unsorted_samples_by_hand() -> None:
    # sorted 10 20 30 40; p95 sits at 0.95 * (4 - 1) = 2.85: 30 + 0.85 * (40 - 30)
    assert latency_summary([40.0, 10.0, 30.0, 20.0]) == pytest.approx(
        {"p50": 25.0, "p95": 38.5, "mean": 25.0, "n": 4.0}
    )
    assert latency_summary([7.0]) == pytest.approx({"p50": 7.0, "p95": 7.0, "mean": 7.0, "n": 1.0})


def test_candidate_sets_cycle_queries_and_take_bm25_top_depth() -> None:
    sets = candidate_sets(demo_data_dir(), n_queries=40, depth=7)
    assert len(sets) == 40
    assert all(len(candidates) == 7 for _, candidates in sets)
    assert sets[0][0] == sets[32][0]  # the demo has 32 queries: the 33rd is the first again
    query, candidates = sets[1]
    assert "steak" in query and any(c.id.startswith("cook-") for c in candidates)
    benchmark = load_beir(demo_data_dir())
    queries = list(benchmark.queries.values())
    assert [q for q, _ in sets] == [queries[i % 32] for i in range(40)]  # every query, in file order
    texts = {d.id: d.full_text for d in benchmark.documents}
    deeper = candidate_sets(demo_data_dir(), n_queries=32, depth=20)
    for (query, top7), (same, top20) in zip(sets, deeper, strict=False):
        assert query == same
        assert len({c.id for c in top7}) == 7 and all(c.text == texts[c.id] for c in top7)
        assert [c.id for c in top20[:7]] == [c.id for c in top7]  # one ranking, cut at the depth


def test_a_spawned_process_reports_its_own_peak_rss_not_its_parents() -> None:
    # ru_maxrss survives fork and exec on Linux: a child of this (now large) process would report at least
    # the 300 MB below. Each variant of a bench must report only its own peak.
    block = bytearray(300 * 1024 * 1024)
    block[::4096] = b"\1" * len(range(0, len(block), 4096))  # touch every page: resident, not just mapped
    parent = peak_rss_mib()
    child = in_fresh_process(peak_rss_mib)
    assert parent > 300
    assert 0 < child < parent - 250, (child, parent)
    del block


def test_top_k_overlap_by_hand() -> None:
    # query 1: {a, b} of the reference's {a, c} top 2 -> 1/2; query 2: the same set in another order -> 2/2
    ours = [["a", "b", "z"], ["d", "e"]]
    reference = [["a", "c", "b"], ["e", "d", "a"]]
    assert top_k_overlap(ours, reference, 2) == pytest.approx((0.5 + 1.0) / 2)
    # a short list counts its missing places as misses: 1 of 3
    assert top_k_overlap([["a"]], [["a", "b", "c"]], 3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same, non-zero number"):
        top_k_overlap([["a"]], [], 1)

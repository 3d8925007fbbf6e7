from __future__ import annotations

import pytest

from hybrid_rerank.connector.lab.bench import candidate_sets, latency_summary
from hybrid_rerank.connector.lab.demo import demo_data_dir


def test_latency_summary_percentiles() -> None:
    summary = latency_summary([float(x) for x in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["n"] == 100


def test_candidate_sets_cycle_queries_and_take_bm25_top_depth() -> None:
    sets = candidate_sets(demo_data_dir(), n_queries=40, depth=7)
    assert len(sets) == 40
    assert all(len(candidates) == 7 for _, candidates in sets)
    assert sets[0][0] == sets[32][0]  # the demo has 32 queries: the 33rd is the first again
    query, candidates = sets[1]
    assert "steak" in query and any(c.id.startswith("cook-") for c in candidates)

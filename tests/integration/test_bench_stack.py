"""`bench search` and `bench index` against a real OpenSearch node, on the demo corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_rerank.connector.lab.bench_stack import (
    plot_index_bench,
    plot_search_bench,
    run_index_bench,
    run_search_bench,
)
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.settings import load_settings

pytestmark = pytest.mark.integration


def test_bench_search_times_both_backends_against_bm25_only(opensearch_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", opensearch_url=opensearch_url, recall_depth=20, rerank_depth=10
    )
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=lambda _: None)
    assert set(report["backends"]) == {"embedded", "opensearch"}
    for stages in report["backends"].values():
        assert stages["bm25_only"]["n"] == 4 and stages["hybrid_recall"]["n"] == 4
        assert stages["hybrid_vs_bm25_only"]["p50"] > 0
    plot_search_bench(report, tmp_path / "search.png")


def test_bench_index_writes_the_same_documents_both_ways_and_cleans_up(
    opensearch_url: str, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", opensearch_url=opensearch_url)
    report = run_index_bench(settings, demo_data_dir(), n_docs=40, rounds=1, log=lambda _: None)
    assert (
        report["documents"] == 40
        and report["ours_docs_per_s"] > 0
        and report["raw_streaming_bulk_docs_per_s"] > 0
    )
    plot_index_bench(report, tmp_path / "index.png")
    from opensearchpy import OpenSearch

    left = OpenSearch(opensearch_url).indices.get(index="bench-*", ignore_unavailable=True)
    assert not left  # both benchmark indexes were removed

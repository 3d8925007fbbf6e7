"""`bench search` and `bench index` against a real OpenSearch node, on the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.lab.bench_stack import STAGES, run_index_bench, run_search_bench
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.settings import load_settings

pytestmark = pytest.mark.integration

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_bench_search_times_both_backends_against_bm25_only(opensearch_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", opensearch_url=opensearch_url, recall_depth=20, rerank_depth=10
    )
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=lambda _: None)
    assert set(report.backends) == {"embedded", "opensearch"}
    for timings in report.backends.values():
        assert list(timings.stages) == list(STAGES)
        assert timings.stages["bm25_only"]["n"] == 4 and timings.stages["hybrid_recall"]["n"] == 4
        assert timings.hybrid_vs_bm25_only["p50"] > 0
    published = json.loads((RESULTS / "bench-search.json").read_text(encoding="utf-8"))
    written = report.to_json()
    assert written["backends"]["opensearch"].keys() == published["backends"]["opensearch"].keys()
    report.plot(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 0


def test_bench_index_writes_the_same_documents_both_ways_and_cleans_up(
    opensearch_url: str, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", opensearch_url=opensearch_url)
    report = run_index_bench(settings, demo_data_dir(), n_docs=40, rounds=1, log=lambda _: None)
    assert report.documents == 40 and report.ours_docs_per_s > 0 and report.raw_docs_per_s > 0
    published = json.loads((RESULTS / "bench-index.json").read_text(encoding="utf-8"))
    assert list(report.to_json()) == list(published)
    report.plot(tmp_path / "index.png")
    from opensearchpy import OpenSearch

    left = OpenSearch(opensearch_url).indices.get(index="bench-*", ignore_unavailable=True)
    assert not left  # both benchmark indexes were removed

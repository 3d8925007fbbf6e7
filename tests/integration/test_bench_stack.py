"""`bench search` and `bench index` against a real OpenSearch node, on the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from hybrid_rerank.connector import factory
from hybrid_rerank.connector.lab.bench_stack import (
    RANKINGS,
    STAGES,
    SearchBenchReport,
    run_index_bench,
    run_search_bench,
)
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.settings import Settings, load_settings

pytestmark = pytest.mark.integration

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def test_bench_search_times_both_backends_against_bm25_only(opensearch_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", opensearch_url=opensearch_url, recall_depth=20, rerank_depth=10
    )
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=lambda _: None)
    assert set(report.backends) == {"embedded", "opensearch"}
    for name, timings in report.backends.items():
        assert (timings.queries, timings.recall_depth) == (4, 20), name
        assert list(timings.stages) == list(STAGES), name
        for stage, summary in timings.stages.items():
            assert summary["n"] == 4, (name, stage)  # one sample per query for every stage
            assert 0 <= summary["p50"] <= summary["p95"], (name, stage)
        for quantile in ("p50", "p95"):
            assert timings.hybrid_vs_bm25_only[quantile] == pytest.approx(
                timings.stages["hybrid_recall"][quantile] / timings.stages["bm25_only"][quantile]
            ), (name, quantile)
            assert timings.hybrid_vs_bm25_lean[quantile] == pytest.approx(
                timings.stages["hybrid_recall"][quantile] / timings.stages["bm25_lean"][quantile]
            ), (name, quantile)
        assert (timings.settings["recall_depth"], timings.settings["rerank_depth"]) == (20, 10), name
    _check_overlap(report, "opensearch")
    published = json.loads((RESULTS / "bench-search.json").read_text(encoding="utf-8"))
    written = report.to_json()
    assert written["backends"]["opensearch"].keys() == published["backends"]["opensearch"].keys()
    for name, timings in report.backends.items():
        assert written["backends"][name]["hybrid_vs_bm25_only"] == timings.hybrid_vs_bm25_only
        assert written["backends"][name]["queries"] == 4
    report.plot(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 0


def _check_overlap(report: SearchBenchReport, engine: str) -> None:
    assert report.backends["embedded"].overlap_with_embedded == {}
    overlap = report.backends[engine].overlap_with_embedded
    assert list(overlap) == list(RANKINGS)
    assert all(0.0 <= share <= 1.0 for share in overlap.values()), overlap
    # the same 4 queries over the same 12-document corpus: the k-NN legs use the same vectors
    assert overlap["knn"] >= 0.9, overlap


def test_bench_search_covers_elasticsearch_with_its_overlap(elasticsearch_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data", elasticsearch_url=elasticsearch_url, recall_depth=20, rerank_depth=10
    )
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=lambda _: None)
    assert list(report.backends) == ["embedded", "elasticsearch"]
    assert report.backends["elasticsearch"].stages["hybrid_recall"]["n"] == 4
    _check_overlap(report, "elasticsearch")
    published = json.loads((RESULTS / "bench-search-elasticsearch.json").read_text(encoding="utf-8"))
    assert report.to_json()["backends"].keys() == published["backends"].keys()


def test_bench_index_writes_the_same_documents_both_ways_and_cleans_up(
    opensearch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each index the bench writes is read back just before the bench deletes it: both hold the same 40
    documents."""
    held: dict[str, list[str]] = {}
    real_client = factory.opensearch_client

    def recording_client(settings: Settings) -> OpenSearch:
        client = real_client(settings)
        delete = client.indices.delete

        def read_then_delete(*args: Any, **kwargs: Any) -> Any:
            index = kwargs["index"]
            client.indices.refresh(index=index)
            found = client.search(index=index, body={"size": 1000, "_source": False})["hits"]["hits"]
            held[index] = sorted(hit["_id"] for hit in found)
            return delete(*args, **kwargs)

        monkeypatch.setattr(client.indices, "delete", read_then_delete)
        return client

    monkeypatch.setattr(factory, "opensearch_client", recording_client)
    settings = load_settings(data_dir=tmp_path / "data", opensearch_url=opensearch_url)
    report = run_index_bench(settings, demo_data_dir(), n_docs=40, rounds=1, log=lambda _: None)
    expected = sorted(d.id for d in load_beir(demo_data_dir()).documents[:40])
    assert len(held) == 2 and list(held.values()) == [expected, expected]  # raw first, then ours
    assert [index.split("-")[1] for index in held] == ["raw", "ours"]
    assert report.documents == 40 and len(report.ours_seconds) == len(report.raw_seconds) == 1
    assert report.ours_docs_per_s == pytest.approx(40 / report.ours_seconds[0])
    assert report.raw_docs_per_s == pytest.approx(40 / report.raw_seconds[0])
    assert report.ratio == pytest.approx(report.ours_docs_per_s / report.raw_docs_per_s)
    published = json.loads((RESULTS / "bench-index.json").read_text(encoding="utf-8"))
    written = report.to_json()
    assert list(written) == list(published)
    assert (written["documents"], written["rounds"], written["ratio"]) == (40, 1, report.ratio)
    assert written["ours_seconds"] == list(report.ours_seconds)
    report.plot(tmp_path / "index.png")

    left = OpenSearch(opensearch_url).indices.get(index="bench-raw-*,bench-ours-*", ignore_unavailable=True)
    assert not left  # both benchmark indexes were removed

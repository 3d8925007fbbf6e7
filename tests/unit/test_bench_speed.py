"""The speed benchmarks run end to end on small inputs (the figures themselves come from CLI runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.lab.bench_embed import run_embed_bench
from hybrid_rerank.connector.lab.bench_rerank import (
    Variant,
    Workload,
    rerank_quality,
    run_rerank_bench,
)
from hybrid_rerank.connector.lab.bench_stack import run_search_bench
from hybrid_rerank.connector.lab.bench_tradeoff import run_tradeoff
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def published(name: str) -> dict[str, object]:
    """A report the README cites: a new run must write the same keys."""
    loaded: dict[str, object] = json.loads((RESULTS / name).read_text(encoding="utf-8"))
    return loaded


def row_keys(report: dict[str, object], key: str) -> set[str]:
    rows = report[key]
    assert isinstance(rows, list) and rows
    return set(rows[0])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", recall_depth=20, rerank_depth=5)


def test_rerank_quality_scores_the_reranked_head_only() -> None:
    workload = Workload(
        ["q"], ["query"], [[("x", "", 3.0), ("rel", "", 2.0), ("y", "", 1.0)]], {"q": {"rel": 1}}
    )
    good = rerank_quality(workload, [[0.0, 9.0, 0.0]], quality_depth=3, weight=1.0)
    assert good["rerank"] == pytest.approx(1.0) and good["first_stage"] < 1.0
    shallow = rerank_quality(workload, [[0.0, 9.0, 0.0]], quality_depth=1, weight=1.0)
    assert shallow["rerank"] == pytest.approx(shallow["first_stage"])  # "rel" was outside the head


def test_bench_rerank_runs_the_baseline_and_ours_on_the_same_pairs(
    settings: Settings, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    variants = [
        Variant("baseline", "baseline", 64),
        Variant("ours torch fp32", "torch", 64),
        Variant("ours onnx int8", "onnx-int8", 64),
    ]
    report = run_rerank_bench(
        settings,
        demo_data_dir(),
        str(tiny_cross_encoder_dir),
        trained_model=True,
        n_queries=3,
        depth=6,
        quality_depth=4,
        variants=variants,
        log=lambda _: None,
    )
    assert report.pairs == 18
    rows = report.results
    assert [r.variant.backend for r in rows] == ["baseline", "torch", "onnx-int8"]
    assert rows[0].speedup == pytest.approx(1.0)
    assert rows[2].speedup == pytest.approx(rows[2].pairs_per_s / rows[0].pairs_per_s)
    # The same model on the same pairs: torch fp32 through our batching gives the baseline's scores.
    assert rows[1].max_score_diff < 1e-4
    assert all(r.pairs_per_s > 0 and r.peak_rss_mib > 0 for r in rows)
    written = report.to_json()
    docs = published("bench-rerank.json")
    assert set(written) == set(docs) and row_keys(written, "results") == row_keys(docs, "results")
    assert written["results"][1]["name"] == "ours torch fp32" and written["trained_model"] is True
    report.plot(tmp_path / "rerank.png")
    assert (tmp_path / "rerank.png").stat().st_size > 0


def test_bench_tradeoff_has_a_point_per_depth_and_length(
    settings: Settings, tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    report = run_tradeoff(
        settings,
        demo_data_dir(),
        str(tiny_cross_encoder_dir),
        n_queries=2,
        depths=[2, 4],
        max_lengths=[32, 64],
        backend="torch",
        log=lambda _: None,
    )
    assert [(p.max_length, p.depth) for p in report.points] == [(32, 2), (32, 4), (64, 2), (64, 4)]
    written = report.to_json()
    docs = published("bench-tradeoff.json")
    assert set(written) == set(docs) and row_keys(written, "points") == row_keys(docs, "points")
    report.plot(tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_bench_embed_compares_against_plain_encode(settings: Settings, tmp_path: Path) -> None:
    report = run_embed_bench(
        settings, demo_data_dir(), n_docs=12, full=False, backends=["onnx-int8"], log=lambda _: None
    )
    rows = report.results
    assert [r.backend for r in rows] == ["baseline", "onnx-int8"]
    assert rows[0].cosine_to_baseline["min"] == pytest.approx(1.0, abs=1e-5)
    assert 0.98 < rows[1].cosine_to_baseline["mean"] <= 1.0 + 1e-6
    written = report.to_json()
    docs = published("bench-embed.json")
    assert set(written) == set(docs)
    # Without --full there is no dense nDCG, and the key is left out rather than null.
    assert row_keys(written, "results") == row_keys(docs, "results") - {"dense_ndcg@10"}
    report.plot(tmp_path / "embed.png")
    assert (tmp_path / "embed.png").stat().st_size > 0


def test_bench_search_times_the_embedded_backend_against_bm25_only(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", opensearch_url=None, recall_depth=20, rerank_depth=5)
    said: list[str] = []
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=said.append)
    assert list(report.backends) == ["embedded"] and "OPENSEARCH_URL is not set" in said[0]
    timings = report.backends["embedded"]
    assert timings.stages["bm25_only"]["n"] == 4 and timings.stages["hybrid_recall"]["n"] == 4
    assert timings.hybrid_vs_bm25_only["p50"] == pytest.approx(
        timings.stages["hybrid_recall"]["p50"] / timings.stages["bm25_only"]["p50"]
    )
    written = report.to_json()
    docs = published("bench-search.json")
    backends = docs["backends"]
    assert isinstance(backends, dict)
    assert set(written) == set(docs) and list(written["backends"]["embedded"]) == list(backends["embedded"])
    report.plot(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 0

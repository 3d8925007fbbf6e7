"""The speed benchmarks run end to end on small inputs (the figures themselves come from CLI runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_rerank.connector.lab.bench_embed import plot_embed_bench, run_embed_bench
from hybrid_rerank.connector.lab.bench_rerank import (
    Variant,
    Workload,
    plot_rerank_bench,
    plot_tradeoff,
    rerank_quality,
    run_rerank_bench,
    run_tradeoff,
)
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.settings import Settings, load_settings


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
        n_queries=3,
        depth=6,
        quality_depth=4,
        variants=variants,
        log=lambda _: None,
    )
    assert report["pairs"] == 18
    rows = report["results"]
    assert [r["backend"] for r in rows] == ["baseline", "torch", "onnx-int8"]
    assert rows[0]["speedup"] == pytest.approx(1.0)
    # The same model on the same pairs: torch fp32 through our batching gives the baseline's scores.
    assert rows[1]["max_score_diff"] < 1e-4
    assert all(r["pairs_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
    plot_rerank_bench(report, tmp_path / "rerank.png")
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
    assert [(p["max_length"], p["depth"]) for p in report["points"]] == [(32, 2), (32, 4), (64, 2), (64, 4)]
    plot_tradeoff(report, tmp_path / "tradeoff.png")


def test_bench_embed_compares_against_plain_encode(settings: Settings, tmp_path: Path) -> None:
    report = run_embed_bench(
        settings, demo_data_dir(), n_docs=12, full=False, backends=["onnx-int8"], log=lambda _: None
    )
    rows = report["results"]
    assert [r["backend"] for r in rows] == ["baseline", "onnx-int8"]
    assert rows[0]["cosine_to_baseline"]["min"] == pytest.approx(1.0, abs=1e-5)
    assert 0.98 < rows[1]["cosine_to_baseline"]["mean"] <= 1.0 + 1e-6
    plot_embed_bench(report, tmp_path / "embed.png")

"""The speed benchmarks run end to end on small inputs (the figures themselves come from CLI runs)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from hybrid_rerank.connector.lab import bench, bench_embed, bench_rerank, bench_tradeoff
from hybrid_rerank.connector.lab.bench_embed import run_embed_bench
from hybrid_rerank.connector.lab.bench_rerank import (
    Variant,
    Workload,
    rerank_quality,
    run_rerank_bench,
)
from hybrid_rerank.connector.lab.bench_stack import STAGES, run_search_bench
from hybrid_rerank.connector.lab.bench_tradeoff import run_tradeoff
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir
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


class Recorder:
    """Wraps a bench's measuring function: every call's arguments and what it measured, to check the report's
    figures against the samples they came from."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any) -> Any:
        measured = self.real(*args)
        self.calls.append((args, measured))
        return measured


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks, as numpy's default."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def pairs_of(workload: Workload) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (q, [(d, t) for d, t, _ in c]) for q, c in zip(workload.queries, workload.candidates, strict=True)
    ]


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
    settings: Settings, tiny_cross_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(bench_rerank.measure_in_fresh_process)
    monkeypatch.setattr(bench_rerank, "measure_in_fresh_process", recorder)
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
    # Every variant measured exactly the same 18 (query, document) pairs.
    assert [args[0] for args, _ in recorder.calls] == variants
    workloads = [pairs_of(args[2]) for args, _ in recorder.calls]
    assert workloads[0] == workloads[1] == workloads[2]
    assert len(workloads[0]) == 3 and all(len(candidates) == 6 for _, candidates in workloads[0])
    samples = [measured for _, measured in recorder.calls]
    assert all(len(m["latency_ms"]) == 3 and [len(s) for s in m["scores"]] == [6, 6, 6] for m in samples)
    baseline_scores = [v for per_query in samples[0]["scores"] for v in per_query]
    for row, measured in zip(rows, samples, strict=True):
        latencies = measured["latency_ms"]
        assert row.pairs_per_s == pytest.approx(18 / (sum(latencies) / 1000.0))
        assert row.latency_ms == pytest.approx(
            {
                "p50": percentile(latencies, 0.5),
                "p95": percentile(latencies, 0.95),
                "mean": statistics.fmean(latencies),
                "n": 3.0,
            }
        )
        assert row.speedup == pytest.approx(row.pairs_per_s / rows[0].pairs_per_s)
        assert row.ndcg_delta == pytest.approx(row.ndcg["rerank"] - rows[0].ndcg["rerank"])
        assert row.ndcg["first_stage"] == rows[0].ndcg["first_stage"]  # the same candidates, same order
        flat = [v for per_query in measured["scores"] for v in per_query]
        assert row.max_score_diff == pytest.approx(
            max(abs(a - b) for a, b in zip(flat, baseline_scores, strict=True)), abs=1e-9
        )
        assert row.peak_rss_mib == measured["peak_rss_mib"] > 0
    assert rows[0].speedup == 1.0 and rows[0].max_score_diff == 0.0 and rows[0].ndcg_delta == 0.0
    assert rows[0].score_correlation == pytest.approx(1.0)
    # The same model on the same pairs: torch fp32 through our batching gives the baseline's scores.
    assert rows[1].max_score_diff < 1e-4 and rows[1].score_correlation > 0.9999
    written = report.to_json()
    docs = published("bench-rerank.json")
    assert set(written) == set(docs) and row_keys(written, "results") == row_keys(docs, "results")
    assert written["results"][1]["name"] == "ours torch fp32" and written["trained_model"] is True
    assert (written["pairs"], written["queries"], written["candidates_per_query"]) == (18, 3, 6)
    assert written["quality_depth"] == 4 and written["interpolation_weight"] == report.interpolation_weight
    assert [r["speedup"] for r in written["results"]] == [r.speedup for r in rows]
    report.plot(tmp_path / "rerank.png")
    assert (tmp_path / "rerank.png").stat().st_size > 0


def test_bench_tradeoff_has_a_point_per_depth_and_length(
    settings: Settings, tiny_cross_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(bench_rerank.measure_in_fresh_process)  # which bench_tradeoff imported
    monkeypatch.setattr(bench_tradeoff, "measure_in_fresh_process", recorder)
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
    assert len(recorder.calls) == 4 and report.queries == 2
    deepest = pairs_of(recorder.calls[1][0][2])  # (32, 4): the whole workload
    for point, (args, measured) in zip(report.points, recorder.calls, strict=True):
        variant, workload = args[0], args[2]
        assert (variant.backend, variant.max_length) == ("torch", point.max_length)
        # each depth measures the first `depth` candidates of the same per-query lists
        assert pairs_of(workload) == [(q, c[: point.depth]) for q, c in deepest]
        latencies = measured["latency_ms"]
        assert len(latencies) == 2
        assert point.ms_per_query == pytest.approx(statistics.fmean(latencies))
        assert point.p95_ms == pytest.approx(percentile(latencies, 0.95))
    by_depth = {p.depth: p.ndcg["first_stage"] for p in report.points if p.max_length == 32}
    assert all(p.ndcg["first_stage"] == by_depth[p.depth] for p in report.points)  # scores do not move it
    written = report.to_json()
    docs = published("bench-tradeoff.json")
    assert set(written) == set(docs) and row_keys(written, "points") == row_keys(docs, "points")
    assert written["queries"] == 2 and len(written["points"]) == 4
    assert written["first_stage_ndcg@10"] == report.first_stage_ndcg
    report.plot(tmp_path / "tradeoff.png")
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_bench_embed_compares_against_plain_encode(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(bench.in_fresh_process)  # which bench_embed imported
    monkeypatch.setattr(bench_embed, "in_fresh_process", recorder)
    report = run_embed_bench(
        settings, demo_data_dir(), n_docs=12, full=False, backends=["onnx-int8"], log=lambda _: None
    )
    rows = report.results
    assert [r.backend for r in rows] == ["baseline", "onnx-int8"]
    texts = [d.full_text for d in load_beir(demo_data_dir()).documents[:12]]
    assert [args[1:] for args, _ in recorder.calls] == [
        ("baseline", settings, texts),
        ("onnx-int8", settings, texts),
    ]
    assert report.documents == 12 and report.mean_chars == pytest.approx(sum(map(len, texts)) / 12)
    for row, (_, measured) in zip(rows, recorder.calls, strict=True):
        assert row.seconds == measured["seconds"] and row.docs_per_s == pytest.approx(
            12 / measured["seconds"]
        )
        assert row.speedup == pytest.approx(row.docs_per_s / rows[0].docs_per_s)
        assert measured["vectors"].shape == (12, 384)
        cosines = [
            float(a @ b) for a, b in zip(measured["vectors"], recorder.calls[0][1]["vectors"], strict=True)
        ]
        assert row.cosine_to_baseline == pytest.approx(
            {"mean": statistics.fmean(cosines), "min": min(cosines)}, abs=1e-6
        )
    assert rows[0].cosine_to_baseline["min"] == pytest.approx(1.0, abs=1e-5) and rows[0].speedup == 1.0
    assert 0.98 < rows[1].cosine_to_baseline["mean"] <= 1.0 + 1e-6
    written = report.to_json()
    docs = published("bench-embed.json")
    assert set(written) == set(docs)
    # Without --full there is no dense nDCG, and the key is left out rather than null.
    assert row_keys(written, "results") == row_keys(docs, "results") - {"dense_ndcg@10"}
    assert written["documents"] == 12 and [r["speedup"] for r in written["results"]] == [1.0, rows[1].speedup]
    report.plot(tmp_path / "embed.png")
    assert (tmp_path / "embed.png").stat().st_size > 0


def test_bench_search_times_the_embedded_backend_against_bm25_only(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", opensearch_url=None, recall_depth=20, rerank_depth=5)
    said: list[str] = []
    report = run_search_bench(settings, demo_data_dir(), n_queries=4, log=said.append)
    assert list(report.backends) == ["embedded"]
    assert "neither OPENSEARCH_URL nor ELASTICSEARCH_URL is set" in said[0]
    assert report.backends["embedded"].overlap_with_embedded == {}
    timings = report.backends["embedded"]
    assert (timings.queries, timings.recall_depth) == (4, 20)
    assert list(timings.stages) == list(STAGES)
    for stage, summary in timings.stages.items():
        assert summary["n"] == 4, stage  # one sample per query for every stage
        assert 0 <= summary["p50"] <= summary["p95"], stage
    for quantile in ("p50", "p95"):
        assert timings.hybrid_vs_bm25_only[quantile] == pytest.approx(
            timings.stages["hybrid_recall"][quantile] / timings.stages["bm25_only"][quantile]
        )
    written = report.to_json()
    docs = published("bench-search.json")
    backends = docs["backends"]
    assert isinstance(backends, dict)
    assert set(written) == set(docs) and list(written["backends"]["embedded"]) == list(backends["embedded"])
    assert written["backends"]["embedded"]["queries"] == 4
    assert written["backends"]["embedded"]["hybrid_vs_bm25_only"] == timings.hybrid_vs_bm25_only
    report.plot(tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 0

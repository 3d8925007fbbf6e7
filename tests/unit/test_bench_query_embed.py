"""The query half of `bench embed`: each query variant timed in turn, ratios, cosines, nDCG, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.lab.bench_embed import EmbedBenchReport, EmbedRow
from hybrid_rerank.connector.lab.bench_query_embed import (
    QUERY_VARIANTS,
    query_embedders,
    query_report,
    time_embedders,
)
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.settings import load_settings

MODEL = "all-MiniLM-L6-v2"


def test_bench_query_half_times_each_variant_in_turn(embedder: Embedder, tmp_path: Path) -> None:
    settings = load_settings(embedding_backend="torch", data_dir=tmp_path)
    sample = list(load_beir(demo_data_dir()).queries.values())[:4]
    embedders = query_embedders(settings)
    assert [e.query_backend for e in embedders] == [backend for _, backend in QUERY_VARIANTS]
    embedders[0]._model = embedder.model  # the session's loaded model: what `time_queries` loads itself
    measured = time_embedders(embedders, sample)
    variants = measured["variants"]
    assert [len(v["ms"]) for v in variants] == [len(sample)] * len(QUERY_VARIANTS)
    assert variants[0]["runs"] == "torch, like the documents" and "model_int8.onnx" in variants[2]["runs"]
    report = query_report(settings, measured, {"same": 0.6, "onnx": 0.6, "onnx-int8": 0.59}, len(sample))
    baseline_p50 = float(np.percentile(variants[0]["ms"], 50))
    for row, variant in zip(report.results, variants, strict=True):
        assert row.p50_ms == pytest.approx(float(np.percentile(variant["ms"], 50)))
        assert row.ratio_p50 == pytest.approx(row.p50_ms / baseline_p50)
        cosines = np.sum(variant["vectors"] * variants[0]["vectors"], axis=1)
        assert row.cosine_to_baseline == pytest.approx({"mean": cosines.mean(), "min": cosines.min()})
    assert report.results[1].cosine_to_baseline["min"] > 0.9999 and report.results[2].dense_ndcg == 0.59
    assert len(report.load_average) == 6 and report.settings["document_backend"] == "torch"
    documents = EmbedRow("baseline", "baseline", 10.0, 1.0, 100.0, {"mean": 1.0, "min": 1.0}, None, 1.0)
    whole = EmbedBenchReport("machine", MODEL, "demo", 10, 100.0, (documents,), report)
    shown = Console(record=True, width=400)
    shown.print(whole.table(), crop=False)
    text = shown.export_text()
    assert "ours onnx int8, one query" in text and f"x{report.results[2].ratio_p50:.3f}" in text
    written = whole.to_json()["query_embedding"]
    assert [row["dense_ndcg@10"] for row in written["results"]] == [0.6, 0.6, 0.59]
    assert written["default"] == "onnx-int8" and written["queries"] == len(sample)
    whole.plot(tmp_path / "embed.png")
    assert (tmp_path / "embed.png").stat().st_size > 0

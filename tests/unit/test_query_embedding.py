"""The query path's one-query ONNX runner on the real all-MiniLM-L6-v2: its vectors against the document
runner's, the tokens it reads, the setting that chooses it and the fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ConfigurationError, ModelLoadError
from hybrid_rerank.connector.factory import make_embedder
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.query_embedding import encoder_layout
from hybrid_rerank.connector.settings import Settings, load_settings, user_onnx_cache

MODEL = "all-MiniLM-L6-v2"
LONG = "Vitamin D deficiency is associated with a higher risk of hip fractures in older women. " * 30


def texts() -> list[str]:
    """Real queries and documents of the demo corpus, and one past the model's 256-token window."""
    demo = load_beir(demo_data_dir())
    return [*list(demo.queries.values())[:8], *(d.full_text for d in demo.documents[:8]), LONG, "x"]


def query_embedder(backend: str, **options: object) -> Embedder:
    # The user cache the settings default to: one export per machine, shared with every other user of it.
    return Embedder(MODEL, cache_dir=user_onnx_cache(), query_backend=backend, **options)  # type: ignore[arg-type]


def test_one_query_runners_match_the_document_runner(embedder: Embedder) -> None:
    sample = texts()
    documents = embedder.embed_texts(sample)  # the document runner: batched, padded, sorted by length
    fp32, int8 = query_embedder("onnx"), query_embedder("onnx-int8")
    exact = np.stack([fp32.embed_query(text) for text in sample])
    # fp32 through the one-query path is the same function: same tokens (truncation included), same pooling.
    assert np.sum(exact * documents, axis=1).min() > 0.9999
    quantized = int8.embed_queries(sample)
    cosines = np.sum(quantized * documents, axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.98  # the tolerance the README states
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    # Each search ran the runner: the torch model was never loaded, and the width came from the runner.
    assert int8._model is None and fp32._model is None
    assert int8.dimension == 384 and int8._model is None
    assert "model_int8.onnx" in int8.query_description and "model.onnx" in fp32.query_description


def test_the_runner_cuts_long_queries_like_the_tokenizer() -> None:
    runner = query_embedder("onnx-int8").query_runner
    assert runner is not None
    layout = encoder_layout(Embedder(MODEL).source.location)
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(layout.transformer))
    for text in (LONG, "Hello, World: café!", "x"):
        wanted = reference(text, truncation=True, max_length=layout.max_length)["input_ids"]
        assert runner.tokenizer.encode(text).ids == wanted
    assert len(runner.tokenizer.encode(LONG).ids) == layout.max_length == 256


@pytest.mark.parametrize(
    ("setting", "model_file"),
    [("auto", "model_int8.onnx"), ("onnx-int8", "model_int8.onnx"), ("onnx", "model.onnx"), ("same", None)],
)
def test_the_setting_chooses_the_query_runner(
    setting: str, model_file: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDDING_QUERY_BACKEND", setting)
    monkeypatch.setenv("EMBEDDING_QUERY_THREADS", "2")
    chosen = make_embedder(load_settings())
    assert chosen.query_backend == setting and chosen.cache_dir == user_onnx_cache()
    runner = chosen.query_runner
    if model_file is None:
        assert runner is None and chosen.query_description.endswith("like the documents")
    else:
        assert runner is not None and runner.description.startswith(f"onnxruntime {model_file}, 2 thread(s)")


def test_settings_default_to_auto_and_refuse_unknown_runners(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.model_fields["embedding_query_backend"].default == "auto"
    monkeypatch.setenv("EMBEDDING_QUERY_BACKEND", "tensorrt")
    with pytest.raises(ConfigurationError, match="EMBEDDING_QUERY_BACKEND: Input should be 'auto', 'same'"):
        load_settings()
    with pytest.raises(ModelLoadError, match="unknown query embedding backend 'tensorrt'"):
        Embedder(MODEL, query_backend="tensorrt")  # type: ignore[arg-type]


def unsupported_folder(tmp_path: Path) -> Path:
    """A sentence-transformers folder with a Dense projection after pooling, which the export would skip."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return tmp_path


def test_auto_falls_back_to_the_document_runner_and_an_explicit_choice_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = str(unsupported_folder(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert Embedder(folder, query_backend="auto", cache_dir=tmp_path).query_runner is None
    assert "Dense" in caplog.text and "queries are embedded like the documents" in caplog.text
    with pytest.raises(ModelLoadError, match=r"Dense.*Set EMBEDDING_QUERY_BACKEND=same"):
        _ = Embedder(folder, query_backend="onnx-int8", cache_dir=tmp_path).query_runner
    with pytest.raises(ValueError, match="Dense"):
        encoder_layout(folder)  # the document ONNX backends read the same layout, so they refuse it too

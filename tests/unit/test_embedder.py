"""The bi-encoder's backends on the real all-MiniLM-L6-v2, and its query cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ModelLoadError

TEXTS = [
    "The moon shows phases because we see different parts of its sunlit half.",
    "Rest a steak for five minutes after grilling.",
    "Vitamin D deficiency is associated with a higher risk of hip fractures in older women. " * 6,
    "short",
]


def test_onnx_backends_agree_with_sentence_transformers(embedder: Embedder, tmp_path: Path) -> None:
    reference = embedder.embed_texts(TEXTS)
    fp32 = Embedder(embedder.model_name, backend="onnx", cache_dir=tmp_path).embed_texts(TEXTS)
    int8 = Embedder(embedder.model_name, backend="onnx-int8", cache_dir=tmp_path).embed_texts(TEXTS)
    assert fp32.shape == reference.shape == int8.shape
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    assert np.sum(fp32 * reference, axis=1).min() > 0.9999  # same model, same pooling, same truncation
    assert np.sum(int8 * reference, axis=1).min() > 0.98  # int8 weights, per channel: close, not equal


def test_bf16_backend_stays_close(embedder: Embedder) -> None:
    bf16 = Embedder(embedder.model_name, backend="torch-bf16").embed_texts(TEXTS)
    assert np.sum(bf16 * embedder.embed_texts(TEXTS), axis=1).min() > 0.98
    assert Embedder(embedder.model_name, backend="torch-bf16").cache_name != embedder.cache_name


def test_repeated_queries_come_from_the_lru_cache(embedder: Embedder) -> None:
    cached = Embedder(embedder.model_name, query_cache_size=2)
    cached._model = embedder.model  # share the loaded model
    first = cached.embed_query("moon phases")
    first[0] = 42.0  # a caller mutating its vector must not poison the cache
    again = cached.embed_query("moon phases")
    assert again[0] != 42.0 and np.allclose(again, embedder.embed_texts(["moon phases"])[0], atol=1e-6)
    cached.embed_query("steak")
    cached.embed_query("vitamin d")
    assert cached.query_cache_entries == 2  # the oldest was evicted


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="unknown embedding backend"):
        Embedder("all-MiniLM-L6-v2", backend="tpu")  # type: ignore[arg-type]


def test_auto_picks_bf16_only_where_it_runs_natively() -> None:
    from hybrid_rerank.connector.embedder import resolve_embedding_backend
    from hybrid_rerank.workers.runtime.runners import bf16_available

    assert resolve_embedding_backend("auto") == ("torch-bf16" if bf16_available() else "torch")
    assert resolve_embedding_backend("onnx-int8") == "onnx-int8"

"""The ONNX export recipe: eager attention by default, the recipe in the cache key (an export made another
way is never reused), per-channel or per-tensor int8, and the same fp32 scores whatever the attention
graph."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.workers.runtime.models import ONNX_FP32, ONNX_INT8
from hybrid_rerank.workers.runtime.onnx_export import (
    DEFAULT_ATTENTION,
    RECIPE_FILE,
    ExportRecipe,
    cache_entry,
    cached_onnx,
)
from hybrid_rerank.workers.runtime.runners import OnnxRunner
from tests.tiny_models import build_tiny_modernbert_cross_encoder, build_tiny_xlmr_cross_encoder, demo_texts

QUERY = "why does the moon show phases"


def onnx_scores(path: Path, folder: Path) -> np.ndarray:
    """Logits of the exported file for the demo pairs, tokenized by the model's own tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = demo_texts()[:12]
    batch = tokenizer([QUERY] * len(texts), texts, truncation=True, max_length=64, padding=True)
    arrays = {name: np.asarray(values, dtype=np.int64) for name, values in batch.items()}
    return OnnxRunner(path, threads=1)(arrays)[:, 0]


def test_every_field_of_the_recipe_is_in_the_cache_key(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    base = ExportRecipe()
    assert base.attention == DEFAULT_ATTENTION == "eager"
    changes: dict[str, Any] = {
        "head": "encoder",
        "attention": "sdpa",
        "opset": 18,
        "int8": True,
        "cutoff_layer": 1,
    }
    assert set(changes) | {"per_channel"} == {f.name for f in dataclasses.fields(ExportRecipe)}
    entries = {cache_entry(tiny_cross_encoder_dir, tmp_path, base)}
    for field, value in changes.items():
        entries.add(
            cache_entry(tiny_cross_encoder_dir, tmp_path, dataclasses.replace(base, **{field: value}))
        )
    int8 = dataclasses.replace(base, int8=True)
    entries.add(cache_entry(tiny_cross_encoder_dir, tmp_path, dataclasses.replace(int8, per_channel=False)))
    assert len(entries) == len(changes) + 2  # each change, a new entry
    # An fp32 file has no int8 scales: per_channel does not split its entry.
    fp32_per_tensor = dataclasses.replace(base, per_channel=False)
    assert fp32_per_tensor.key == base.key


def test_eager_and_sdpa_exports_are_separate_files_with_the_same_fp32_scores(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    eager = cached_onnx(tiny_cross_encoder_dir, False, tmp_path)
    sdpa = cached_onnx(tiny_cross_encoder_dir, False, tmp_path, attention="sdpa")
    assert eager != sdpa and eager.parent != sdpa.parent
    recorded = json.loads((eager.parent / RECIPE_FILE).read_text(encoding="utf-8"))
    assert recorded["attention"] == "eager" and recorded["quantization"] == "fp32"
    assert onnx_scores(eager, tiny_cross_encoder_dir) == pytest.approx(
        onnx_scores(sdpa, tiny_cross_encoder_dir), abs=1e-5
    )
    assert _attention_ops(eager) != _attention_ops(sdpa)  # really two different graphs


def _attention_ops(path: Path) -> list[str]:
    import onnx

    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})


def test_int8_per_channel_and_per_tensor_are_separate_entries_from_one_fp32_export(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    per_channel = cached_onnx(tiny_cross_encoder_dir, True, tmp_path)
    per_tensor = cached_onnx(tiny_cross_encoder_dir, True, tmp_path, per_channel=False)
    assert per_channel.name == per_tensor.name == ONNX_INT8 and per_channel.parent != per_tensor.parent
    assert len(list(tmp_path.rglob(ONNX_FP32))) == 1  # quantized from the same export
    assert per_channel.read_bytes() != per_tensor.read_bytes()
    recorded = json.loads((per_tensor.parent / RECIPE_FILE).read_text(encoding="utf-8"))
    assert recorded["quantization"] == "int8-per-tensor" and recorded["per_channel"] is False
    stamp = per_channel.stat().st_mtime_ns
    assert cached_onnx(tiny_cross_encoder_dir, True, tmp_path).stat().st_mtime_ns == stamp  # reused


@pytest.mark.parametrize(
    "build", [build_tiny_xlmr_cross_encoder, build_tiny_modernbert_cross_encoder], ids=["xlm-r", "modernbert"]
)
def test_eager_and_sdpa_agree_on_other_architectures(build: Callable[[Path], Path], tmp_path: Path) -> None:
    folder = build(tmp_path / "model")
    eager = cached_onnx(folder, False, tmp_path / "cache")
    sdpa = cached_onnx(folder, False, tmp_path / "cache", attention="sdpa")
    scores = onnx_scores(eager, folder)
    assert scores == pytest.approx(onnx_scores(sdpa, folder), abs=1e-4)
    assert scores.std() > 1e-3  # the scores differ between documents: the comparison means something

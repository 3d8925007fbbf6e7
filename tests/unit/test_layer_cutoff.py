"""RERANK_CUTOFF_LAYER for cross-encoders: the first k layers and the model's own pooler and head, through
torch and ONNX (the cut in the export's cache key), per-layer files for ONNX-only folders, clear errors for a
cut that keeps nothing or everything, and the interpolation weight tuned for the cut layer."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.onnx_export import export_folder
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import build_tiny_bert_cross_encoder, demo_texts

QUERY = "why does the moon show phases"


def scores(scorer: CrossEncoderScorer) -> np.ndarray:
    items = [Candidate(str(i), t) for i, t in enumerate(demo_texts()[:10])]
    return np.array([s.score for s in scorer.score(QUERY, items)])


@pytest.fixture(scope="module")
def two_layer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-layer BERT whose wide random weights spread its scores (so a lost layer shows)."""
    return build_tiny_bert_cross_encoder(tmp_path_factory.mktemp("two-layers") / "model")


@pytest.fixture(scope="module")
def one_layer_dir(two_layer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-layer model's files with a config that says 1 layer: the same weights, the second layer left
    unread."""
    folder = tmp_path_factory.mktemp("one-layer") / "model"
    shutil.copytree(two_layer_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 2
    config["num_hidden_layers"] = 1
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_cut_at_one_of_two_layers_equals_the_one_layer_model(
    two_layer_dir: Path, one_layer_dir: Path, backend: str, tmp_path: Path
) -> None:
    cut = CrossEncoderScorer(
        str(two_layer_dir),
        max_length=48,
        backend=backend,
        cutoff_layer=1,
        cache_dir=tmp_path,  # type: ignore[arg-type]
    )
    reference = CrossEncoderScorer(str(one_layer_dir), max_length=48, backend="torch")
    full = CrossEncoderScorer(str(two_layer_dir), max_length=48, backend="torch")
    assert scores(cut) == pytest.approx(scores(reference), abs=1e-5)
    assert np.abs(scores(cut) - scores(full)).max() > 0.01  # the second layer really is left out
    assert "|layer1" in cut.cache_key


def test_a_cut_that_keeps_no_layer_or_every_layer_is_refused_before_loading(
    two_layer_dir: Path,
) -> None:
    for layer in (0, 2, 5):
        with pytest.raises(ModelLoadError, match=rf"RERANK_CUTOFF_LAYER={layer}.*2 layers.*usable: 1 to 1"):
            CrossEncoderScorer(str(two_layer_dir), backend="torch", cutoff_layer=layer).load()


def test_an_onnx_only_folder_cuts_with_its_per_layer_file_or_says_what_to_do(
    two_layer_dir: Path, one_layer_dir: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    export_folder(two_layer_dir, bare, int8=False)
    with pytest.raises(ModelLoadError, match=r"ships ONNX of all its layers.*model_int8\.L1\.onnx"):
        CrossEncoderScorer(str(bare), max_length=48, cutoff_layer=1).load()
    layered = tmp_path / "layered"
    export_folder(two_layer_dir, layered, int8=False, cutoff_layers=[1])
    assert (layered / "model.L1.onnx").is_file()
    cut = CrossEncoderScorer(str(layered), max_length=48, cutoff_layer=1)
    assert "model.L1.onnx" in cut.load().runner.description
    reference = CrossEncoderScorer(str(one_layer_dir), max_length=48, backend="torch")
    assert scores(cut) == pytest.approx(scores(reference), abs=1e-5)


def test_a_cut_model_takes_the_weight_tuned_for_its_layer_and_an_untrained_one_is_warned_about(
    two_layer_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(two_layer_dir, folder)
    (folder / "hybrid_rerank.json").write_text(json.dumps({"interpolation_weight": 0.4}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="hybrid_rerank.workers"):
        first = CrossEncoderScorer(str(folder), max_length=48, backend="torch", cutoff_layer=1)
        assert first.interpolation_weight == 0.4  # no weight for the layer: the folder's own
        CrossEncoderScorer(str(folder), max_length=48, backend="torch", cutoff_layer=1).load()
    warnings = [r for r in caplog.records if "not trained layerwise" in r.getMessage()]
    assert len(warnings) == 1  # once per folder
    layerwise = {"layers": [1, 2], "interpolation_weights": {"1": 0.25, "2": 0.4}}
    trained = tmp_path / "trained"
    shutil.copytree(folder, trained)
    metadata = {"interpolation_weight": 0.4, "layerwise": layerwise}
    (trained / "hybrid_rerank.json").write_text(json.dumps(metadata), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hybrid_rerank.workers"):
        assert CrossEncoderScorer(str(trained), backend="torch", cutoff_layer=1).interpolation_weight == 0.25
    assert not [r for r in caplog.records if "not trained layerwise" in r.getMessage()]
    assert CrossEncoderScorer(str(trained), backend="torch").interpolation_weight == 0.4  # uncut

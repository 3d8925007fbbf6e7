"""The rerank runners: token-budget batching (pure); torch, ONNX and int8 runners on a tiny real model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.stages import rerank_weight
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.batching import run_batched, token_budget_batches
from hybrid_rerank.workers.runtime.models import ONNX_INT8, interpolation_weight
from hybrid_rerank.workers.runtime.onnx_export import cached_onnx, export_folder
from hybrid_rerank.workers.scorer import CrossEncoderScorer

QUERY = "why does the moon show phases"
TEXTS = [
    "the moon has a phase",
    "grill the steak and rest it",
    "the earth and the sun and the moon in orbit " * 4,
    "salt",
    "heart blood pressure drug exercise sleep diet " * 3,
]


@pytest.mark.parametrize(
    ("lengths", "budget", "max_batch"),
    [([5, 3, 9, 9, 1, 7], 20, 8), ([4] * 10, 16, 3), ([50, 2, 2], 10, 4), ([], 8, 2)],
)
def test_token_budget_batches_cover_each_pair_once_within_the_budget(
    lengths: list[int], budget: int, max_batch: int
) -> None:
    batches = token_budget_batches(lengths, budget, max_batch)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= max_batch
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
    widths = [lengths[i] for i in flat]
    assert widths == sorted(widths, reverse=True)  # longest first, so each batch pads little


def test_token_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        token_budget_batches([1, 2], 0, 4)


class RowSum:
    """Logit = the sum of a row's unmasked ids: any padding or ordering mistake changes it."""

    description = "row sum"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return (batch["input_ids"] * batch["attention_mask"]).sum(axis=1, keepdims=True).astype(np.float32)


def test_run_batched_returns_scores_in_input_order() -> None:
    rows = [{"input_ids": list(range(1, n + 1))} for n in (3, 7, 1, 7, 4)]
    scores = run_batched(RowSum(), rows, token_budget=14, max_batch=3, pad_id=99)
    assert scores.tolist() == [float(sum(r["input_ids"])) for r in rows]


class LastToken:
    """Logit = the id at the last position, where a causal LM reads its answer."""

    description = "last token"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        assert (batch["attention_mask"][:, -1] == 1).all()  # no row ends in padding
        return batch["input_ids"][:, -1:].astype(np.float32)


def test_left_padding_ends_every_row_at_the_last_position() -> None:
    rows = [{"input_ids": list(range(1, n + 1))} for n in (3, 1, 5, 2)]
    last = run_batched(LastToken(), rows, token_budget=100, max_batch=8, pad_id=99, left_pad=True)
    assert last.tolist() == [3.0, 1.0, 5.0, 2.0]
    sums = run_batched(RowSum(), rows, token_budget=6, max_batch=3, pad_id=99, left_pad=True)
    assert sums.tolist() == [float(sum(r["input_ids"])) for r in rows]  # the mask covers the ids alone
    with pytest.raises(AssertionError):  # right padding (the default) leaves short rows ending in padding
        run_batched(LastToken(), rows, token_budget=100, max_batch=8, pad_id=99)


@pytest.fixture(scope="module")
def torch_scorer(tiny_cross_encoder_dir: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=48, backend="torch")


def scores_of(scorer: CrossEncoderScorer) -> np.ndarray:
    return np.array(
        [s.score for s in scorer.score(QUERY, [Candidate(str(i), t) for i, t in enumerate(TEXTS)])]
    )


def test_a_pair_scores_the_same_alone_and_padded_in_a_batch(torch_scorer: CrossEncoderScorer) -> None:
    together = scores_of(torch_scorer)
    alone = [torch_scorer.score(QUERY, [Candidate("x", t)])[0].score for t in TEXTS]
    assert together == pytest.approx(alone, abs=1e-5)


def test_onnx_matches_torch_and_the_export_is_cached(
    tiny_cross_encoder_dir: Path, torch_scorer: CrossEncoderScorer, tmp_path: Path
) -> None:
    reference = scores_of(torch_scorer)
    onnx = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=48, backend="onnx", cache_dir=tmp_path)
    assert scores_of(onnx) == pytest.approx(reference, abs=1e-4)
    exported = cached_onnx(tiny_cross_encoder_dir, False, tmp_path)
    stamp = exported.stat().st_mtime_ns
    again = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=48, backend="onnx", cache_dir=tmp_path)
    again.load()
    assert (
        cached_onnx(tiny_cross_encoder_dir, False, tmp_path).stat().st_mtime_ns == stamp
    )  # not exported again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]  # no half-written leftovers


def test_int8_is_smaller_and_scores(
    tiny_cross_encoder_dir: Path, torch_scorer: CrossEncoderScorer, tmp_path: Path
) -> None:
    # A random tiny model's scores sit too close together to compare orders after quantization; the real
    # model's int8 quality cost is measured by `hybrid-rerank eval` (README).
    int8 = CrossEncoderScorer(
        str(tiny_cross_encoder_dir), max_length=48, backend="onnx-int8", cache_dir=tmp_path
    )
    quantized = scores_of(int8)
    assert quantized.shape == (len(TEXTS),) and np.isfinite(quantized).all()
    assert "model_int8.onnx" in int8.load().runner.description
    fp32 = cached_onnx(tiny_cross_encoder_dir, False, tmp_path).stat().st_size
    assert (
        cached_onnx(tiny_cross_encoder_dir, True, tmp_path).stat().st_size < fp32
    )  # graph overhead dominates a tiny model


def test_bf16_autocast_runs_and_stays_close(
    tiny_cross_encoder_dir: Path, torch_scorer: CrossEncoderScorer
) -> None:
    bf16 = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=48, backend="torch-bf16")
    assert np.corrcoef(scores_of(torch_scorer), scores_of(bf16))[0, 1] > 0.9


def test_an_exported_folder_loads_on_its_own(
    tiny_cross_encoder_dir: Path, torch_scorer: CrossEncoderScorer, tmp_path: Path
) -> None:
    folder = tmp_path / "compact"
    export_folder(tiny_cross_encoder_dir, folder, int8=True)
    assert (folder / ONNX_INT8).is_file() and not (folder / "model.safetensors").exists()
    assert (folder / "tokenizer_config.json").is_file()
    shipped = CrossEncoderScorer(str(folder), max_length=48)  # backend auto: the folder's ONNX file
    cached = CrossEncoderScorer(
        str(tiny_cross_encoder_dir), max_length=48, backend="onnx-int8", cache_dir=tmp_path
    )
    assert scores_of(shipped) == pytest.approx(
        scores_of(cached), abs=1e-5
    )  # the same export and quantization
    with pytest.raises(Exception, match="ships only"):
        CrossEncoderScorer(str(folder), backend="torch").load()


def test_the_rerank_weight_comes_from_settings_then_the_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    assert interpolation_weight(folder) is None  # no metadata
    assert rerank_weight(None, interpolation_weight(folder)) == 1.0  # the rerank order alone
    (folder / "hybrid_rerank.json").write_text('{"interpolation_weight": 0.35}', encoding="utf-8")
    assert rerank_weight(None, interpolation_weight(folder)) == 0.35
    assert rerank_weight(0.8, interpolation_weight(folder)) == 0.8  # RERANK_INTERPOLATION overrides
    assert rerank_weight(0.0, 0.35) == 0.0  # an explicit 0 is not "unset"
    for bad in ('{"interpolation_weight": 1.5}', '{"interpolation_weight": true}', "not json"):
        (folder / "hybrid_rerank.json").write_text(bad, encoding="utf-8")
        assert interpolation_weight(folder) is None, bad


def test_shipped_reranker_is_small_and_loads_offline() -> None:
    from hybrid_rerank.workers.models import SCIFACT_RERANKER_DIR, SCIFACT_RERANKER_NAME

    if not SCIFACT_RERANKER_DIR.is_dir():
        pytest.fail(f"the shipped reranker {SCIFACT_RERANKER_DIR} is missing")
    size = sum(f.stat().st_size for f in SCIFACT_RERANKER_DIR.iterdir() if f.is_file())
    assert size <= 30 * 1024 * 1024
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    scorer = CrossEncoderScorer(SCIFACT_RERANKER_NAME, max_length=128)
    scored = scorer.score(
        "Vitamin D deficiency increases the risk of bone fractures",
        [
            Candidate(
                "rel", "Low serum vitamin D is associated with higher fracture incidence in older adults."
            ),
            Candidate("off", "The crane lifted steel beams onto the roof of the building site."),
        ],
    )
    assert scored[0].score > scored[1].score
    assert "licen" in (SCIFACT_RERANKER_DIR / "README.md").read_text(encoding="utf-8").lower()


def test_layer_truncation_keeps_the_first_layers_and_still_loads(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    import json

    folder = tmp_path / "one-layer"
    export_folder(tiny_cross_encoder_dir, folder, int8=False, layers=1)
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"] == 1
    assert scores_of(CrossEncoderScorer(str(folder), max_length=48)).shape == (len(TEXTS),)
    with pytest.raises(ValueError, match="cannot keep 9 layers"):
        export_folder(tiny_cross_encoder_dir, tmp_path / "too-many", layers=9)

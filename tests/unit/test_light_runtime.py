"""A worker serving an ONNX model loads with onnxruntime and `tokenizers` alone: neither torch nor
transformers is imported (checked in a fresh interpreter); and load() warms the model up with one batch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.onnx_export import export_folder
from hybrid_rerank.workers.scorer import CrossEncoderScorer

PROBE = """
import json, sys
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import CrossEncoderScorer

scorer = CrossEncoderScorer(sys.argv[1], max_length=128)
loaded = scorer.load()
runs_at_load = loaded.runner.runs
scored = scorer.score(
    "Vitamin D deficiency increases the risk of bone fractures",
    [
        Candidate("rel", "Low serum vitamin D is associated with higher fracture incidence in older adults."),
        Candidate("off", "The crane lifted steel beams onto the roof of the building site."),
    ],
)
print(json.dumps({
    "torch": "torch" in sys.modules,
    "transformers": "transformers" in sys.modules,
    "runs_at_load": runs_at_load,
    "scores": [s.score for s in scored],
    "runner": loaded.runner.description,
    "light": loaded.tokenizer is None and loaded.pairs is not None,
}))
"""


def probe(model: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, model], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_shipped_onnx_model_scores_without_importing_torch_or_transformers() -> None:
    result = probe("scifact-minilm-l6-reranker-int8")
    assert result["light"] is True and "onnxruntime" in str(result["runner"])
    assert result["torch"] is False
    assert result["transformers"] is False
    scores = result["scores"]
    assert isinstance(scores, list) and scores[0] > scores[1]  # it really scored, and sensibly
    assert result["runs_at_load"] == 1  # the warm-up batch


def test_an_exported_folder_serves_light_with_the_same_scores_as_through_transformers(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / "exported"
    export_folder(tiny_cross_encoder_dir, folder, int8=False)
    light = probe(str(folder))
    assert light["light"] is True and light["torch"] is False and light["transformers"] is False
    # The same ONNX file read through the transformers tokenizer's own pair call.
    heavy = CrossEncoderScorer(str(folder), max_length=128)
    heavy._model = dataclasses.replace(
        heavy.load(), tokenizer=AutoTokenizer.from_pretrained(str(folder)), pairs=None
    )
    texts = [
        "Low serum vitamin D is associated with higher fracture incidence in older adults.",
        "The crane lifted steel beams onto the roof of the building site.",
    ]
    query = "Vitamin D deficiency increases the risk of bone fractures"
    reference = [s.score for s in heavy.score(query, [Candidate(str(i), t) for i, t in enumerate(texts)])]
    assert light["scores"] == pytest.approx(reference, abs=1e-6)


def test_load_warms_the_model_up_with_one_batch(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    scorer = CrossEncoderScorer(str(tiny_cross_encoder_dir), max_length=48, backend="torch")
    runner = scorer.load().runner
    assert getattr(runner, "runs", None) == 1
    scorer.score("why does the moon show phases", [Candidate("a", "the moon orbits the earth")])
    assert getattr(runner, "runs", None) == 2

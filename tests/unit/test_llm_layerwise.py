"""Layerwise early exit (RERANK_CUTOFF_LAYER) on a tiny per-layer-head LLM reranker shaped like
bge-reranker-v2-minicpm-layerwise, whose own code the builder writes into the folder (`auto_map`): refused
without TRUST_REMOTE_CODE, loaded with it through the real loading code, the score at layer k against the
model's modules run by hand, the card's prompt token for token, and the errors a wrong cutoff gets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.kinds import RemoteCodeError
from hybrid_rerank.workers.runtime.llm import BGE_INSTRUCTION
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import (
    LAYERWISE_MODULE,
    build_tiny_layerwise_reranker,
    build_tiny_llm_reranker,
    demo_texts,
)

QUERY = "why does the moon show phases"
MAX_LENGTH = 256
START, LAYERS = 2, 4


@pytest.fixture(scope="module")
def layerwise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_layerwise_reranker(
        tmp_path_factory.mktemp("h7") / "layerwise-minicpm", layers=LAYERS, start_layer=START
    )


def scorer_for(folder: Path, **options: Any) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(folder), max_length=MAX_LENGTH, backend="torch", **options)


def items() -> list[Candidate]:  # of different lengths, so that a batch pads some rows on the left
    return [Candidate(str(i), text[: 30 + 35 * i]) for i, text in enumerate(demo_texts()[:6])]


def by_hand(folder: Path, prompts: list[list[int]], layers: range) -> dict[int, list[float]]:
    """Per layer k, the head of k on the final norm of the hidden state after k blocks, at the last token of
    each unpadded prompt: the model's modules called one by one, not its forward's cutoff logic."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()
    scores: dict[int, list[float]] = {k: [] for k in layers}
    with torch.inference_mode():
        for ids in prompts:
            tokens = torch.tensor([ids])
            hidden = model.embed_tokens(tokens) + model.embed_positions(torch.arange(len(ids))[None])
            causal = torch.ones(len(ids), len(ids), dtype=torch.bool).tril()[None, None]
            for done, block in enumerate(model.layers, start=1):
                hidden = block(hidden, causal)
                if done in scores:
                    scores[done].append(float(model.lm_head[done - START](model.norm(hidden))[0, -1, 0]))
    return scores


def test_remote_code_is_refused_without_trust_and_loads_with_it(layerwise: Path) -> None:
    with pytest.raises(RemoteCodeError, match="TRUST_REMOTE_CODE=true"):
        scorer_for(layerwise).load()
    loaded = scorer_for(layerwise, trust_remote_code=True).load()
    assert loaded.kind == "llm" and loaded.prompt is not None
    assert loaded.prompt.format.name == "bge-layerwise"  # auto, from model_type minicpm
    assert type(loaded.runner.model).__module__.endswith(LAYERWISE_MODULE)  # the folder's own code
    assert "score head at layer 4 of 4" in loaded.runner.description  # unset: the last layer


def test_the_score_at_each_cutoff_layer_is_that_layers_head_at_the_last_token(layerwise: Path) -> None:
    per_layer = {}
    for layer in range(START, LAYERS + 1):
        scorer = scorer_for(layerwise, trust_remote_code=True, cutoff_layer=layer, batch_size=4)
        loaded = scorer.load()
        assert loaded.prompt is not None
        per_layer[layer] = np.array([s.score for s in scorer.score(QUERY, items())])  # padded batches of 4, 2
    prompts = [loaded.prompt.encode(QUERY, c.text, MAX_LENGTH) for c in items()]
    expected = by_hand(layerwise, prompts, range(START, LAYERS + 1))
    for layer, got in per_layer.items():
        assert got.tolist() == pytest.approx(expected[layer], abs=1e-4), layer
        assert np.std(got) > 0.05  # the documents matter
    for a in per_layer:  # and so does the layer
        for b in per_layer:
            if a < b:
                assert np.abs(per_layer[a] - per_layer[b]).max() > 0.1, (a, b)


def test_the_settings_reach_the_runner(layerwise: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RERANK_CUTOFF_LAYER and TRUST_REMOTE_CODE from the environment, through the workers' factory."""
    from hybrid_rerank.workers.factory import make_scorer
    from hybrid_rerank.workers.settings import load_worker_settings

    monkeypatch.setenv("RERANK_MODEL", str(layerwise))
    monkeypatch.setenv("RERANK_CUTOFF_LAYER", "3")
    monkeypatch.setenv("RERANK_MAX_LENGTH", str(MAX_LENGTH))
    monkeypatch.setenv("RERANK_BACKEND", "torch")
    monkeypatch.setenv("TRUST_REMOTE_CODE", "true")
    scorer = make_scorer(load_worker_settings())
    assert scorer is not None
    assert "score head at layer 3 of 4" in scorer.load().runner.description


def test_the_prompt_is_the_model_cards_token_for_token(layerwise: Path) -> None:
    """The card's code: bos, then "A: {query}", "\\n", "B: {passage}", "\\n" and the instruction, each
    tokenized apart; with a Llama-style tokenizer "\\n" alone is "▁" "\\n", so joining them would differ."""
    loaded = scorer_for(layerwise, trust_remote_code=True).load()
    assert loaded.prompt is not None
    tokenizer = loaded.tokenizer

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    query, passage = "what is a moon", "The moon orbits the earth."
    card = [tokenizer.bos_token_id, *ids(f"A: {query}"), *ids("\n"), *ids(f"B: {passage}")]
    card += ids("\n") + ids(BGE_INSTRUCTION)
    assert loaded.prompt.encode(query, passage, MAX_LENGTH) == card
    assert ids("\n" + BGE_INSTRUCTION) != ids("\n") + ids(BGE_INSTRUCTION)  # the split is what matters
    assert tokenizer.convert_ids_to_tokens(ids("\n")) == ["\u2581", "\n"]


def test_a_wrong_cutoff_or_prompt_gets_an_error_that_says_what_to_set(
    layerwise: Path, tmp_path: Path
) -> None:
    for layer in (START - 1, LAYERS + 1):
        with pytest.raises(ModelLoadError, match=f"RERANK_CUTOFF_LAYER={layer}: .* after layers 2 to 4"):
            scorer_for(layerwise, trust_remote_code=True, cutoff_layer=layer).load()
    gemma = build_tiny_llm_reranker(tmp_path / "gemma", "gemma")  # a plain yes/no LLM: no per-layer heads
    with pytest.raises(ModelLoadError, match=r"no per-layer score heads .* Unset RERANK_CUTOFF_LAYER"):
        scorer_for(gemma, cutoff_layer=1).load()
    with pytest.raises(ModelLoadError, match="bge-layerwise prompt reads per-layer score heads"):
        scorer_for(gemma, llm_prompt="bge-layerwise").load()
    # The published modeling file imports modules transformers 5 removed: say so, not just "no module".
    old = tmp_path / "old-code"
    shutil.copytree(layerwise, old)
    code = old / f"{LAYERWISE_MODULE}.py"
    future = "from __future__ import annotations\n"
    removed = future + "import transformers.modeling_attn_mask_utils\n"  # gone in transformers 5
    code.write_text(code.read_text(encoding="utf-8").replace(future, removed), encoding="utf-8")
    with pytest.raises(
        ModelLoadError, match=r"modeling_attn_mask_utils.*transformers release its model card"
    ):
        scorer_for(old, trust_remote_code=True).load()

"""LLM yes/no rerankers on tiny random causal LMs (Qwen2, Qwen3, Gemma) with byte-level / SentencePiece-style
BPE tokenizers trained on the demo corpus: the two prompt formats token for token, the score read from the
"yes" / "no" logits at the last position against the model called by hand, left padding and token-budget
batching, bf16, and the errors a wrong configuration gets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.llm import (
    BGE_INSTRUCTION,
    QWEN3_INSTRUCTION,
    QWEN3_SYSTEM,
    PromptEncoder,
    prompt_format,
)
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import build_tiny_llm_reranker, demo_texts

QUERY = "why does the moon show phases"
MAX_LENGTH = 256  # the tiny vocabularies spend ~110 tokens on the qwen3 prompt alone
ARCHS = ("qwen2", "qwen3", "gemma")


@pytest.fixture(scope="module")
def llms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llm")
    return {arch: build_tiny_llm_reranker(root / arch, arch) for arch in ARCHS}


def scorer_for(folder: Path, **options: object) -> CrossEncoderScorer:
    return CrossEncoderScorer(str(folder), max_length=MAX_LENGTH, backend="torch", **options)  # type: ignore[arg-type]


def candidates(count: int) -> list[Candidate]:
    return [Candidate(str(i), text) for i, text in enumerate(demo_texts()[:count])]


def test_each_prompt_format_is_the_model_cards_text_token_for_token(llms: dict[str, Path]) -> None:
    gemma = scorer_for(llms["gemma"]).load()
    assert gemma.prompt is not None and gemma.prompt.format.name == "bge-gemma"
    ids = gemma.prompt.encode("what is a moon", "The moon orbits the earth.", MAX_LENGTH)
    assert ids[0] == gemma.tokenizer.bos_token_id
    assert gemma.tokenizer.decode(ids[1:]) == (
        f"A: what is a moon\nB: The moon orbits the earth.\n{BGE_INSTRUCTION}"
    )
    assert "'Yes' or 'No'" in BGE_INSTRUCTION and BGE_INSTRUCTION.startswith(
        "Given a query A and a passage B"
    )
    qwen = scorer_for(llms["qwen3"]).load()
    assert qwen.prompt is not None and qwen.prompt.format.name == "qwen3"
    ids = qwen.prompt.encode("what is a moon", "The moon orbits the earth.", MAX_LENGTH)
    assert qwen.tokenizer.decode(ids) == (
        f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: what is a moon\n<Document>: The moon orbits the earth."
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert qwen.prompt.yes_id == qwen.tokenizer.convert_tokens_to_ids("yes")
    assert qwen.prompt.no_id == qwen.tokenizer.convert_tokens_to_ids("no")
    custom = scorer_for(llms["qwen2"], llm_instruction="Find the passage about astronomy").load()
    assert custom.prompt is not None
    assert "<Instruct>: Find the passage about astronomy\n" in custom.tokenizer.decode(
        custom.prompt.encode("q", "d", MAX_LENGTH)
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_the_score_is_read_from_the_yes_and_no_logits_at_the_last_position(
    llms: dict[str, Path], arch: str
) -> None:
    """Against the Hugging Face model called by hand on each unpadded prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    scorer = scorer_for(llms[arch], max_passages=1)  # one prompt per document, cut to the window
    loaded = scorer.load()
    assert loaded.kind == "llm" and loaded.prompt is not None
    items = [Candidate(c.id, c.text[:200]) for c in candidates(6)]  # each fits the window whole
    got = np.array([s.score for s in scorer.score(QUERY, items)])
    model: Any = AutoModelForCausalLM.from_pretrained(str(llms[arch]))
    model.eval()
    expected = []
    for item in items:
        ids = loaded.prompt.encode(QUERY, item.text, MAX_LENGTH)
        assert len(ids) <= MAX_LENGTH
        with torch.inference_mode():
            last = model(torch.tensor([ids])).logits[0, -1]
        yes, no = float(last[loaded.prompt.yes_id]), float(last[loaded.prompt.no_id])
        expected.append(yes if arch == "gemma" else yes - no)  # bge: the Yes logit; qwen3: log-odds of yes
    assert got == pytest.approx(expected, abs=1e-4)
    assert np.std(got) > 0.05  # the documents matter


@pytest.mark.parametrize("arch", ["qwen3", "gemma"])
def test_left_padding_and_token_budget_batches_change_no_score(llms: dict[str, Path], arch: str) -> None:
    items = [Candidate(str(i), text[: 20 + 40 * i]) for i, text in enumerate(demo_texts()[:6])]
    one_batch = scorer_for(llms[arch], token_budget=100_000, batch_size=64)
    small_batches = scorer_for(llms[arch], token_budget=400, batch_size=2)
    alone = [scorer_for(llms[arch]).score(QUERY, [c])[0].score for c in items]
    assert [s.score for s in one_batch.score(QUERY, items)] == pytest.approx(alone, abs=1e-4)
    assert [s.score for s in small_batches.score(QUERY, items)] == pytest.approx(alone, abs=1e-4)


def test_a_long_document_is_split_into_passages_that_fit_beside_the_prompt(llms: dict[str, Path]) -> None:
    scorer = scorer_for(llms["qwen3"], max_passages=3)
    loaded = scorer.load()
    assert loaded.prompt is not None
    long_text = " ".join(demo_texts()[:10])
    passages = scorer.passages(QUERY, long_text)
    assert len(passages) == 3
    for passage in passages:
        ids = loaded.prompt.encode(QUERY, passage, 1 << 20)  # uncut
        assert len(ids) <= MAX_LENGTH
    best = max(s.score for s in scorer.score(QUERY, [Candidate(str(i), p) for i, p in enumerate(passages)]))
    assert scorer.score(QUERY, [Candidate("doc", long_text)])[0].score == pytest.approx(best, abs=1e-4)


def test_bf16_runs_in_bf16_and_keeps_the_order(llms: dict[str, Path]) -> None:
    items = candidates(12)
    fp32 = np.array([s.score for s in scorer_for(llms["qwen3"]).score(QUERY, items)])
    bf16_scorer = CrossEncoderScorer(str(llms["qwen3"]), max_length=MAX_LENGTH, backend="torch-bf16")
    bf16 = np.array([s.score for s in bf16_scorer.score(QUERY, items)])
    assert "bf16" in bf16_scorer.description
    import torch

    assert next(bf16_scorer.load().runner.model.parameters()).dtype == torch.bfloat16  # type: ignore[attr-defined]
    assert np.corrcoef(fp32, bf16)[0, 1] > 0.99  # measured 0.9999
    assert not np.allclose(fp32, bf16, atol=1e-6)


def test_wrong_configurations_get_errors_that_say_what_to_set(
    llms: dict[str, Path], tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="RERANK_BACKEND=onnx is for cross-encoders"):
        CrossEncoderScorer(str(llms["qwen3"]), backend="onnx").load()
    with pytest.raises(ModelLoadError, match="RERANK_MAX_LENGTH=64 leaves no room"):
        CrossEncoderScorer(str(llms["qwen3"]), max_length=64, backend="torch").load()
    llama = tmp_path / "llama"
    shutil.copytree(llms["qwen2"], llama)
    config = json.loads((llama / "config.json").read_text(encoding="utf-8"))
    (llama / "config.json").write_text(json.dumps(config | {"model_type": "llama"}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="RERANK_LLM_PROMPT"):
        scorer_for(llama).load()
    from transformers import AutoTokenizer

    word_piece = AutoTokenizer.from_pretrained(str(tiny_cross_encoder_dir))  # no "yes" in its vocabulary
    with pytest.raises(ModelLoadError, match="not one known token"):
        PromptEncoder(word_piece, prompt_format("qwen3", None))
    with pytest.raises(ModelLoadError, match="unknown LLM prompt"):
        prompt_format("llama-chat", None)  # type: ignore[arg-type]

"""LLM yes/no rerankers: a causal language model reads a prompt holding the query and the document and is
asked for "yes" or "no"; the score comes from those two tokens' logits at the last position.

Two prompt formats, as their model cards write them:
- `bge-gemma` (BAAI/bge-reranker-v2-gemma, FlagEmbedding's FlagLLMReranker): `<bos>A: {query}\\nB: {passage}`
  then `\\n` and the instruction; the score is the logit of "Yes" (FlagEmbedding's own score; its sigmoid is
  the `normalize=True` one).
- `qwen3` (Qwen3-Reranker): a system turn, a user turn `<Instruct>: ...\\n<Query>: ...\\n<Document>: ...`, and
  the assistant turn opened on an empty think block; the score is logit("yes") - logit("no"), whose sigmoid
  is the model card's softmax probability of "yes".
- `bge-layerwise` (BAAI/bge-reranker-v2-minicpm-layerwise, FlagEmbedding's LayerWiseFlagLLMReranker): the
  bge prompt, but the score is no token's logit: the model's own code replaces the LM head by one score head
  per layer, and its forward takes `cutoff_layers=[k]`, stops after layer k and returns, per cut layer, a
  score at every position. RERANK_CUTOFF_LAYER picks k (early exit: fewer layers, less time, lower quality);
  unset, the last layer's head scores. A plain LLM with a cutoff is refused (its yes/no logits are trained at
  the last layer only; reading them earlier through the final norm and LM head gives no reranker).
Query and document are tokenized apart (as FlagEmbedding does, and as vLLM's query/document templates split
them), so the document alone is cut to fit the window; the query keeps at most three quarters of it.
Batches are padded on the left, so the last position is every row's last real token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.runtime.device import Precision, torch_dtype

PromptName = Literal["auto", "bge-gemma", "bge-layerwise", "qwen3"]
PROMPT_NAMES: tuple[str, ...] = ("auto", "bge-gemma", "bge-layerwise", "qwen3")
BGE_INSTRUCTION = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
QWEN3_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_SHARE = 0.75  # FlagEmbedding cuts the query to 3/4 of max_length
MIN_DOCUMENT_TOKENS = 16  # a window that leaves the document less than this is a configuration mistake


@dataclass(frozen=True)
class PromptFormat:
    name: str
    prefix: str  # before the query part
    query: str  # with {query} and {instruction}
    middle: str  # between the query part and the document part
    document: str  # with {document}
    # After the document: the question, or the opened assistant turn; each part tokenized apart, as the
    # model card's code does (with a Llama-style SentencePiece "\n" alone is "▁" "\n", not "\n").
    suffix: tuple[str, ...]
    yes: str
    no: str
    bos: bool  # starts with the tokenizer's bos token
    yes_minus_no: bool  # score = yes - no logit (else the yes logit alone)
    instruction: str = ""
    head_scored: bool = False  # the model's per-layer score heads give the score; no answer token


BGE_GEMMA = PromptFormat(
    "bge-gemma", "", "A: {query}", "\n", "B: {document}", ("\n", BGE_INSTRUCTION), "Yes", "No", True, False
)
BGE_LAYERWISE = replace(BGE_GEMMA, name="bge-layerwise", yes="", no="", head_scored=True)
QWEN3 = PromptFormat(
    "qwen3",
    f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n",
    "<Instruct>: {instruction}\n<Query>: {query}\n",
    "",
    "<Document>: {document}",
    ("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
    "yes",
    "no",
    False,
    True,
    QWEN3_INSTRUCTION,
)
FORMATS = {"bge-gemma": BGE_GEMMA, "bge-layerwise": BGE_LAYERWISE, "qwen3": QWEN3}
# model_type -> the format its known rerankers were trained with (minicpm: bge-reranker-v2-minicpm-layerwise).
FORMAT_BY_MODEL_TYPE = {
    "gemma": "bge-gemma",
    "gemma2": "bge-gemma",
    "qwen2": "qwen3",
    "qwen3": "qwen3",
    "minicpm": "bge-layerwise",
}
NO_ANSWER = -1  # the answer ids of a head-scored format


def prompt_format(name: PromptName, model_type: str | None, instruction: str | None = None) -> PromptFormat:
    """The format `name` names, or for `auto` the one of the model's family; `instruction` replaces the
    format's own task instruction (Qwen3-Reranker's <Instruct>)."""
    if name not in PROMPT_NAMES:
        raise ModelLoadError(f"unknown LLM prompt {name!r}: use one of {', '.join(PROMPT_NAMES)}")
    chosen = name if name != "auto" else FORMAT_BY_MODEL_TYPE.get(model_type or "")
    if chosen is None:
        raise ModelLoadError(
            f"no known yes/no prompt for model_type {model_type!r}: set RERANK_LLM_PROMPT to "
            "bge-gemma (A:/B: prompt, 'Yes' logit), qwen3 (<Instruct>/<Query>/<Document>, yes vs no) or "
            "bge-layerwise (A:/B: prompt, the model's per-layer score heads)"
        )
    found = FORMATS[chosen]
    return replace(found, instruction=instruction) if instruction else found


def single_token(tokenizer: Any, word: str) -> int:
    """The id of `word` when the tokenizer reads it as one token (else the answer logit is meaningless)."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ModelLoadError(
            f"the tokenizer reads {word!r} as {len(ids)} tokens {ids}, not one known token: this is not the "
            "tokenizer of a yes/no LLM reranker in this prompt format (check RERANK_LLM_PROMPT)"
        )
    return int(ids[0])


class PromptEncoder:
    """Token ids of (query, document) prompts in one format, within `max_length` tokens in all."""

    def __init__(self, tokenizer: Any, fmt: PromptFormat) -> None:
        self.tokenizer = tokenizer
        self.format = fmt
        self.yes_id = NO_ANSWER if fmt.head_scored else single_token(tokenizer, fmt.yes)
        self.no_id = NO_ANSWER if fmt.head_scored else single_token(tokenizer, fmt.no)
        bos = tokenizer.bos_token_id
        if fmt.bos and bos is None:
            raise ModelLoadError(f"the {fmt.name} prompt starts with a bos token; this tokenizer has none")
        self._prefix = ([bos] if fmt.bos else []) + self._ids(fmt.prefix)
        self._middle = self._ids(fmt.middle)
        self._suffix = [token for part in fmt.suffix for token in self._ids(part)]
        # What the format adds around query and document, for fitting passages into the window.
        self.overhead = len(self.encode("", "", 1 << 20))
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def check_room(self, max_length: int) -> None:
        """Refuse a window the prompt alone would fill (the document would be cut to nothing)."""
        if max_length < self.overhead + MIN_DOCUMENT_TOKENS:
            raise ModelLoadError(
                f"RERANK_MAX_LENGTH={max_length} leaves no room for the document: the {self.format.name} "
                f"prompt takes {self.overhead} tokens of this tokenizer; set RERANK_MAX_LENGTH to at least "
                f"{self.overhead + MIN_DOCUMENT_TOKENS} (LLM rerankers read 512 to 8192)"
            )

    def _ids(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, query: str, document: str, max_length: int) -> list[int]:
        fmt = self.format
        fixed = len(self._prefix) + len(self._middle) + len(self._suffix)
        room = max(max_length - fixed, 2)
        query_ids = self._ids(fmt.query.format(query=query, instruction=fmt.instruction))
        query_ids = query_ids[: max(int(room * QUERY_SHARE), 1)]
        document_ids = self._ids(fmt.document.format(document=document))[: max(room - len(query_ids), 1)]
        return self._prefix + query_ids + self._middle + document_ids + self._suffix

    def rows(
        self, queries: Sequence[str], texts: Sequence[str], max_length: int
    ) -> list[dict[str, list[int]]]:
        return [{"input_ids": self.encode(q, t, max_length)} for q, t in zip(queries, texts, strict=True)]

    def pool(self, output: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The score from the runner's [no, yes] logits per row, or its one column: a score head's."""
        if output.shape[1] == 1:
            return np.asarray(output[:, 0])
        return np.asarray(output[:, 1] - output[:, 0] if self.format.yes_minus_no else output[:, 1])


def layer_heads(model: Any) -> tuple[int, int] | None:
    """The first and last layer with a score head, for a model whose forward takes `cutoff_layers` (the
    per-layer heads of bge-reranker-v2-minicpm-layerwise: `start_layer` to `num_hidden_layers`); else None."""
    if "cutoff_layers" not in inspect.signature(model.forward).parameters:
        return None
    config = model.config
    return int(getattr(config, "start_layer", 1)), int(config.num_hidden_layers)


def refuse_cutoff(model_name: str) -> ModelLoadError:
    return ModelLoadError(
        f"RERANK_CUTOFF_LAYER is set, but {model_name} has no per-layer score heads (its forward takes no "
        "`cutoff_layers`): an LLM's yes/no logits are trained at its last layer only, and read earlier they "
        "rank no better than chance. Unset RERANK_CUTOFF_LAYER, or use a layerwise model "
        "(bge-reranker-v2-minicpm-layerwise, with TRUST_REMOTE_CODE=true)"
    )


def check_cutoff_before_loading(config: dict[str, Any], cutoff_layer: int | None) -> None:
    """Refuse a cutoff for an architecture transformers itself implements (none has per-layer heads) before
    loading its weights; a folder with its own code (`auto_map`) is checked once loaded."""
    if cutoff_layer is not None and config and "auto_map" not in config:
        raise refuse_cutoff(", ".join(config.get("architectures") or []) or "this model")


class LlmRunner:
    """A causal LM in torch; per left-padded batch, the [no, yes] logits at the last position, or for a model
    with per-layer score heads, the score of the head at the cut layer (one column)."""

    def __init__(
        self,
        folder: Path,
        answer_ids: tuple[int, int],
        *,
        device: str,
        precision: Precision,
        threads: int | None,
        trust_remote_code: bool = False,
        cutoff_layer: int | None = None,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        from hybrid_rerank.workers.runtime.kinds import read_config
        from hybrid_rerank.workers.runtime.runners import load_torch_model

        self._torch = torch
        self.device = device
        self.answer_ids = list(answer_ids)
        check_cutoff_before_loading(read_config(folder), cutoff_layer)
        try:
            self.model = load_torch_model(
                AutoModelForCausalLM,
                folder,
                device=device,
                threads=threads,
                trust_remote_code=trust_remote_code,
                dtype=torch_dtype(precision),
            )
        except ImportError as exc:  # most often a model's own code written for another transformers release
            raise ModelLoadError(
                f"the model's code imports what this installation lacks ({exc}); with transformers "
                f"{transformers.__version__}. A folder that brings its own code (auto_map) may need the "
                "transformers release its model card names, or an updated modeling file"
            ) from exc
        self.layers = layer_heads(self.model)
        self.precision = precision
        self.description = f"torch causal LM {precision} on {device}"
        self._options: dict[str, Any]
        if self.layers is None:
            if cutoff_layer is not None:
                raise refuse_cutoff(type(self.model).__name__)
            if min(answer_ids) < 0:
                raise ModelLoadError(
                    "the bge-layerwise prompt reads per-layer score heads, which "
                    f"{type(self.model).__name__} lacks: set RERANK_LLM_PROMPT to bge-gemma, qwen3 or auto"
                )
            # Only the last position's logits are needed; models written before `logits_to_keep` compute all.
            accepted = inspect.signature(self.model.forward).parameters
            self._options = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
            self.cutoff_layer = None
            return
        first, last = self.layers
        self.cutoff_layer = last if cutoff_layer is None else cutoff_layer
        if not first <= self.cutoff_layer <= last:
            raise ModelLoadError(
                f"RERANK_CUTOFF_LAYER={cutoff_layer}: this model has score heads after layers {first} to "
                f"{last}; pick one of those (fewer layers: faster, and usually a little less precise)"
            )
        self._options = {"cutoff_layers": [self.cutoff_layer]}
        self.description += f", score head at layer {self.cutoff_layer} of {last}"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(batch["input_ids"]).to(self.device)
        mask = torch.from_numpy(batch["attention_mask"]).to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # each row counts from its first real token
        with torch.inference_mode():
            output = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **self._options)
        if self.layers is None:
            return np.asarray(output.logits[:, -1, self.answer_ids].float().cpu().numpy())
        # One score tensor per cut layer, (batch, positions) or (batch, positions, 1); left padding puts
        # every row's last real token last.
        scores = output.logits[0] if isinstance(output.logits, (tuple, list)) else output.logits
        last = scores.reshape(scores.shape[0], scores.shape[1], -1)[:, -1, :1]
        return np.asarray(last.float().cpu().numpy())

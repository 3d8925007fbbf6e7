"""LLM yes/no rerankers: a causal language model reads a prompt holding the query and the document and is
asked for "yes" or "no"; the score comes from those two tokens' logits at the last position.

Two prompt formats, as their model cards write them:
- `bge-gemma` (BAAI/bge-reranker-v2-gemma, FlagEmbedding's FlagLLMReranker): `<bos>A: {query}\\nB: {passage}`
  then `\\n` and the instruction; the score is the logit of "Yes" (FlagEmbedding's own score; its sigmoid is
  the `normalize=True` one).
- `qwen3` (Qwen3-Reranker): a system turn, a user turn `<Instruct>: ...\\n<Query>: ...\\n<Document>: ...`, and
  the assistant turn opened on an empty think block; the score is logit("yes") - logit("no"), whose sigmoid
  is the model card's softmax probability of "yes".
Query and document are tokenized apart (as FlagEmbedding does, and as vLLM's query/document templates split
them), so the document alone is cut to fit the window; the query keeps at most three quarters of it.
Batches are padded on the left, so the last position is every row's last real token.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.runtime.device import Precision, torch_dtype

PromptName = Literal["auto", "bge-gemma", "qwen3"]
PROMPT_NAMES: tuple[str, ...] = ("auto", "bge-gemma", "qwen3")
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
    suffix: str  # after the document: the question, or the opened assistant turn
    yes: str
    no: str
    bos: bool  # starts with the tokenizer's bos token
    yes_minus_no: bool  # score = yes - no logit (else the yes logit alone)
    instruction: str = ""


BGE_GEMMA = PromptFormat(
    "bge-gemma", "", "A: {query}", "\n", "B: {document}", "\n" + BGE_INSTRUCTION, "Yes", "No", True, False
)
QWEN3 = PromptFormat(
    "qwen3",
    f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n",
    "<Instruct>: {instruction}\n<Query>: {query}\n",
    "",
    "<Document>: {document}",
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "yes",
    "no",
    False,
    True,
    QWEN3_INSTRUCTION,
)
FORMATS = {"bge-gemma": BGE_GEMMA, "qwen3": QWEN3}
# model_type -> the format its known rerankers were trained with.
FORMAT_BY_MODEL_TYPE = {"gemma": "bge-gemma", "gemma2": "bge-gemma", "qwen2": "qwen3", "qwen3": "qwen3"}


def prompt_format(name: PromptName, model_type: str | None, instruction: str | None = None) -> PromptFormat:
    """The format `name` names, or for `auto` the one of the model's family; `instruction` replaces the
    format's own task instruction (Qwen3-Reranker's <Instruct>)."""
    if name not in PROMPT_NAMES:
        raise ModelLoadError(f"unknown LLM prompt {name!r}: use one of {', '.join(PROMPT_NAMES)}")
    chosen = name if name != "auto" else FORMAT_BY_MODEL_TYPE.get(model_type or "")
    if chosen is None:
        raise ModelLoadError(
            f"no known yes/no prompt for model_type {model_type!r}: set RERANK_LLM_PROMPT to "
            "bge-gemma (A:/B: prompt, 'Yes' logit) or qwen3 (<Instruct>/<Query>/<Document>, yes vs no)"
        )
    found = FORMATS[chosen]
    if instruction:
        from dataclasses import replace

        return replace(found, instruction=instruction)
    return found


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
        self.yes_id = single_token(tokenizer, fmt.yes)
        self.no_id = single_token(tokenizer, fmt.no)
        bos = tokenizer.bos_token_id
        if fmt.bos and bos is None:
            raise ModelLoadError(f"the {fmt.name} prompt starts with a bos token; this tokenizer has none")
        self._prefix = ([bos] if fmt.bos else []) + self._ids(fmt.prefix)
        self._middle = self._ids(fmt.middle)
        self._suffix = self._ids(fmt.suffix)
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
        """The score from the runner's [no, yes] logits per row."""
        return np.asarray(output[:, 1] - output[:, 0] if self.format.yes_minus_no else output[:, 1])


class LlmRunner:
    """A causal LM in torch; per left-padded batch, the [no, yes] logits at the last position."""

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
        from transformers import AutoModelForCausalLM

        from hybrid_rerank.workers.runtime.runners import load_torch_model

        self._torch = torch
        self.device = device
        self.cutoff_layer = cutoff_layer  # layerwise early exit; None: the last layer
        self.answer_ids = list(answer_ids)
        self.model = load_torch_model(
            AutoModelForCausalLM,
            folder,
            device=device,
            threads=threads,
            trust_remote_code=trust_remote_code,
            dtype=torch_dtype(precision),
        )
        # Only the last position's logits are needed; models written before `logits_to_keep` compute all.
        accepted = inspect.signature(self.model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        self.precision = precision
        self.description = f"torch causal LM {precision} on {device}"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        ids = torch.from_numpy(batch["input_ids"]).to(self.device)
        mask = torch.from_numpy(batch["attention_mask"]).to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # each row counts from its first real token
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, **self._keep
            ).logits
        return np.asarray(logits[:, -1, self.answer_ids].float().cpu().numpy())

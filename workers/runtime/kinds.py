"""Which kind of scorer a model folder needs, read from its config.json (`architectures`, `model_type`),
unless RERANK_KIND says; and the checks that turn a folder that cannot load into an error saying what to do.

- `cross-encoder`: a sequence-classification model (BERT/MiniLM, XLM-RoBERTa, ModernBERT, ...): one logit per
  (query, document) pair.
- `llm`: a causal language model that answers yes or no after a prompt (bge-reranker-v2-gemma,
  Qwen3-Reranker): the score is read from the "yes" / "no" logits at the last position; or one whose own code
  puts a score head after each layer (bge-reranker-v2-minicpm-layerwise, `auto_map`, so only with
  TRUST_REMOTE_CODE): the score is read from the head of the layer RERANK_CUTOFF_LAYER names.
- `remote`: an HTTP rerank API (text-embeddings-inference, Cohere, Jina); no folder at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from hybrid_rerank.workers.errors import ModelLoadError

ScorerKind = Literal["auto", "cross-encoder", "llm", "remote"]
SCORER_KINDS: tuple[str, ...] = ("auto", "cross-encoder", "llm", "remote")
LocalKind = Literal["cross-encoder", "llm"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


class ModelKindError(ModelLoadError):
    """The folder holds another kind of model than the one asked for (RERANK_KIND), or none we know."""


class RemoteCodeError(ModelLoadError):
    """The model's architecture ships as Python code in its folder, and TRUST_REMOTE_CODE is off."""


class MissingTokenizerError(ModelLoadError):
    """The model folder has weights but no tokenizer."""


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, or {} when it has none (a folder that then fails to load says why)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def architecture_kind(config: dict[str, Any]) -> LocalKind | None:
    """`cross-encoder` for a sequence-classification head, `llm` for a causal LM head, None when the config
    names neither (no `architectures`)."""
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in architectures):
        return "llm"
    return None


def needs_remote_code(config: dict[str, Any]) -> bool:
    """Whether the installed transformers lacks the architecture and the folder brings its own
    (`auto_map`). A folder without code of its own never imports transformers here (nor, with it, torch,
    which an ONNX worker never needs)."""
    import importlib

    if "auto_map" not in config:
        return False
    known = importlib.import_module("transformers.models.auto.configuration_auto").CONFIG_MAPPING_NAMES
    return config.get("model_type") not in known


def resolve_kind(folder: Path, requested: ScorerKind, *, trust_remote_code: bool) -> LocalKind:
    """The local kind to load `folder` as; raises a ModelLoadError subclass that says what to change."""
    if requested == "remote":
        raise ModelKindError("RERANK_KIND=remote scores through an HTTP API and loads no model folder")
    config = read_config(folder)
    found = architecture_kind(config)
    named = ", ".join(config.get("architectures") or []) or "no architectures"
    if needs_remote_code(config) and not trust_remote_code:
        raise RemoteCodeError(
            f"{folder} needs its own Python code ({named}, model_type {config.get('model_type')!r}, "
            "auto_map), which runs only with TRUST_REMOTE_CODE=true: read that code first, then set it"
        )
    if requested == "auto":
        if found is None and config:
            raise ModelKindError(
                f"{folder}: config.json names {named}, neither a sequence-classification head "
                "(cross-encoder) nor a causal LM head (LLM reranker); set RERANK_KIND=cross-encoder or llm"
            )
        return found or "cross-encoder"  # no config.json: the cross-encoder loader says what is missing
    if found is not None and found != requested:
        hint = "a causal language model" if found == "llm" else "a sequence-classification cross-encoder"
        raise ModelKindError(
            f"RERANK_KIND={requested} but {folder} holds {hint} ({named}): set RERANK_KIND={found} or auto"
        )
    return requested


def check_tokenizer(folder: Path) -> None:
    """Refuse a folder without any tokenizer file, before loading weights for nothing."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise MissingTokenizerError(
            f"{folder} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the model's tokenizer "
            "beside it with `tokenizer.save_pretrained(folder)`"
        )

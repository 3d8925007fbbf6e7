"""Loading a cross-encoder: its runner and its tokenizer. A model served through onnxruntime (a folder that
ships only an ONNX file, or an export already in the cache) loads with onnxruntime and `tokenizers` alone:
neither torch nor transformers is imported, which keeps a worker's memory and start time small. Torch
runners read the tokenizer through transformers, as the training code does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybrid_rerank.workers.runtime.batching import PairRunner
from hybrid_rerank.workers.runtime.kinds import (
    LocalKind,
    ScorerKind,
    architecture_kind,
    read_config,
    resolve_kind,
)
from hybrid_rerank.workers.runtime.models import load_tokenizer
from hybrid_rerank.workers.runtime.pair_tokens import (
    PairEncoder,
    pair_encoder_from_folder,
    pair_encoder_from_transformers,
)
from hybrid_rerank.workers.runtime.runners import OnnxRunner, RunnerKind, make_runner


def local_kind(folder: Path, requested: ScorerKind, *, trust_remote_code: bool) -> LocalKind:
    """`kinds.resolve_kind`, without its remote-code probe where the answer cannot depend on it: a folder
    with no code of its own (no `auto_map`) whose config names a sequence-classification head is a
    cross-encoder. The probe imports transformers, and with it torch, which an ONNX worker never needs."""
    config = read_config(folder)
    plain = "auto_map" not in config and requested in ("auto", "cross-encoder")
    if plain and architecture_kind(config) == "cross-encoder":
        return "cross-encoder"
    return resolve_kind(folder, requested, trust_remote_code=trust_remote_code)


def load_cross_encoder(
    folder: Path,
    backend: RunnerKind,
    *,
    cache_dir: Path,
    device: str | None,
    threads: int | None,
    trust_remote_code: bool,
) -> tuple[Any, PairRunner, PairEncoder | None]:
    """(transformers tokenizer or None, runner, pair encoder or None): an onnxruntime runner with a
    tokenizer.json that `tokenizers` reads as transformers would gets no transformers tokenizer at all."""
    runner = make_runner(
        folder,
        backend,
        cache_dir=cache_dir,
        device=device,
        threads=threads,
        trust_remote_code=trust_remote_code,
    )
    if isinstance(runner, OnnxRunner) and not trust_remote_code:
        light = pair_encoder_from_folder(folder)
        if light is not None:
            return None, runner, light
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    return tokenizer, runner, pair_encoder_from_transformers(tokenizer)

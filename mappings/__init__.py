"""Index mapping and search pipelines as JSON, filled in with the index's parameters.

The JSON files are the reference a reader (or an operator) can diff against a live cluster; the functions
here only set the parameters, so what is sent is always the file plus a few named values.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Analyzer = Literal["english_cjk", "english", "cjk"]
Normalization = Literal["min_max", "l2", "z_score"]
ANALYZERS: tuple[str, ...] = ("english_cjk", "english", "cjk")
MAPPING_FORMAT = 1


@cache
def _template(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((resources.files(__package__) / name).read_text(encoding="utf-8"))
    return loaded


def load(name: str) -> dict[str, Any]:
    """A fresh copy of one JSON file of this package."""
    return copy.deepcopy(_template(name))


def index_body(
    *,
    dimension: int,
    embedding_model: str,
    analyzer: Analyzer = "english_cjk",
    m: int = 16,
    ef_construction: int = 128,
) -> dict[str, Any]:
    """The create-index body: text fields with `analyzer`, a lucene HNSW cosine `knn_vector`."""
    if dimension <= 0:
        raise ValueError(f"dimension must be positive, got {dimension}")
    if analyzer not in ANALYZERS:
        raise ValueError(f"unknown analyzer {analyzer!r}: use one of {', '.join(ANALYZERS)}")
    body = load("index.json")
    properties = body["mappings"]["properties"]
    properties["title"]["analyzer"] = analyzer
    properties["text"]["analyzer"] = analyzer
    vector = properties["embedding"]
    vector["dimension"] = dimension
    vector["method"]["parameters"] = {"m": m, "ef_construction": ef_construction}
    body["mappings"]["_meta"] = {
        "format": MAPPING_FORMAT,
        "embedding_model": embedding_model,
        "dimension": dimension,
        "analyzer": analyzer,
    }
    return body


def normalization_pipeline_body(technique: Normalization, weights: tuple[float, float]) -> dict[str, Any]:
    """A search pipeline that normalizes each sub-query's scores and takes their weighted mean."""
    if technique not in ("min_max", "l2", "z_score"):
        raise ValueError(f"unknown normalization {technique!r}: use min_max, l2 or z_score")
    body = load("pipeline_normalization.json")
    processor = body["phase_results_processors"][0]["normalization-processor"]
    processor["normalization"]["technique"] = technique
    processor["combination"]["parameters"]["weights"] = list(weights)
    return body


def rrf_pipeline_body(rank_constant: int = 60) -> dict[str, Any]:
    """A search pipeline that fuses the sub-queries by reciprocal rank."""
    body = load("pipeline_rrf.json")
    body["phase_results_processors"][0]["score-ranker-processor"]["combination"]["rank_constant"] = (
        rank_constant
    )
    return body

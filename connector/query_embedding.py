"""The query path's own runner: one short text at a time, as fast as the CPU allows.

A search embeds one query, so the batch machinery documents need (sorting, packing, padding, a pooling mask)
is overhead there, and so are extra threads: on the shared 2-core machine one onnxruntime thread ran a
query faster than two, and torch's two threads stall whenever the other core is busy. `OnnxQueryRunner`
runs the exported transformer (`workers.runtime.onnx_export`; int8 with per-channel scales for
`onnx-int8`) on exactly the query's tokens, with the tokenizer's Rust backend called directly, through one
session made and warmed at load.

Its vectors are the document runner's up to int8 rounding: the same weights, pooling and normalization, so an
index built by any document backend is searched in the same geometry. `bench embed --queries` measures the
cosine to fp32 and SciFact's dense nDCG@10 with fp32 documents.

The folder layout both ONNX paths accept is read here too: a sentence-transformers folder whose modules are
a Transformer, mean or CLS Pooling and optionally Normalize. An export skips any other module (a Dense
projection, say), so such a folder is refused rather than embedded wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_rerank.connector.backends.base import Vector
from hybrid_rerank.connector.language import read_json
from hybrid_rerank.workers.runtime.batching import Pool, cls_pool, mean_pool

QueryBackend = Literal["auto", "same", "onnx", "onnx-int8"]
QUERY_BACKENDS: tuple[str, ...] = ("auto", "same", "onnx", "onnx-int8")
# What `auto` runs: int8 queries kept SciFact's dense nDCG@10 within 0.005 of fp32 ones (bench embed).
AUTO_QUERY_BACKEND: QueryBackend = "onnx-int8"

Pooling = Literal["mean", "cls"]
POOLS: dict[Pooling, Pool] = {"mean": mean_pool, "cls": cls_pool}
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class EncoderLayout:
    """What the ONNX paths read from a sentence-transformers folder."""

    transformer: Path  # the Transformer module's folder: config, weights, tokenizer
    pooling: Pooling
    max_length: int  # tokens, special ones included; longer texts are cut, as sentence-transformers does


def encoder_layout(location: str) -> EncoderLayout:
    """The layout of a local sentence-transformers folder, or a ValueError saying what is not supported."""
    root = Path(location)
    if not root.is_dir():
        raise FileNotFoundError(f"{location} is not a local folder")
    modules = read_json(root / "modules.json")
    paths = {"Transformer": "", "Pooling": "1_Pooling"}  # the layout of a folder without modules.json
    if isinstance(modules, list) and modules:
        kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
        unsupported = [kind for kind in kinds if kind not in SUPPORTED_MODULES]
        if unsupported or kinds[0] != "Transformer":
            raise ValueError(
                f"modules {kinds}: the ONNX path runs a Transformer, then Pooling and Normalize only"
            )
        paths |= {kind: str(module.get("path") or "") for kind, module in zip(kinds, modules, strict=True)}
    transformer = root / paths["Transformer"]
    max_length = read_json(transformer / "sentence_bert_config.json").get("max_seq_length", 512)
    return EncoderLayout(transformer, pooling_of(root / paths["Pooling"]), int(max_length))


def pooling_of(pooling_folder: Path) -> Pooling:
    """Mean or CLS, as the Pooling module's config.json says (mean where it says nothing)."""
    config = read_json(pooling_folder / "config.json")
    if config.get("pooling_mode_cls_token"):
        return "cls"
    others = (
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
    )
    if config.get("pooling_mode_mean_tokens", True) and not any(config.get(key) for key in others):
        return "mean"
    raise ValueError(f"pooling {config} is not mean or CLS")


def fast_tokenizer(folder: Path, max_length: int, *, trust_remote_code: bool = False) -> Any:
    """The folder's `tokenizers.Tokenizer` as transformers configures it, copied (the caller owns it), cutting
    at `max_length` and never padding (tokenizer.json files often carry a fixed padding)."""
    from tokenizers import Tokenizer

    from hybrid_rerank.workers.runtime.models import load_tokenizer

    backend = getattr(load_tokenizer(folder, trust_remote_code=trust_remote_code), "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{folder} has no fast (Rust) tokenizer")
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


class OnnxQueryRunner:
    """One text in, its normalized embedding out: tokens straight into a preloaded onnxruntime session."""

    def __init__(self, model: Path, layout: EncoderLayout, *, threads: int, trust_remote_code: bool) -> None:
        import onnxruntime as ort

        self.tokenizer = fast_tokenizer(
            layout.transformer, layout.max_length, trust_remote_code=trust_remote_code
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.output = self.session.get_outputs()[0].name
        self.pooling = layout.pooling
        self.description = f"onnxruntime {model.name}, {threads} thread(s), one query at a time"
        self.dimension = int(self(".").shape[0])  # the warm-up run: the first one pays for allocation

    def __call__(self, text: str) -> Vector:
        encoding = self.tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.asarray([encoding.type_ids], dtype=np.int64)
        states = self.session.run([self.output], feed)[0][0]  # (tokens, hidden): no padding to mask
        pooled = states[0] if self.pooling == "cls" else states.mean(axis=0)
        return np.asarray(pooled / max(float(np.linalg.norm(pooled)), 1e-12), dtype=np.float32)

"""ONNX export of Hugging Face models (`torch.onnx.export`; sentence-transformers' own onnx backend needs
`optimum`, which pins transformers below what sentence-transformers 6 needs), dynamic int8 quantization, the
on-disk export cache keyed by the model's content and the export recipe, and self-contained ONNX model
folders (`hybrid-rerank export-reranker`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from hybrid_rerank.workers.runtime.batching import INPUT_NAMES
from hybrid_rerank.workers.runtime.models import ONNX_FP32, ONNX_INT8, TORCH_WEIGHTS

Head = Literal["classifier", "encoder"]
OUTPUT_NAMES: dict[str, str] = {"classifier": "logits", "encoder": "last_hidden_state"}


def content_key(folder: Path) -> str:
    """A revision key for a model folder: its config and weights' names, sizes and modification times, plus
    the first and last MiB of each weights file (cheap, and changes whenever the weights do)."""
    hasher = hashlib.sha256()
    for name in ("config.json", *TORCH_WEIGHTS):
        path = folder / name
        if not path.is_file():
            continue
        stat = path.stat()
        hasher.update(f"{name}|{stat.st_size}".encode())
        with path.open("rb") as handle:
            hasher.update(handle.read(1 << 20))
            if stat.st_size > 1 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                hasher.update(handle.read(1 << 20))
    return hasher.hexdigest()[:16]


def export_onnx(
    folder: Path, target: Path, *, head: Head = "classifier", trust_remote_code: bool = False
) -> Path:
    """`torch.onnx.export`, dynamic in batch and sequence length: a sequence-classification model's logits
    (`classifier`, cross-encoders) or a bare encoder's last hidden state (`encoder`, bi-encoders)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    loader = AutoModelForSequenceClassification if head == "classifier" else AutoModel
    model = loader.from_pretrained(str(folder), trust_remote_code=trust_remote_code).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    if head == "classifier":
        sample = tokenizer(["a query"] * 2, ["a document to read"] * 2, return_tensors="pt", padding=True)
    else:
        sample = tokenizer(["a document to read", "another one"], return_tensors="pt", padding=True)
    names = [n for n in INPUT_NAMES if n in sample]
    output = OUTPUT_NAMES[head]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {
        output: {0: "batch"} if head == "classifier" else {0: "batch", 1: "sequence"}
    }
    target.parent.mkdir(parents=True, exist_ok=True)

    class ByName(torch.nn.Module):
        """Positional ONNX inputs passed to the model by name (forward's positional order varies)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return getattr(self.model(**dict(zip(names, inputs, strict=True))), output)

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes the dynamic axes already cover
        torch.onnx.export(
            ByName(),
            tuple(sample[n] for n in names),
            str(target),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return target


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the weights (MatMul and the embedding Gather), per output channel: about a
    quarter of the fp32 size. Per-tensor scales moved all-MiniLM-L6-v2 embeddings to cosine 0.95 of fp32,
    per-channel ones keep them above 0.98."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about optional pre-processing
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return target


# Part of the cache key: a change to the export or the quantization makes a new entry.
EXPORT_RECIPE = "opset17-int8pc-v1"


def cached_onnx(
    folder: Path, int8: bool, cache_dir: Path, *, head: Head = "classifier", trust_remote_code: bool = False
) -> Path:
    """The exported (and quantized) model from the cache, made once per model content. Written to a temporary
    folder and renamed into place: a crash mid-export, or two workers exporting at once, leave no half
    file."""
    entry = cache_dir / f"{folder.name}-{head}-{EXPORT_RECIPE}-{content_key(folder)}"
    wanted = entry / (ONNX_INT8 if int8 else ONNX_FP32)
    if wanted.is_file():
        return wanted
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        fp32 = (
            entry / ONNX_FP32
            if (entry / ONNX_FP32).is_file()
            else export_onnx(folder, work / ONNX_FP32, head=head, trust_remote_code=trust_remote_code)
        )
        if int8:
            quantize_int8(fp32, work / ONNX_INT8)
        entry.mkdir(parents=True, exist_ok=True)
        for produced in work.iterdir():
            os.replace(produced, entry / produced.name)
        (entry / "source.json").write_text(json.dumps({"model": str(folder)}), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return wanted


COMPANION_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "hybrid_rerank.json",
)


def truncate_layers(source: Path, target: Path, layers: int, *, trust_remote_code: bool = False) -> Path:
    """A copy of a sequence-classification model keeping only its first `layers` transformer layers (the
    layerwise idea of the bge-reranker family, here without retraining: measure its quality before use)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), trust_remote_code=trust_remote_code
    )
    encoder: Any = getattr(model.base_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None or not 0 < layers <= len(stack):
        found = len(stack) if stack is not None else "no"
        raise ValueError(f"cannot keep {layers} layers: {source} has {found} encoder layers")
    encoder.layer = stack[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code).save_pretrained(
        str(target)
    )
    return target


def export_folder(
    source: Path,
    target: Path,
    *,
    int8: bool = True,
    layers: int | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """A self-contained ONNX model folder (no torch weights) that `make_runner` runs with onnxruntime."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model = source
        if layers is not None:
            model = truncate_layers(
                source, Path(work) / "truncated", layers, trust_remote_code=trust_remote_code
            )
        fp32 = export_onnx(model, Path(work) / ONNX_FP32, trust_remote_code=trust_remote_code)
        produced = quantize_int8(fp32, Path(work) / ONNX_INT8) if int8 else fp32
        for stale in (ONNX_FP32, ONNX_INT8):
            (target / stale).unlink(missing_ok=True)
        shutil.move(str(produced), target / produced.name)
        for name in COMPANION_FILES:
            if (model / name).is_file():
                shutil.copy2(model / name, target / name)
            elif (source / name).is_file():
                shutil.copy2(source / name, target / name)
    return target / (ONNX_INT8 if int8 else ONNX_FP32)

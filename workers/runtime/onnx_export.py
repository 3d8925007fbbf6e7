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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from hybrid_rerank.workers.runtime.batching import INPUT_NAMES
from hybrid_rerank.workers.runtime.models import ONNX_FP32, ONNX_INT8, RECIPE_FILE, TORCH_WEIGHTS

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


# The attention graph traced into the export. transformers' default (SDPA) traces a graph whose attention
# onnxruntime's int8 kernels barely speed up; the eager one gives the same fp32 scores (difference ~5e-8)
# and ran int8 x1.7-2.2 faster than fp32 on a MiniLM-L6 cross-encoder (SDPA: x1.3-1.5), 2 threads.
DEFAULT_ATTENTION = "eager"
OPSET = 17
# Bump when the export code changes in a way the recipe's fields do not describe.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class ExportRecipe:
    """How an ONNX file is made. Every field changes the file, so every field is in its cache key."""

    head: Head = "classifier"
    attention: str = DEFAULT_ATTENTION
    opset: int = OPSET
    int8: bool = False
    per_channel: bool = True  # int8 scales per output channel (else one per tensor)
    cutoff_layer: int | None = None  # keep only the first N transformer layers

    @property
    def quantization(self) -> str:
        return ("int8-per-channel" if self.per_channel else "int8-per-tensor") if self.int8 else "fp32"

    @property
    def key(self) -> str:
        layers = f"-L{self.cutoff_layer}" if self.cutoff_layer is not None else ""
        quant = self.quantization.replace("-per-channel", "pc").replace("-per-tensor", "pt")
        return f"{self.head}-{self.attention}-opset{self.opset}-{quant}{layers}-v{RECIPE_VERSION}"

    def as_fp32(self) -> ExportRecipe:
        return replace(self, int8=False, per_channel=True)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "quantization": self.quantization, "recipe_version": RECIPE_VERSION}


def encoder_layers(model: Any) -> Any:
    """The module list of a transformer's layers (BERT/XLM-R `encoder.layer`, ModernBERT `layers`)."""
    base = model.base_model
    for path in (("encoder", "layer"), ("layers",), ("encoder", "layers")):
        found: Any = base
        for name in path:
            found = getattr(found, name, None)
        if found is not None:
            return found
    raise ValueError(f"{type(model).__name__}: found no list of transformer layers to cut")


def keep_first_layers(model: Any, layers: int) -> Any:
    """`model` with only its first `layers` transformer layers; its pooler and head stay as they are."""
    stack = encoder_layers(model)
    if not 0 < layers < len(stack):
        raise ValueError(
            f"cannot cut to {layers} layers: the model has {len(stack)} (use 1 to {len(stack) - 1})"
        )
    parent = model.base_model.encoder if hasattr(model.base_model, "encoder") else model.base_model
    name = "layer" if hasattr(parent, "layer") else "layers"
    setattr(parent, name, stack[:layers])
    model.config.num_hidden_layers = layers
    return model


def export_onnx(
    folder: Path,
    target: Path,
    *,
    head: Head = "classifier",
    trust_remote_code: bool = False,
    attention: str = DEFAULT_ATTENTION,
    opset: int = OPSET,
    cutoff_layer: int | None = None,
) -> Path:
    """`torch.onnx.export`, dynamic in batch and sequence length: a sequence-classification model's logits
    (`classifier`, cross-encoders) or a bare encoder's last hidden state (`encoder`, bi-encoders), traced
    with the `attention` implementation, optionally cut to its first `cutoff_layer` layers."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    loader = AutoModelForSequenceClassification if head == "classifier" else AutoModel
    model = loader.from_pretrained(
        str(folder), trust_remote_code=trust_remote_code, attn_implementation=attention
    ).eval()
    if cutoff_layer is not None:
        keep_first_layers(model, cutoff_layer)
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
            opset_version=opset,
            dynamo=False,
        )
    return target


def quantize_int8(source: Path, target: Path, *, per_channel: bool = True) -> Path:
    """Dynamic int8 quantization of the weights (MatMul and the embedding Gather): about a quarter of the
    fp32 size. `per_channel`: one scale per output channel (the default: per-tensor scales moved
    all-MiniLM-L6-v2 embeddings to cosine 0.95 of fp32, per-channel ones kept them above 0.98), else one
    per weight tensor."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns about optional pre-processing
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)
    return target


def cache_entry(folder: Path, cache_dir: Path, recipe: ExportRecipe) -> Path:
    """The cache folder of `folder`'s export under `recipe`: a new recipe or new weights, a new entry."""
    return cache_dir / f"{folder.name}-{recipe.key}-{content_key(folder)}"


def cached_onnx(
    folder: Path,
    int8: bool,
    cache_dir: Path,
    *,
    head: Head = "classifier",
    trust_remote_code: bool = False,
    per_channel: bool = True,
    attention: str = DEFAULT_ATTENTION,
    cutoff_layer: int | None = None,
) -> Path:
    """The exported (and quantized) model from the cache, made once per model content and recipe (an int8
    entry quantizes its fp32 sibling's file). Written to a temporary folder and renamed into place: a crash
    mid-export, or two workers exporting at once, leave no half file."""
    recipe = ExportRecipe(head, attention, OPSET, int8, per_channel, cutoff_layer)
    entry = cache_entry(folder, cache_dir, recipe)
    wanted = entry / (ONNX_INT8 if int8 else ONNX_FP32)
    if wanted.is_file():
        return wanted
    if int8:
        source = cached_onnx(
            folder,
            False,
            cache_dir,
            head=head,
            trust_remote_code=trust_remote_code,
            attention=attention,
            cutoff_layer=cutoff_layer,
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    try:
        if int8:
            quantize_int8(source, work / ONNX_INT8, per_channel=per_channel)
        else:
            export_onnx(
                folder,
                work / ONNX_FP32,
                head=head,
                trust_remote_code=trust_remote_code,
                attention=attention,
                opset=OPSET,
                cutoff_layer=cutoff_layer,
            )
        record = {"model": str(folder), **recipe.to_json()}
        (work / RECIPE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        entry.mkdir(parents=True, exist_ok=True)
        for produced in sorted(work.iterdir(), key=lambda p: p.name == wanted.name):  # the model last
            os.replace(produced, entry / produced.name)
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
    layerwise idea of the bge-reranker family; measure a model not trained layerwise before use)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), trust_remote_code=trust_remote_code
    )
    count = len(encoder_layers(model))
    if not 0 < layers <= count:
        raise ValueError(f"cannot keep {layers} layers: {source} has {count} encoder layers")
    if layers < count:
        keep_first_layers(model, layers)
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
    per_channel: bool = True,
    attention: str = DEFAULT_ATTENTION,
    cutoff_layers: Sequence[int] = (),
) -> Path:
    """A self-contained ONNX model folder (no torch weights) that `make_runner` runs with onnxruntime; its
    onnx_export.json says how the file was made. This is what `hybrid-rerank export-reranker` writes.
    `cutoff_layers`: also a file of the model cut to each of those first-N layers (model_int8.L4.onnx),
    which RERANK_CUTOFF_LAYER then runs (a folder without torch weights has nothing else to cut)."""
    target.mkdir(parents=True, exist_ok=True)
    recipe = ExportRecipe("classifier", attention, OPSET, int8, per_channel, layers)
    with tempfile.TemporaryDirectory() as work:
        model = source
        if layers is not None:
            model = truncate_layers(
                source, Path(work) / "truncated", layers, trust_remote_code=trust_remote_code
            )
        fp32 = export_onnx(
            model, Path(work) / ONNX_FP32, trust_remote_code=trust_remote_code, attention=attention
        )
        produced = quantize_int8(fp32, Path(work) / ONNX_INT8, per_channel=per_channel) if int8 else fp32
        for stale in [target / ONNX_FP32, target / ONNX_INT8, *target.glob("model*.L*.onnx")]:
            stale.unlink(missing_ok=True)
        shutil.move(str(produced), target / produced.name)
        for layer in cutoff_layers:
            cut = export_onnx(
                model,
                Path(work) / f"L{layer}.onnx",
                trust_remote_code=trust_remote_code,
                attention=attention,
                cutoff_layer=layer,
            )
            if int8:
                cut = quantize_int8(cut, Path(work) / f"L{layer}-int8.onnx", per_channel=per_channel)
            shutil.move(str(cut), target / produced.name.replace(".onnx", f".L{layer}.onnx"))
        for name in COMPANION_FILES:
            if (model / name).is_file():
                shutil.copy2(model / name, target / name)
            elif (source / name).is_file():
                shutil.copy2(source / name, target / name)
        record = recipe.to_json() | save_backend_tokenizer(model, target, trust_remote_code=trust_remote_code)
        record["cutoff_layer_files"] = list(cutoff_layers)
        (target / RECIPE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return target / (ONNX_INT8 if int8 else ONNX_FP32)


def save_backend_tokenizer(source: Path, target: Path, *, trust_remote_code: bool = False) -> dict[str, str]:
    """target/tokenizer.json as the pipeline transformers runs for `source` (some tokenizer classes replace
    parts of their saved tokenizer.json at load), so a worker reads it with `tokenizers` alone, without
    transformers and torch; the mark for onnx_export.json, or {} for a tokenizer without one."""
    from transformers import AutoTokenizer

    from hybrid_rerank.workers.runtime.pair_tokens import TOKENIZER_MARK

    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return {}
    backend.no_truncation()
    backend.no_padding()
    (target / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
    return dict([TOKENIZER_MARK])

"""Fast cross-encoder inference: the model runners behind the reranking core.

Pairs are tokenized once, sorted by length and packed into batches up to a token budget (so a batch of short
pairs is wide and a batch of long pairs narrow), each batch padded only to its own longest pair, and the
scores put back in the input order. Runners:

- `torch`: the Hugging Face model in fp32, the reference.
- `torch-bf16`: the same under bf16 autocast, on CPUs with AVX512-BF16/AMX and on GPUs.
- `onnx` / `onnx-int8`: the model exported once with `torch.onnx.export` and run with onnxruntime directly
  (sentence-transformers' own onnx backend needs `optimum`, which pins transformers below what
  sentence-transformers 6 needs), optionally with dynamic int8 quantization of the weights. Exports are cached
  on disk keyed by the model's content, so a worker restart reuses them.

A model folder that carries only an ONNX file (the shipped compact reranker) runs that file with onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

RunnerKind = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
Head = Literal["classifier", "encoder"]
OUTPUT_NAMES: dict[str, str] = {"classifier": "logits", "encoder": "last_hidden_state"}
RUNNER_KINDS: tuple[str, ...] = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model_int8.onnx"
TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class PairRunner(Protocol):
    """Logits for one padded batch of tokenized pairs."""

    description: str

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


def bf16_available() -> bool:
    """Whether bf16 matrix work runs natively: a GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (elsewhere bf16 autocast is emulated and slower than fp32)."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def token_budget_batches(lengths: Sequence[int], token_budget: int, max_batch: int) -> list[list[int]]:
    """Indices grouped longest first into batches whose padded size (rows x longest row) stays within
    `token_budget`, at most `max_batch` rows each; a row longer than the budget gets a batch of its own."""
    if token_budget < 1 or max_batch < 1:
        raise ValueError("token_budget and max_batch must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        widest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= max_batch or (len(current) + 1) * widest > token_budget):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


Pool = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (model output, attention mask) -> one row per input


def first_logit(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return output.reshape(len(mask), -1)[:, 0]


def mean_pool(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token states under the attention mask (sentence-transformers' mean pooling)."""
    weights = mask[:, :, None].astype(np.float32)
    return np.asarray((output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None))


def cls_pool(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(output[:, 0, :])


def encoded_rows(
    encoded: Mapping[str, Sequence[Sequence[int]]], count: int
) -> list[dict[str, Sequence[int]]]:
    """A tokenizer's batch output (unpadded) as one row per input, with the ids `run_batched` reads."""
    names = [name for name in ("input_ids", "token_type_ids") if name in encoded]
    return [{name: encoded[name][i] for name in names} for i in range(count)]


def run_batched(
    runner: PairRunner,
    encoded: Sequence[Mapping[str, Sequence[int]]],
    token_budget: int,
    max_batch: int,
    pad_id: int,
    pool: Pool = first_logit,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """`pool` of the model's output for each encoded input, in the input order (one logit per pair by
    default). `progress(done)` is called after each batch."""
    lengths = [len(e["input_ids"]) for e in encoded]
    rows: list[np.ndarray | None] = [None] * len(encoded)
    done = 0
    for batch in token_budget_batches(lengths, token_budget, max_batch):
        width = max(lengths[i] for i in batch)
        arrays = {name: np.zeros((len(batch), width), dtype=np.int64) for name in INPUT_NAMES}
        arrays["input_ids"].fill(pad_id)
        for row, index in enumerate(batch):
            n = lengths[index]
            arrays["input_ids"][row, :n] = encoded[index]["input_ids"]
            arrays["attention_mask"][row, :n] = 1
            if "token_type_ids" in encoded[index]:
                arrays["token_type_ids"][row, :n] = encoded[index]["token_type_ids"]
        pooled = pool(runner(arrays), arrays["attention_mask"])
        for row, index in enumerate(batch):
            rows[index] = pooled[row]
        done += len(batch)
        if progress is not None:
            progress(done)
    if not rows:
        return np.zeros((0,), dtype=np.float32)
    return np.stack([r for r in rows if r is not None]).astype(np.float32, copy=False)


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


def has_torch_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TORCH_WEIGHTS)


def bundled_onnx(folder: Path) -> Path | None:
    """The ONNX file of a folder that ships one (int8 first), or None."""
    for name in (ONNX_INT8, ONNX_FP32):
        if (folder / name).is_file():
            return folder / name
    return None


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


class TorchRunner:
    def __init__(
        self,
        folder: Path,
        *,
        bf16: bool,
        device: str | None,
        threads: int | None,
        trust_remote_code: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                str(folder), trust_remote_code=trust_remote_code
            )
            .eval()
            .to(self.device)
        )
        self.bf16 = bf16
        self.description = f"torch {'bf16 autocast' if bf16 else 'fp32'} on {self.device}"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(**inputs).logits
        return np.asarray(logits.float().cpu().numpy())


class OnnxRunner:
    def __init__(self, path: Path, *, threads: int | None, output: str = "logits") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.output = output
        self.description = f"onnxruntime {path.name}"

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: value for name, value in batch.items() if name in self.inputs}
        return np.asarray(self.session.run([self.output], feed)[0])


def make_runner(
    folder: Path,
    kind: RunnerKind,
    *,
    cache_dir: Path,
    device: str | None = None,
    threads: int | None = None,
    trust_remote_code: bool = False,
) -> PairRunner:
    """The runner for `kind`; `auto` runs a shipped ONNX file when the folder has no torch weights, else
    torch fp32."""
    if kind not in RUNNER_KINDS:
        raise ValueError(f"unknown rerank backend {kind!r}: use one of {', '.join(RUNNER_KINDS)}")
    shipped = bundled_onnx(folder)
    if not has_torch_weights(folder):
        if shipped is None:
            raise FileNotFoundError(
                f"{folder} has neither torch weights ({', '.join(TORCH_WEIGHTS)}) nor an ONNX file"
            )
        if kind not in ("auto", "onnx", "onnx-int8"):
            raise ValueError(f"{folder} ships only {shipped.name}: use RERANK_BACKEND=auto or onnx")
        return OnnxRunner(shipped, threads=threads)
    if kind in ("onnx", "onnx-int8"):
        path = cached_onnx(folder, kind == "onnx-int8", cache_dir, trust_remote_code=trust_remote_code)
        return OnnxRunner(path, threads=threads)
    return TorchRunner(
        folder, bf16=kind == "torch-bf16", device=device, threads=threads, trust_remote_code=trust_remote_code
    )


def load_tokenizer(folder: Path, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)


# Files a shipped ONNX folder keeps beside the model: how to tokenize, what the model is, how to use it.
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

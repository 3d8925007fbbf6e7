"""The model runners behind the reranking core:

- `torch`: the Hugging Face model in fp32, the reference.
- `torch-bf16`: the same under bf16 autocast, on CPUs with AVX512-BF16/AMX and on GPUs.
- `auto` with torch weights: fp32 on CPU, fp16/bf16 autocast on a GPU (`device.torch_precision`).
- `onnx` / `onnx-int8`: the model exported once with `torch.onnx.export` (see `onnx_export`) and run with
  onnxruntime directly, optionally with dynamic int8 quantization of the weights; on the CUDA provider when
  onnxruntime has one.

A model folder that carries only an ONNX file (the shipped compact reranker) runs that file with onnxruntime,
and torch is then never imported. The torch runner passes a model only the inputs its forward names, so
architectures without token types (ModernBERT) read the same batches as BERT.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_rerank.workers.errors import ModelLoadError
from hybrid_rerank.workers.runtime.batching import PairRunner
from hybrid_rerank.workers.runtime.device import (
    Precision,
    cpu_has_bf16,
    cuda_has_bf16,
    onnx_providers,
    torch_device,
    torch_precision,
)
from hybrid_rerank.workers.runtime.models import (
    TORCH_WEIGHTS,
    bundled_onnx,
    has_torch_weights,
    layer_onnx,
    quiet_transformers,
)
from hybrid_rerank.workers.runtime.onnx_export import cached_onnx, keep_first_layers

RunnerKind = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
RUNNER_KINDS: tuple[str, ...] = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
TORCH_KINDS: tuple[str, ...] = ("auto", "torch", "torch-bf16")


def bf16_available() -> bool:
    """Whether bf16 matrix work runs natively: a GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (elsewhere bf16 autocast is emulated and slower than fp32)."""
    import torch

    if torch.cuda.is_available():
        return cuda_has_bf16()
    return cpu_has_bf16()


def torch_placement(backend: str, device: str | None, *, llm: bool) -> tuple[str, Precision]:
    """(device, precision) for a torch runner on this machine."""
    import torch

    chosen = torch_device(device, torch.cuda.is_available())
    on_gpu = chosen.startswith("cuda")
    return chosen, torch_precision(
        backend, chosen, llm=llm, cuda_bf16=on_gpu and cuda_has_bf16(), cpu_bf16=cpu_has_bf16()
    )


def load_torch_model(
    loader: Any, folder: Path, *, device: str, threads: int | None, trust_remote_code: bool, **options: Any
) -> Any:
    """`loader.from_pretrained(folder)` in eval mode on `device`, torch limited to `threads` threads."""
    import torch

    quiet_transformers()
    if threads:
        torch.set_num_threads(threads)
    model: Any = loader.from_pretrained(str(folder), trust_remote_code=trust_remote_code, **options)
    return model.eval().to(device)


class TorchRunner:
    def __init__(
        self,
        folder: Path,
        *,
        precision: Precision = "fp32",
        device: str | None,
        threads: int | None,
        trust_remote_code: bool = False,
        cutoff_layer: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_torch_model(
            AutoModelForSequenceClassification,
            folder,
            device=self.device,
            threads=threads,
            trust_remote_code=trust_remote_code,
        )
        if cutoff_layer is not None:
            keep_first_layers(self.model, cutoff_layer)
        self.accepted = set(inspect.signature(self.model.forward).parameters)
        self.precision = precision
        mode = "fp32" if precision == "fp32" else f"{precision} autocast"
        layers = f", first {cutoff_layer} layers" if cutoff_layer is not None else ""
        self.description = f"torch {mode} on {self.device}{layers}"
        self.runs = 0  # model calls so far (the scorer's warm-up at load is the first)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.runs += 1
        torch = self._torch
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items() if k in self.accepted}
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        half = torch.bfloat16 if self.precision == "bf16" else torch.float16
        autocast = torch.autocast(device_type, dtype=half, enabled=self.precision != "fp32")
        with torch.inference_mode(), autocast:
            logits = self.model(**inputs).logits
        return np.asarray(logits.float().cpu().numpy())


class OnnxRunner:
    def __init__(
        self, path: Path, *, threads: int | None, output: str = "logits", device: str | None = None
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = onnx_providers(ort.get_available_providers(), device)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.output = output
        self.provider = self.session.get_providers()[0]
        self.description = f"onnxruntime {path.name} on {self.provider}"
        self.runs = 0  # model calls so far (the scorer's warm-up at load is the first)

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.runs += 1
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
    cutoff_layer: int | None = None,
) -> PairRunner:
    """The runner for `kind`; `auto` runs a shipped ONNX file when the folder has no torch weights, else
    torch (fp32 on CPU). `cutoff_layer` keeps the first N layers: torch cuts the loaded model, an export
    is made of the cut model, and a folder without torch weights needs a shipped per-layer file."""
    if kind not in RUNNER_KINDS:
        raise ValueError(f"unknown rerank backend {kind!r}: use one of {', '.join(RUNNER_KINDS)}")
    shipped = bundled_onnx(folder) if cutoff_layer is None else layer_onnx(folder, cutoff_layer)
    if not has_torch_weights(folder):
        if shipped is None and cutoff_layer is not None and bundled_onnx(folder) is not None:
            raise ModelLoadError(
                f"RERANK_CUTOFF_LAYER={cutoff_layer}: {folder} ships ONNX of all its layers and no torch "
                f"weights to cut; add model_int8.L{cutoff_layer}.onnx (`export_folder(..., cutoff_layers="
                f"[{cutoff_layer}])`), point RERANK_MODEL at the torch model, or unset RERANK_CUTOFF_LAYER"
            )
        if shipped is None:
            raise FileNotFoundError(
                f"{folder} has neither torch weights ({', '.join(TORCH_WEIGHTS)}) nor an ONNX file"
            )
        if kind not in ("auto", "onnx", "onnx-int8"):
            raise ValueError(f"{folder} ships only {shipped.name}: use RERANK_BACKEND=auto or onnx")
        return OnnxRunner(shipped, threads=threads, device=device)
    if kind in ("onnx", "onnx-int8"):
        path = cached_onnx(
            folder,
            kind == "onnx-int8",
            cache_dir,
            trust_remote_code=trust_remote_code,
            cutoff_layer=cutoff_layer,
        )
        return OnnxRunner(path, threads=threads, device=device)
    chosen, precision = torch_placement(kind, device, llm=False)
    return TorchRunner(
        folder,
        precision=precision,
        device=chosen,
        threads=threads,
        trust_remote_code=trust_remote_code,
        cutoff_layer=cutoff_layer,
    )

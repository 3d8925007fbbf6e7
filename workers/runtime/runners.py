"""The model runners behind the reranking core:

- `torch`: the Hugging Face model in fp32, the reference.
- `torch-bf16`: the same under bf16 autocast, on CPUs with AVX512-BF16/AMX and on GPUs.
- `onnx` / `onnx-int8`: the model exported once with `torch.onnx.export` (see `onnx_export`) and run with
  onnxruntime directly, optionally with dynamic int8 quantization of the weights.

A model folder that carries only an ONNX file (the shipped compact reranker) runs that file with onnxruntime,
and torch is then never imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from hybrid_rerank.workers.runtime.batching import PairRunner
from hybrid_rerank.workers.runtime.models import TORCH_WEIGHTS, bundled_onnx, has_torch_weights
from hybrid_rerank.workers.runtime.onnx_export import cached_onnx

RunnerKind = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
RUNNER_KINDS: tuple[str, ...] = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")


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

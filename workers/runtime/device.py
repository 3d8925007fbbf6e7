"""Where a rerank model runs and at what precision: pure choice functions (tested with given provider
lists and capabilities) and the probes that feed them on this machine.

- ONNX: onnxruntime's CUDA provider when it reports one (the onnxruntime-gpu wheel) and RERANK_DEVICE does not
  say cpu, with the CPU provider behind it for the operators CUDA lacks (dynamic int8 ones among them).
- torch: `cuda` when torch sees a GPU (or RERANK_DEVICE says so), with fp16/bf16 there; fp32 on CPU for
  cross-encoders (the reference), bf16 for LLM rerankers on CPUs with native bf16 (AVX512-BF16 or AMX),
  whose weights would otherwise take twice the memory for little gain in scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
Precision = Literal["fp32", "bf16", "fp16"]


def onnx_providers(available: Sequence[str], device: str | None) -> list[str]:
    """The onnxruntime providers to ask for, best first: CUDA (then CPU) when `available` has it and `device`
    is unset or a cuda device, else CPU alone."""
    wants_cpu = device is not None and not device.startswith("cuda")
    if CUDA_PROVIDER in available and not wants_cpu:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def torch_device(requested: str | None, cuda_available: bool) -> str:
    """RERANK_DEVICE when set, else cuda when torch sees a GPU, else cpu."""
    if requested:
        return requested
    return "cuda" if cuda_available else "cpu"


def torch_precision(backend: str, device: str, *, llm: bool, cuda_bf16: bool, cpu_bf16: bool) -> Precision:
    """The precision a torch runner uses. `torch` is fp32 everywhere (the reference), `torch-bf16` bf16;
    `auto` picks fp16/bf16 on a GPU, and on CPU fp32 for cross-encoders and bf16 for LLMs where the CPU has
    native bf16."""
    if backend == "torch-bf16":
        return "bf16"
    if backend == "torch":
        return "fp32"
    if device.startswith("cuda"):
        return "bf16" if cuda_bf16 else "fp16"
    return "bf16" if llm and cpu_bf16 else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively (elsewhere bf16 is emulated and slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def torch_dtype(precision: Precision) -> object:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

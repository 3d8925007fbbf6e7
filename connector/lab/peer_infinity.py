"""Infinity (infinity-emb) as the peer of `bench peer`: its environment (scripts/peer-infinity, never our
.venv), the model folders it reads, the documents cut to the window beforehand, and one measurement in a fresh
process of its own Python (peer_infinity_driver.py).

Infinity 0.0.78 has no max-length setting for rerankers: its torch engine truncates at the tokenizer's
`model_max_length`, so each window gets a copy of the folder with that value set; its optimum engine
truncates at `max_position_embeddings` (512), so every engine is handed documents already cut to the window
(at a word boundary, so each engine's own tokenizer sees a prefix of the same tokens). Its optimum engine
needs an ONNX folder made beforehand: `optimum-cli export onnx`, then `optimum-cli onnxruntime quantize
--avx512_vnni --per_channel`, which is what its documentation tells a user to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO_ROOT / "scripts" / "peer-infinity"
DRIVER = Path(__file__).resolve().with_name("peer_infinity_driver.py")
PEER_ENGINES = ("torch", "optimum", "http")
# Infinity copies a folder's files it needs to read a model; these are the ones a cross-encoder folder holds.
TOKENIZER_CONFIG = "tokenizer_config.json"


class PeerSetupError(RuntimeError):
    """The peer's environment or model folders could not be made; the message says what to do."""


def peer_python(work_dir: Path, log: Callable[[str], None]) -> Path:
    """Install Infinity's environment if needed (scripts/peer-infinity: idempotent, cached) and return its
    Python."""
    if not SETUP_SCRIPT.is_file():
        raise PeerSetupError(
            f"{SETUP_SCRIPT} is missing: `bench peer` runs from a checkout of the repository"
        )
    log(f"peer environment: {SETUP_SCRIPT.relative_to(REPO_ROOT)} (installs once into {work_dir / 'venv'})")
    done = subprocess.run(
        [str(SETUP_SCRIPT)],
        env={**os.environ, "PEER_INFINITY_DIR": str(work_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PeerSetupError(f"scripts/peer-infinity failed:\n{done.stderr.strip()[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def folder_key(folder: Path) -> str:
    """Which model folder the peer's copies were made from: its path and its weights' and config's sizes and
    modification times (a retrained folder gets new copies)."""
    hasher = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            hasher.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return hasher.hexdigest()[:12]


def with_max_length(source: Path, target: Path, max_length: int) -> Path:
    """A copy of `source` whose tokenizer truncates at `max_length` (Infinity reads no other setting)."""
    if not (target / TOKENIZER_CONFIG).is_file():
        staging = Path(tempfile.mkdtemp(prefix=target.name, dir=target.parent))
        shutil.copytree(source, staging, dirs_exist_ok=True)
        config_path = staging / TOKENIZER_CONFIG
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        config["model_max_length"] = max_length
        config_path.write_text(json.dumps(config, indent=2))
        staging.rename(target)
    return target


def run_checked(command: Sequence[str], what: str, env: dict[str, str]) -> None:
    done = subprocess.run(list(command), env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PeerSetupError(f"{what} failed ({' '.join(command)}):\n{done.stderr.strip()[-3000:]}")


def peer_env(home: Path) -> dict[str, str]:
    """Offline, no usage statistics, and a Hugging Face cache of the folder's own: Infinity caches the
    optimised ONNX file under the cache by the model's *path*, which is "." for every folder it reads."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
    }


def int8_onnx_folder(python: Path, source: Path, target: Path, log: Callable[[str], None]) -> Path:
    """The folder Infinity's optimum engine reads: optimum's export, then its avx512_vnni per-channel int8
    quantization (made once per model folder)."""
    if (target / "model_quantized.onnx").is_file():
        return target
    bin_dir = python.parent
    staging = Path(tempfile.mkdtemp(prefix="onnx-", dir=target.parent))
    env = peer_env(staging.resolve() / ".hf-home")
    log(
        f"peer: exporting {source} to ONNX with optimum-cli, then quantizing it "
        "(int8, avx512_vnni, per channel)"
    )
    run_checked(
        [str(bin_dir / "optimum-cli"), "export", "onnx", "--library-name", "transformers", "--model",
         str(source), "--task", "text-classification", str(staging / "fp32")],
        "optimum-cli export onnx",
        env,
    )  # fmt: skip
    run_checked(
        [str(bin_dir / "optimum-cli"), "onnxruntime", "quantize", "--onnx_model", str(staging / "fp32"),
         "--avx512_vnni", "--per_channel", "-o", str(staging / "int8")],
        "optimum-cli onnxruntime quantize",
        env,
    )  # fmt: skip
    (staging / "int8").rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def peer_folders(
    python: Path, model: Path, work_dir: Path, max_lengths: Sequence[int], log: Callable[[str], None]
) -> dict[tuple[str, int], Path]:
    """(engine, max_length) -> the folder that engine reads at that window; made once, then reused."""
    root = work_dir / "models" / f"{model.name}-{folder_key(model)}"
    root.mkdir(parents=True, exist_ok=True)
    int8 = int8_onnx_folder(python, model, root / "onnx-int8", log)
    folders: dict[tuple[str, int], Path] = {}
    for length in max_lengths:
        folders["torch", length] = with_max_length(model, root / f"torch-{length}", length)
        onnx = with_max_length(int8, root / f"onnx-int8-{length}", length)
        folders["optimum", length] = folders["http", length] = onnx
    return folders


def cut_to_window(tokenizer: Any, query: str, texts: Sequence[str], max_length: int) -> list[str]:
    """Each text cut so that (query, text) fits `max_length` tokens under longest-first truncation, at the
    last whole word kept: a text that fits is returned whole, a cut one is a prefix of the original."""
    encoded = tokenizer(
        [query] * len(texts),
        list(texts),
        truncation="longest_first",
        max_length=max_length,
        return_offsets_mapping=True,
    )
    cut: list[str] = []
    for index, text in enumerate(texts):
        offsets = encoded["offset_mapping"][index]
        ends = [end for (_, end), seq in zip(offsets, encoded.sequence_ids(index), strict=True) if seq == 1]
        end = max(ends, default=0)
        if not text[end:].strip():
            cut.append(text)
            continue
        if end > 0 and text[end - 1].isalnum() and text[end].isalnum():  # the last word was split: drop it
            end = max(text.rfind(" ", 0, end), 0)
        cut.append(text[:end].rstrip())
    return cut


def run_peer(
    python: Path,
    engine: str,
    folder: Path,
    queries: Sequence[str],
    documents: Sequence[Sequence[str]],
    *,
    batch_size: int,
    port: int,
    timeout_s: float,
) -> dict[str, Any]:
    """One measurement in a fresh process of the peer's Python: the driver's result (description,
    latency_ms, scores, peak_rss_mib)."""
    if engine not in PEER_ENGINES:
        raise ValueError(f"unknown peer engine {engine!r}; choose from {', '.join(PEER_ENGINES)}")
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as scratch:
        job_path, result_path = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job = {
            "engine": engine,
            "folder": str(folder.resolve()),
            "batch_size": batch_size,
            "port": port,
            "queries": list(queries),
            "documents": [list(d) for d in documents],
        }
        job_path.write_text(json.dumps(job))
        try:
            done = subprocess.run(
                [str(python), str(DRIVER), str(job_path), str(result_path)],
                env=peer_env(folder.resolve() / ".hf-home"),  # absolute: the driver changes directory
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as expired:
            raise PeerSetupError(f"Infinity ({engine}) did not finish within {timeout_s:.0f} s") from expired
        if done.returncode != 0 or not result_path.is_file():
            server_log = result_path.with_suffix(".server.log")
            tail = server_log.read_text()[-2000:] if server_log.is_file() else ""
            raise PeerSetupError(
                f"Infinity ({engine}) failed with exit status {done.returncode}:\n"
                f"{done.stderr.strip()[-3000:]}\n{tail}"
            )
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result

"""Scorer kinds behind one interface: sequence-classification cross-encoders of three architectures (BERT,
XLM-RoBERTa, ModernBERT), each a tiny random model with a tokenizer trained on the demo corpus, through the
real loading code and every runner; the kind read from config.json and its errors; device choices.

Stated tolerances, against torch fp32 on the same 24 demo pairs: ONNX fp32 within 1e-4; bf16 autocast within
0.05 and Spearman >= 0.95; ONNX int8 within 0.1 and Spearman >= 0.9 (measured: fp32 < 1e-5, bf16 <= 0.014
and >= 0.994, int8 0.027-0.063 and 0.907-0.997 over seeds 0-1 of XLM-R and ModernBERT)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.workers.errors import ConfigurationError, ModelLoadError
from hybrid_rerank.workers.factory import make_scorer
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.runtime.device import onnx_providers, torch_device, torch_precision
from hybrid_rerank.workers.runtime.kinds import (
    MissingTokenizerError,
    ModelKindError,
    RemoteCodeError,
    architecture_kind,
)
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from hybrid_rerank.workers.settings import load_worker_settings
from tests.tiny_models import (
    build_tiny_bert_cross_encoder,
    build_tiny_llm_reranker,
    build_tiny_modernbert_cross_encoder,
    build_tiny_xlmr_cross_encoder,
    demo_texts,
)

QUERY = "why does the moon show phases"
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "bert": build_tiny_bert_cross_encoder,
    "xlm-roberta": build_tiny_xlmr_cross_encoder,
    "modernbert": build_tiny_modernbert_cross_encoder,
}
TOKENIZER_CLASSES: dict[str, str | None] = {
    "bert": "BertTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
    "modernbert": None,  # the generic fast tokenizer, whose class name changed with transformers 5
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llm_reranker(tmp_path_factory.mktemp("kinds-llm") / "qwen3", "qwen3")


def candidates(count: int = 24) -> list[Candidate]:
    return [Candidate(str(i), text) for i, text in enumerate(demo_texts()[:count])]


def scores(scorer: CrossEncoderScorer, items: list[Candidate]) -> np.ndarray:
    return np.array([s.score for s in scorer.score(QUERY, items)])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


@pytest.mark.parametrize("architecture", list(BUILDERS))
def test_each_architecture_loads_reads_words_and_scores_a_pair_alike_alone_and_padded(
    models: dict[str, Path], architecture: str
) -> None:
    scorer = CrossEncoderScorer(str(models[architecture]), max_length=128, backend="torch")
    loaded = scorer.load()
    assert loaded.kind == "cross-encoder" and loaded.prompt is None
    assert loaded.tokenizer.is_fast
    expected = TOKENIZER_CLASSES[architecture]
    assert expected is None or type(loaded.tokenizer).__name__ == expected
    ids = loaded.tokenizer(demo_texts()[0], add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.unk_token_id not in ids  # the trained vocabulary reads the corpus
    items = candidates(8)
    together = scores(scorer, items)
    alone = np.array([scores(scorer, [c])[0] for c in items])
    assert together == pytest.approx(alone, abs=1e-5)
    assert together.std() > 0.02  # the model reads the text: the scores differ between documents


@pytest.mark.parametrize("architecture", list(BUILDERS))
def test_the_same_pairs_through_every_runner_agree_within_the_stated_tolerances(
    models: dict[str, Path], architecture: str, tmp_path: Path
) -> None:
    folder = models[architecture]
    items = candidates()
    by_runner = {
        backend: scores(
            CrossEncoderScorer(str(folder), max_length=128, backend=backend, cache_dir=tmp_path), items
        )
        for backend in ("torch", "torch-bf16", "onnx", "onnx-int8")
    }
    reference = by_runner["torch"]
    assert by_runner["onnx"] == pytest.approx(reference, abs=1e-4)
    assert np.abs(by_runner["torch-bf16"] - reference).max() <= 0.05
    assert spearman(by_runner["torch-bf16"], reference) >= 0.95
    assert np.abs(by_runner["onnx-int8"] - reference).max() <= 0.1
    assert spearman(by_runner["onnx-int8"], reference) >= 0.9
    assert not np.allclose(by_runner["onnx-int8"], reference, atol=1e-6)  # really quantized
    exported = sorted(p.name for p in tmp_path.rglob("*.onnx"))
    assert exported == ["model.onnx", "model_int8.onnx"]


def test_the_kind_comes_from_the_config_and_a_setting_overrides_it(
    models: dict[str, Path], llm_dir: Path
) -> None:
    assert architecture_kind({"architectures": ["XLMRobertaForSequenceClassification"]}) == "cross-encoder"
    assert architecture_kind({"architectures": ["GemmaForCausalLM"]}) == "llm"
    assert architecture_kind({"architectures": ["LayerWiseMiniCPMForCausalLM"]}) == "llm"
    assert architecture_kind({"model_type": "bert"}) is None
    assert CrossEncoderScorer(str(llm_dir), max_length=256, backend="torch").load().kind == "llm"
    with pytest.raises(ModelKindError, match=r"holds a causal language model.*RERANK_KIND=llm"):
        CrossEncoderScorer(str(llm_dir), kind="cross-encoder").load()
    with pytest.raises(
        ModelKindError, match=r"sequence-classification cross-encoder.*RERANK_KIND=cross-encoder"
    ):
        CrossEncoderScorer(str(models["xlm-roberta"]), kind="llm").load()
    with pytest.raises(ModelLoadError, match="unknown rerank kind 'colbert'"):
        CrossEncoderScorer("x", kind="colbert")  # type: ignore[arg-type]


def copy_of(
    folder: Path, target: Path, *, drop: tuple[str, ...] = (), config: dict[str, object] | None = None
) -> Path:
    shutil.copytree(folder, target)
    for name in drop:
        (target / name).unlink(missing_ok=True)
    if config is not None:
        merged = json.loads((target / "config.json").read_text(encoding="utf-8")) | config
        (target / "config.json").write_text(json.dumps(merged), encoding="utf-8")
    return target


def test_a_folder_that_cannot_load_says_why_and_what_to_do(models: dict[str, Path], tmp_path: Path) -> None:
    no_tokenizer = copy_of(
        models["xlm-roberta"],
        tmp_path / "no-tokenizer",
        drop=("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
    )
    with pytest.raises(MissingTokenizerError, match=r"no tokenizer.*save_pretrained"):
        CrossEncoderScorer(str(no_tokenizer), backend="torch").load()
    remote_code = copy_of(
        models["bert"],
        tmp_path / "remote-code",
        config={"model_type": "minicpm-layerwise", "auto_map": {"AutoModelForCausalLM": "m.LayerWise"}},
    )
    with pytest.raises(RemoteCodeError, match="TRUST_REMOTE_CODE=true") as raised:
        CrossEncoderScorer(str(remote_code)).load()
    assert "could not load rerank model" in str(raised.value)  # the model and where it came from, too
    headless = copy_of(models["bert"], tmp_path / "headless", config={"architectures": ["BertModel"]})
    with pytest.raises(ModelKindError, match="neither a sequence-classification head"):
        CrossEncoderScorer(str(headless)).load()


def test_onnx_takes_the_cuda_provider_when_onnxruntime_has_it() -> None:
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(gpu_build, None) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(gpu_build, "cuda:1") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers(gpu_build, "cpu") == ["CPUExecutionProvider"]  # RERANK_DEVICE=cpu wins
    assert onnx_providers(["AzureExecutionProvider", "CPUExecutionProvider"], None) == [
        "CPUExecutionProvider"
    ]


def test_torch_runs_fp16_or_bf16_on_a_gpu_and_fp32_cross_encoders_on_cpu() -> None:
    assert torch_device(None, cuda_available=True) == "cuda"
    assert torch_device(None, cuda_available=False) == "cpu"
    assert torch_device("cpu", cuda_available=True) == "cpu"
    gpu = {"cuda_bf16": True, "cpu_bf16": False}
    assert torch_precision("auto", "cuda", llm=False, **gpu) == "bf16"
    assert torch_precision("auto", "cuda:0", llm=True, cuda_bf16=False, cpu_bf16=False) == "fp16"
    assert torch_precision("torch", "cuda", llm=False, **gpu) == "fp32"  # the explicit reference
    assert torch_precision("auto", "cpu", llm=False, cuda_bf16=False, cpu_bf16=True) == "fp32"
    assert torch_precision("auto", "cpu", llm=True, cuda_bf16=False, cpu_bf16=True) == "bf16"
    assert torch_precision("auto", "cpu", llm=True, cuda_bf16=False, cpu_bf16=False) == "fp32"
    assert torch_precision("torch-bf16", "cpu", llm=False, cuda_bf16=False, cpu_bf16=False) == "bf16"


def test_device_dtype_and_threads_are_logged_once_at_load(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    scorer = CrossEncoderScorer(str(models["xlm-roberta"]), backend="onnx", threads=1, cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="hybrid_rerank.workers"):
        scorer.load()
        scorer.load()
        scorer.score(QUERY, candidates(2))
    lines = [r.getMessage() for r in caplog.records if "rerank model" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "kind cross-encoder" in lines[0] and "CPUExecutionProvider" in lines[0] and "1 threads" in lines[0]
    torch_scorer = CrossEncoderScorer(str(models["bert"]), backend="torch")
    with caplog.at_level(logging.INFO, logger="hybrid_rerank.workers"):
        torch_scorer.load()
    assert "torch fp32 on cpu" in caplog.records[-1].getMessage()


def test_settings_pick_the_kind_and_wire_the_remote_one(tmp_path: Path) -> None:
    settings = load_worker_settings(
        _env_file=None, rerank_model=str(tmp_path), rerank_kind="llm", rerank_llm_prompt="qwen3"
    )
    scorer = make_scorer(settings)
    assert scorer is not None and scorer.kind == "llm" and scorer.llm_prompt == "qwen3"
    with pytest.raises(ConfigurationError, match="RERANK_KIND"):
        load_worker_settings(_env_file=None, rerank_kind="colbert")
    with pytest.raises(ConfigurationError, match="RERANK_REMOTE_URL"):
        make_scorer(load_worker_settings(_env_file=None, rerank_model="api", rerank_kind="remote"))
    remote = load_worker_settings(
        _env_file=None,
        rerank_model="hosted",
        rerank_kind="remote",
        rerank_remote_url="http://127.0.0.1:9/",
        rerank_remote_api_key="s3cret-key",
        rerank_remote_dialect="cohere",
    )
    assert "s3cret-key" not in repr(remote)  # a SecretStr
    scorer = make_scorer(remote)
    assert scorer is not None and scorer.remote is not None
    assert scorer.remote.api_key == "s3cret-key" and scorer.remote.max_batch == 96
    assert "s3cret-key" not in repr(scorer.remote) and "s3cret-key" not in repr(scorer)
    assert scorer.remote.timeout_s == 10.0 and scorer.remote.retries == 2
    loaded = scorer.load()  # opens no connection: nothing is sent before the first score
    assert loaded.kind == "remote" and loaded.tokenizer is None
    assert "cohere" in scorer.description and "s3cret-key" not in scorer.description
    assert scorer.passages(QUERY, "a text") == ["a text"]  # the API cuts texts to its own window

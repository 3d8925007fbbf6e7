"""The bi-encoder's backends on the real all-MiniLM-L6-v2, its query cache, and query/passage prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder, declared_prompts
from hybrid_rerank.connector.errors import ModelLoadError

TEXTS = [
    "The moon shows phases because we see different parts of its sunlit half.",
    "Rest a steak for five minutes after grilling.",
    "Vitamin D deficiency is associated with a higher risk of hip fractures in older women. " * 6,
    "short",
]


def by_hand(embedder: Embedder, texts: list[str]) -> Any:
    """sentence-transformers' own encode of exactly these strings, normalized."""
    return embedder.model.encode(texts, normalize_embeddings=True, show_progress_bar=False)


def test_onnx_backends_agree_with_sentence_transformers(embedder: Embedder, tmp_path: Path) -> None:
    reference = embedder.embed_texts(TEXTS)
    onnx = Embedder(
        embedder.model_name,
        backend="onnx",
        cache_dir=tmp_path,
        query_prompt="query: ",
        passage_prompt="doc: ",
    )
    # The ONNX backend reads the prompts too: what it embeds is the prompted text.
    document = Document("d", "moon phases", "Title")
    prompted = by_hand(embedder, ["query: moon phases", "doc: " + document.full_text])
    assert np.sum(onnx.embed_queries(["moon phases"])[0] * prompted[0]) > 0.9999
    assert np.sum(onnx.embed_documents([document])[0] * prompted[1]) > 0.9999
    fp32 = onnx.embed_texts(TEXTS)
    int8 = Embedder(embedder.model_name, backend="onnx-int8", cache_dir=tmp_path).embed_texts(TEXTS)
    assert fp32.shape == reference.shape == int8.shape
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-4)
    assert np.sum(fp32 * reference, axis=1).min() > 0.9999  # same model, same pooling, same truncation
    assert np.sum(int8 * reference, axis=1).min() > 0.98  # int8 weights, per channel: close, not equal


def test_bf16_backend_stays_close(embedder: Embedder) -> None:
    bf16 = Embedder(embedder.model_name, backend="torch-bf16").embed_texts(TEXTS)
    assert np.sum(bf16 * embedder.embed_texts(TEXTS), axis=1).min() > 0.98
    assert Embedder(embedder.model_name, backend="torch-bf16").cache_name != embedder.cache_name


def test_repeated_queries_come_from_the_lru_cache(embedder: Embedder) -> None:
    cached = Embedder(embedder.model_name, query_cache_size=2)
    cached._model = embedder.model  # share the loaded model
    first = cached.embed_query("moon phases")
    first[0] = 42.0  # a caller mutating its vector must not poison the cache
    again = cached.embed_query("moon phases")
    assert again[0] != 42.0 and np.allclose(again, embedder.embed_texts(["moon phases"])[0], atol=1e-6)
    cached.embed_query("steak")
    cached.embed_query("vitamin d")
    assert cached.query_cache_entries == 2  # the oldest was evicted


def test_prompts_come_from_the_folder_and_are_prepended_to_queries_and_passages(
    embedder: Embedder, tmp_path: Path
) -> None:
    """An e5-style folder declaring its prompts (the loaded MiniLM stands in for its weights)."""
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    e5 = Embedder(str(tmp_path))
    e5._model = embedder.model
    assert (e5.query_prompt, e5.passage_prompt) == ("query: ", "passage: ")
    assert e5.model_name == f"{tmp_path} (passage prompt 'passage: ')"  # what an index records
    assert e5.cache_name != Embedder(str(tmp_path), passage_prompt="").cache_name
    query = e5.embed_query("moon phases")
    assert np.allclose(query, by_hand(embedder, ["query: moon phases"])[0], atol=1e-6)
    assert np.allclose(
        query, embedder.model.encode("moon phases", prompt="query: ", normalize_embeddings=True)
    )
    assert np.sum(query * by_hand(embedder, ["moon phases"])[0]) < 0.99  # the prompt changed the vector
    moon = Document("d", "moon phases", "Moon")
    document = e5.embed_documents([moon])[0]
    assert np.allclose(document, by_hand(embedder, ["passage: " + moon.full_text])[0], atol=1e-6)
    assert np.allclose(e5.embed_queries(["moon phases"])[0], query, atol=1e-6)
    # The query cache is keyed by the prompted text: another prompt is another entry, not a stale hit.
    e5.query_prompt = ""
    assert np.allclose(e5.embed_query("moon phases"), by_hand(embedder, ["moon phases"])[0], atol=1e-6)
    assert list(e5._queries) == ["query: moon phases", "moon phases"]
    # Settings win over the folder, and "" means no prompt.
    plain = Embedder(str(tmp_path), query_prompt="", passage_prompt="")
    assert (plain.query_prompt, plain.passage_prompt, plain.model_name) == ("", "", str(tmp_path))
    bge = Embedder(str(tmp_path), query_prompt="Represent this sentence for searching relevant passages: ")
    assert bge.query_prompt.startswith("Represent") and bge.passage_prompt == "passage: "


def test_declared_prompts_read_passage_or_document_and_default_to_none(
    embedder: Embedder, tmp_path: Path
) -> None:
    assert declared_prompts(embedder.source.location) == ("", "")  # all-MiniLM-L6-v2 declares none
    assert embedder.model_name == "all-MiniLM-L6-v2" and embedder.query_prompt == ""
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"passage": "p: "}}))
    assert declared_prompts(str(tmp_path)) == ("", "p: ")
    (tmp_path / "config_sentence_transformers.json").write_text("{not json")
    assert declared_prompts(str(tmp_path)) == ("", "")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="unknown embedding backend"):
        Embedder("all-MiniLM-L6-v2", backend="tpu")  # type: ignore[arg-type]


def fake_machine(
    monkeypatch: pytest.MonkeyPatch, cpuinfo: str | None, gpu: bool = False, gpu_bf16: bool = False
) -> None:
    """This process sees `cpuinfo` as /proc/cpuinfo (None: unreadable) and a GPU or none."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: gpu_bf16)
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if str(self) != "/proc/cpuinfo":
            return real_read_text(self, *args, **kwargs)
        if cpuinfo is None:
            raise PermissionError(13, "Permission denied", str(self))
        return cpuinfo

    monkeypatch.setattr(Path, "read_text", read_text)


def cpuinfo_with(flags: str) -> str:
    return "".join(
        f"processor\t: {cpu}\nmodel name\t: Some CPU\nflags\t\t: fpu vme sse2 avx2 {flags}\n\n"
        for cpu in (0, 1)
    )


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("avx512f avx512bw avx512_vnni", False),  # AVX-512 without its bf16 extension
        ("avx512f avx512_bf16", True),
        ("amx_tile amx_bf16 amx_int8", True),
        ("", False),
    ],
)
def test_bf16_is_detected_from_the_cpu_flags_without_a_gpu(
    monkeypatch: pytest.MonkeyPatch, flags: str, native: bool
) -> None:
    from hybrid_rerank.connector.embedder import resolve_embedding_backend
    from hybrid_rerank.workers.runtime.runners import bf16_available

    fake_machine(monkeypatch, cpuinfo_with(flags))
    assert bf16_available() is native
    assert resolve_embedding_backend("auto") == ("torch-bf16" if native else "torch")
    assert resolve_embedding_backend("onnx-int8") == "onnx-int8"  # an explicit backend is kept


def test_bf16_on_a_gpu_is_what_the_gpu_says_and_unreadable_cpuinfo_means_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hybrid_rerank.workers.runtime.runners import bf16_available

    fake_machine(monkeypatch, cpuinfo_with("avx512_bf16"), gpu=True, gpu_bf16=False)
    assert bf16_available() is False  # the GPU runs the model: the CPU's flags do not count
    fake_machine(monkeypatch, cpuinfo_with(""), gpu=True, gpu_bf16=True)
    assert bf16_available() is True
    fake_machine(monkeypatch, None)
    assert bf16_available() is False


def test_bf16_detection_matches_this_machines_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the real /proc/cpuinfo, read here on its own: the flags lines, split into words."""
    from hybrid_rerank.workers.runtime.runners import bf16_available

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = {
        word
        for line in cpuinfo.read_text(encoding="utf-8").splitlines()
        if line.split(":")[0].strip() == "flags"
        for word in line.split(":", 1)[1].split()
    }
    fake_machine(monkeypatch, cpuinfo.read_text(encoding="utf-8"))  # the real flags, and no GPU
    assert bf16_available() is bool(flags & {"avx512_bf16", "amx_bf16"})

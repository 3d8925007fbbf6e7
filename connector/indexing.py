"""Indexing: embed documents in batches, then write them with their vectors through the backend."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from hybrid_rerank.connector.backends.base import Backend, BulkReport
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder, ProgressCallback


@dataclass(frozen=True)
class IndexReport:
    bulk: BulkReport
    documents: int
    embed_seconds: float
    write_seconds: float


def index_documents(
    backend: Backend,
    embedder: Embedder,
    documents: Sequence[Document],
    *,
    recreate: bool = False,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Create (or check) the index for the embedder's model, then upsert every document with its vector.

    The model and dimension are checked before any embedding work, so a mismatch fails fast.
    """
    backend.create_index(embedder.model_name, embedder.dimension, recreate=recreate)
    started = time.perf_counter()
    vectors = embedder.embed_documents(documents, progress)
    embedded = time.perf_counter()
    report = backend.bulk_index(documents, vectors)
    backend.commit()
    written = time.perf_counter()
    return IndexReport(report, len(documents), embedded - started, written - embedded)

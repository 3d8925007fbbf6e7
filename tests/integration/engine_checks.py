"""Checks both engine backends must pass on a real node, written once: the behaviour lives in the shared
engine base (`connector/backends/engine.py`), so its tests do too. Each takes a fresh, named backend."""

from __future__ import annotations

import numpy as np

from hybrid_rerank.connector.backends.engine import EngineBackend
from hybrid_rerank.connector.documents import Document


def unit(dim: int, axis: int = 0) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[axis] = 1.0
    return vector


def wrong_dimension_fails_that_document_only(backend: EngineBackend) -> None:
    backend.create_index("m", 4)
    docs = [Document("ok", "fine"), Document("short", "three dims")]
    report = backend.bulk_index(docs, [unit(4), np.ones(3, dtype=np.float32)])  # type: ignore[arg-type]
    assert report.written == 1
    assert [f.doc_id for f in report.failures] == ["short"]
    assert "dimension" in report.failures[0].reason.lower()
    backend.commit()
    assert backend.get(["ok", "short"]).keys() == {"ok"}


def oversized_documents_are_refused_per_document(backend: EngineBackend) -> None:
    backend.create_index("m", 4)
    immense = Document("immense", "text", metadata={"tag": "x" * 40_000})  # over Lucene's term limit
    too_big = Document("too-big", "y " * 3_000_000)  # over max_document_bytes: never sent
    report = backend.bulk_index([Document("fine", "ok"), immense, too_big], np.stack([unit(4)] * 3))
    assert report.written == 1
    reasons = {f.doc_id: f.reason for f in report.failures}
    assert "immense term" in reasons["immense"]
    assert "over 5,000,000" in reasons["too-big"]


def reindex_swaps_the_alias_only_at_commit(backend: EngineBackend, count: int, word: str) -> None:
    """Re-index `backend` (holding `count` documents, some with `word`) into another model: searches see the
    old index until commit, then the new one alone."""
    before = backend.index_info()
    assert before is not None and before.count == count
    backend.create_index("other-model", 8, recreate=True)
    backend.bulk_index([Document("new", "only in v2")], np.stack([unit(8)]))
    assert backend.index_info() == before  # searches still see v1 while v2 is built
    assert backend.bm25(word, 10)
    backend.commit()
    after = backend.index_info()
    assert after is not None and (after.embedding_model, after.dimension, after.count) == (
        "other-model",
        8,
        1,
    )
    assert sorted(backend.client.indices.get(index=f"{backend.alias}-v*")) == [f"{backend.alias}-v2"]
    assert backend.bm25(word, 10) == []

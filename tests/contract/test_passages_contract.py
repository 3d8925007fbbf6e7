"""A passage index on every backend: one vector per passage, the k-NN leg scores a document by its best
passage, returns it once, and says which passage matched (character offsets in its text)."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Backend, Passage
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import IndexMismatchError
from tests.contract.conftest import BackendFactory

DIM = 8
LAYOUT = "4/1 tokens"
SENTENCES = ["Cells divide.", "Membranes bend.", "Kinases signal.", "Genes express.", "Proteins fold."]


def unit(*weights: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    for axis, weight in weights:
        vector[axis] = weight
    return vector / np.linalg.norm(vector)


def long_document() -> tuple[Document, list[Passage], np.ndarray]:
    """Five passages (one sentence each); only the 3rd points along axis 0."""
    text = " ".join(SENTENCES)
    spans, at = [], 0
    for sentence in SENTENCES:
        start = text.index(sentence, at)
        spans.append(Passage(start, start + len(sentence)))
        at = start + len(sentence)
    rows = np.stack([unit((1, 1.0)), unit((2, 1.0)), unit((0, 1.0)), unit((3, 1.0)), unit((4, 1.0))])
    return Document("long", text, title="Cells", metadata={"topic": "bio"}), spans, rows


def built(make_backend: BackendFactory, index_name: str) -> tuple[Backend, list[Passage]]:
    backend = make_backend(index_name)
    backend.create_index("m", DIM, passages=LAYOUT)
    long, spans, rows = long_document()
    near = Document("near", "Kinases in brief.", metadata={"topic": "bio"})
    far = Document("far", "Stars burn.", metadata={"topic": "astro"})
    vectors = np.vstack([rows, unit((0, 0.6), (5, 0.8))[None], unit((6, 1.0))[None]])
    text_span = [Passage(0, len(near.text))], [Passage(0, len(far.text))]
    report = backend.bulk_index([long, near, far], vectors, [spans, *text_span])
    assert report.ok and report.written == 3
    backend.commit()
    return backend, spans


def test_the_third_passage_alone_finds_its_document_once_with_its_offsets(
    make_backend: BackendFactory, index_name: str
) -> None:
    backend, spans = built(make_backend, index_name)
    query = unit((0, 1.0))
    hits = backend.knn(query, 10)
    assert [h.document.id for h in hits] == ["long", "near", "far"]  # each document once
    assert hits[0].passage == spans[2] and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].document.text[spans[2].start : spans[2].end] == "Kinases signal."
    assert hits[1].passage == Passage(0, len("Kinases in brief.")) and hits[1].score == pytest.approx(
        0.6, abs=1e-3
    )
    recall = backend.recall("proteins", query, 2)
    assert [(h.document.id, h.passage) for h in recall.knn] == [("long", spans[2]), ("near", hits[1].passage)]
    assert [h.passage for h in recall.bm25] == [None]


def test_filters_apply_to_the_documents_of_a_passage_index(
    make_backend: BackendFactory, index_name: str
) -> None:
    backend, _ = built(make_backend, index_name)
    hits = backend.knn(unit((0, 1.0)), 10, {"topic": "astro"})
    assert [h.document.id for h in hits] == ["far"]


def test_a_passage_index_is_not_mixed_with_one_vector_per_document(
    make_backend: BackendFactory, index_name: str
) -> None:
    built(make_backend, index_name)
    reopened = make_backend(index_name)
    info = reopened.index_info()
    assert info is not None and info.passages == LAYOUT
    with pytest.raises(IndexMismatchError, match="one vector per document"):
        reopened.create_index("m", DIM)
    with pytest.raises(IndexMismatchError, match="passages"):
        reopened.create_index("m", DIM, passages="8/2 tokens")
    assert reopened.create_index("m", DIM, passages=LAYOUT).passages == LAYOUT


def test_server_side_hybrid_scores_the_best_passage_on_opensearch(
    make_backend: BackendFactory, index_name: str
) -> None:
    backend, _ = built(make_backend, index_name)
    if backend.name != "opensearch":
        pytest.skip("server-side hybrid search is OpenSearch's (neural-search)")
    hits = backend.hybrid("kinases", unit((0, 1.0)), 10, None, fusion="minmax", bm25_weight=0.5, rrf_k=60)
    assert sorted(h.document.id for h in hits) == ["far", "long", "near"]  # each document once
    legs = {h.document.id: (h.bm25_score is not None, h.vector_score) for h in hits}
    assert legs["long"][0] and legs["long"][1] == pytest.approx(1.0, abs=1e-3)
    assert not legs["far"][0] and legs["near"][1] == pytest.approx(0.6, abs=1e-3)

"""What every Backend must do, checked with hand-made 4-dimensional vectors (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Backend, IndexInfo, LegHit, Range
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import IndexMismatchError, IndexMissingError
from tests.contract.conftest import BackendFactory

MODEL = "test-model"
DOCS = [
    Document("d1", "the moon orbits the earth every month", "Moon", {"topic": "astronomy", "year": 2020}),
    Document("d2", "grill the steak and let it rest", "Steak", {"topic": "cooking", "year": 2021}),
    Document(
        "d3", "a full moon rises over the kitchen garden", "Garden", {"topic": "gardening", "year": 2021}
    ),
    Document("d4", "solar eclipses happen when the moon blocks the sun", "Eclipse", {"topic": "astronomy"}),
    Document("d5", "月球绕着地球运行", "月球", {"topic": ["astronomy", "chinese"], "year": 2019}),
]
VECTORS = np.array(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0.6, 0.8, 0, 0], [0.8, 0, 0.6, 0], [0, 0, 0, 1]], dtype=np.float32
)


@pytest.fixture
def backend(make_backend: BackendFactory, index_name: str) -> Backend:
    store = make_backend(index_name)
    store.create_index(MODEL, 4)
    report = store.bulk_index(DOCS, VECTORS)
    assert report.ok and report.written == len(DOCS)
    store.commit()
    return store


def ids(hits: list[LegHit]) -> list[str]:
    return [h.document.id for h in hits]


def test_missing_index_is_reported(make_backend: BackendFactory, index_name: str) -> None:
    store = make_backend(index_name)
    assert store.index_info() is None
    with pytest.raises(IndexMissingError, match="hybrid-rerank index"):
        store.bm25("moon", 10)


def test_index_info_records_model_dimension_and_count(backend: Backend) -> None:
    info = backend.index_info()
    assert (info.embedding_model, info.dimension, info.count) == (MODEL, 4, 5)


def test_another_model_or_dimension_is_refused(backend: Backend) -> None:
    with pytest.raises(IndexMismatchError, match="dimensional"):
        backend.create_index(MODEL, 8)
    with pytest.raises(IndexMismatchError, match="not comparable"):
        backend.create_index("other-model", 4)
    assert backend.create_index("other-model", 8, recreate=True).count == 0
    backend.commit()
    assert backend.index_info() == IndexInfo(backend.index_info().name, "other-model", 8, 0)  # type: ignore[union-attr]


def test_bm25_ranks_matching_documents_only(backend: Backend) -> None:
    hits = backend.bm25("moon", 10)
    assert set(ids(hits)) == {"d1", "d3", "d4"}
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bm25_handles_chinese(backend: Backend) -> None:
    assert ids(backend.bm25("地球", 10)) == ["d5"]


def test_bm25_query_of_stop_words_or_syntax_finds_nothing_without_error(backend: Backend) -> None:
    assert backend.bm25("the of and", 10) == []
    assert ids(backend.bm25('moon AND (sun OR "earth") ~2 ^3 [x TO y] \\ / *', 10))[0] in {"d1", "d4"}


def test_knn_is_cosine_best_first(backend: Backend) -> None:
    hits = backend.knn(np.array([1, 0, 0, 0], dtype=np.float32), 3)
    assert ids(hits) == ["d1", "d4", "d3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6], abs=1e-4)


def test_size_limits_each_leg(backend: Backend) -> None:
    assert len(backend.knn(np.ones(4, dtype=np.float32) / 2, 2)) == 2
    assert len(backend.bm25("moon", 1)) == 1


def test_filters_apply_to_both_legs(backend: Backend) -> None:
    query = np.array([1, 0, 0, 0], dtype=np.float32)
    astronomy = {"topic": "astronomy"}
    assert set(ids(backend.bm25("moon", 10, astronomy))) == {"d1", "d4"}
    assert set(ids(backend.knn(query, 10, astronomy))) == {"d1", "d4", "d5"}
    assert set(ids(backend.knn(query, 10, {"year": 2021}))) == {"d2", "d3"}
    assert set(ids(backend.knn(query, 10, {"year": "2021"}))) == {"d2", "d3"}
    assert set(ids(backend.knn(query, 10, {"topic": ["cooking", "chinese"]}))) == {"d2", "d5"}
    assert set(ids(backend.knn(query, 10, {"year": Range(gte=2020, lte=2020.5)}))) == {"d1"}
    assert backend.bm25("moon", 10, {"topic": "nothing"}) == []


def test_upsert_replaces_by_id(backend: Backend) -> None:
    changed = Document("d2", "a new text about comets", "Comets", {"topic": "astronomy"})
    report = backend.bulk_index([changed], np.array([[0, 0, 1, 0]], dtype=np.float32))
    assert report.written == 1
    backend.commit()
    assert backend.index_info().count == 5
    assert backend.get(["d2"])["d2"] == changed
    assert ids(backend.bm25("comets", 10)) == ["d2"]
    assert ids(backend.bm25("steak", 10)) == []


def test_delete_by_id(backend: Backend) -> None:
    assert backend.delete(["d1", "nope"]) == 1
    assert backend.get(["d1", "d2"]).keys() == {"d2"}
    assert "d1" not in ids(backend.bm25("moon", 10))
    assert "d1" not in ids(backend.knn(np.array([1, 0, 0, 0], dtype=np.float32), 10))


def test_bad_vectors_fail_per_document_and_the_rest_are_written(backend: Backend) -> None:
    docs = [Document("ok", "fine"), Document("nan", "bad vector")]
    vectors = np.array([[0, 1, 0, 0], [np.nan, 0, 0, 0]], dtype=np.float32)
    report = backend.bulk_index(docs, vectors)
    assert report.written == 1
    assert [f.doc_id for f in report.failures] == ["nan"]
    backend.commit()
    assert backend.get(["ok", "nan"]).keys() == {"ok"}


def test_recall_returns_both_legs_under_the_same_filters(backend: Backend) -> None:
    recall = backend.recall("moon", np.array([1, 0, 0, 0], dtype=np.float32), 10, {"topic": "astronomy"})
    assert set(ids(recall.bm25)) == {"d1", "d4"}
    assert set(ids(recall.knn)) == {"d1", "d4", "d5"}
    assert set(recall.leg_ms) == {"bm25", "knn"}


def test_reopening_sees_the_same_index(
    make_backend: BackendFactory, index_name: str, backend: Backend
) -> None:
    again = make_backend(index_name)
    assert again.index_info() == backend.index_info()
    assert ids(again.bm25("moon", 10)) == ids(backend.bm25("moon", 10))


def test_content_hashes_and_ids_come_back_without_the_documents(backend: Backend) -> None:
    hashed = Document("h1", "a hashed text", "Hashed").hashed()
    assert backend.bulk_index([hashed], np.array([[0, 0, 1, 0]], dtype=np.float32)).ok
    backend.commit()
    assert backend.content_hashes(["h1", "d1", "nope"]) == {"h1": hashed.content_hash, "d1": ""}
    assert backend.get(["h1"])["h1"].content_hash == hashed.content_hash
    assert backend.content_hashes([]) == {}
    assert sorted(backend.all_ids()) == sorted([d.id for d in DOCS] + ["h1"])

"""How the embedded backend stores an index: plain files, no pickle, atomic generations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Passage
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import ConfigurationError, IndexMismatchError

DOCS = [Document("a", "the moon orbits the earth"), Document("b", "steak rests after grilling")]
VECTORS = np.eye(2, 4, dtype=np.float32)


def built(tmp_path: Path) -> EmbeddedBackend:
    store = EmbeddedBackend(tmp_path, "idx")
    store.create_index("m", 4)
    store.bulk_index(DOCS, VECTORS)
    return store


def live_generation(tmp_path: Path) -> Path:
    return tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text()


def test_an_index_is_plain_files_in_one_live_generation(tmp_path: Path) -> None:
    built(tmp_path)
    generation = live_generation(tmp_path)
    assert sorted(p.name for p in generation.iterdir()) == [
        "documents.jsonl",
        "manifest.json",
        "terms.jsonl",
        "vectors.npy",
    ]
    assert [p.name for p in (tmp_path / "idx").glob("gen-*")] == [generation.name]  # older ones removed
    manifest = json.loads((generation / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["dimension"] == 4 and manifest["embedding_model"] == "m"


def test_a_pickled_vector_file_is_refused_not_executed(tmp_path: Path) -> None:
    built(tmp_path)
    np.save(live_generation(tmp_path) / "vectors.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(IndexMismatchError, match="unreadable"):
        EmbeddedBackend(tmp_path, "idx")


def test_an_unfinished_write_leaves_the_previous_index_live(tmp_path: Path) -> None:
    built(tmp_path)
    half_written = tmp_path / "idx" / "gen-999999"
    half_written.mkdir()
    (half_written / "documents.jsonl").write_text('{"_id": "partial"')
    reopened = EmbeddedBackend(tmp_path, "idx")
    assert reopened.get(["a", "b", "partial"]).keys() == {"a", "b"}


def test_terms_of_another_tokenizer_version_are_recomputed(tmp_path: Path) -> None:
    built(tmp_path)
    generation = live_generation(tmp_path)
    manifest = json.loads((generation / "manifest.json").read_text())
    manifest["tokenizer"] = -1
    (generation / "manifest.json").write_text(json.dumps(manifest))
    (generation / "terms.jsonl").write_text('["stale"]\n["stale"]\n')
    assert [h.document.id for h in EmbeddedBackend(tmp_path, "idx").bm25("moon", 5)] == ["a"]


def test_inconsistent_files_are_reported(tmp_path: Path) -> None:
    built(tmp_path)
    np.save(live_generation(tmp_path) / "vectors.npy", np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(IndexMismatchError, match="inconsistent"):
        EmbeddedBackend(tmp_path, "idx")


@pytest.mark.parametrize("name", ["", "../escape", ".hidden"])
def test_index_names_must_be_plain_folder_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError, match="INDEX_NAME"):
        EmbeddedBackend(tmp_path, name)


def test_recreating_keeps_the_old_index_on_disk_until_commit(tmp_path: Path) -> None:
    store = built(tmp_path)
    store.create_index("other-model", 4, recreate=True)
    store.bulk_index([Document("c", "a new document")], np.eye(1, 4, dtype=np.float32))  # then the run dies
    reopened = EmbeddedBackend(tmp_path, "idx")
    assert reopened.index_info().embedding_model == "m"  # type: ignore[union-attr]
    assert sorted(reopened.all_ids()) == ["a", "b"]
    store.commit()
    reopened = EmbeddedBackend(tmp_path, "idx")
    info = reopened.index_info()
    assert info is not None and (info.embedding_model, info.count) == ("other-model", 1)
    assert list(reopened.all_ids()) == ["c"]


def test_an_empty_recreated_index_replaces_the_old_one_at_commit(tmp_path: Path) -> None:
    store = built(tmp_path)
    store.create_index("other-model", 8, recreate=True)
    assert EmbeddedBackend(tmp_path, "idx").index_info().embedding_model == "m"  # type: ignore[union-attr]
    store.commit()
    reopened = EmbeddedBackend(tmp_path, "idx").index_info()
    assert reopened is not None and (reopened.embedding_model, reopened.dimension, reopened.count) == (
        "other-model",
        8,
        0,
    )


def test_content_hashes_are_stored_with_the_documents_and_read_back(tmp_path: Path) -> None:
    store = EmbeddedBackend(tmp_path, "idx")
    store.create_index("m", 4)
    hashed = [doc.hashed() for doc in DOCS]
    store.bulk_index([hashed[0], DOCS[1]], VECTORS)
    line = (live_generation(tmp_path) / "documents.jsonl").read_text().splitlines()[0]
    assert json.loads(line)["content_hash"] == hashed[0].content_hash
    reopened = EmbeddedBackend(tmp_path, "idx")
    assert reopened.content_hashes(["a", "b", "zz"]) == {"a": hashed[0].content_hash, "b": ""}


def test_a_passage_index_stores_each_passage_row_with_its_document_and_offsets(tmp_path: Path) -> None:
    store = EmbeddedBackend(tmp_path, "idx")
    store.create_index("m", 4, passages="2/1 tokens")
    spans = [[Passage(0, 8), Passage(4, 25)], [Passage(0, 26)]]
    rows = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    store.bulk_index(DOCS, rows, spans)
    generation = live_generation(tmp_path)
    assert np.load(generation / "passages.npy").tolist() == [[0, 0, 8], [0, 4, 25], [1, 0, 26]]
    assert json.loads((generation / "manifest.json").read_text())["passages"] == "2/1 tokens"
    reopened = EmbeddedBackend(tmp_path, "idx")
    (hit,) = reopened.knn(np.array([1, 0, 0, 0], dtype=np.float32), 1)
    assert (hit.document.id, hit.passage) == ("a", Passage(4, 25))
    store.bulk_index([DOCS[0]], rows[2:], [[Passage(0, 25)]])  # replaced: one passage now
    store.delete(["b"])
    assert np.load(live_generation(tmp_path) / "passages.npy").tolist() == [[0, 0, 25]]
    with pytest.raises(IndexMismatchError, match="holds passages"):
        store.bulk_index([DOCS[1]], rows[:1])


def test_a_passage_table_that_does_not_match_the_vectors_is_reported(tmp_path: Path) -> None:
    store = EmbeddedBackend(tmp_path, "idx")
    store.create_index("m", 4, passages="2/1 tokens")
    store.bulk_index(DOCS, VECTORS, [[Passage(0, 4)], [Passage(0, 5)]])
    np.save(live_generation(tmp_path) / "passages.npy", np.array([[0, 0, 4]]), allow_pickle=False)
    with pytest.raises(IndexMismatchError, match="inconsistent"):
        EmbeddedBackend(tmp_path, "idx")

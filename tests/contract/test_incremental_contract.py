"""What every Backend must do for incremental indexing: store each document's content hash and give it
back (with `get` and, cheaply, `content_hashes`), and list every id of the live index (`all_ids`)."""

from __future__ import annotations

import numpy as np

from hybrid_rerank.connector.documents import Document
from tests.contract.conftest import BackendFactory

MODEL = "test-model"


def docs(n: int, version: str = "") -> list[Document]:
    return [Document(f"d{i}", f"text {i} {version}", f"title {i}", {"n": i}).hashed() for i in range(n)]


def vectors(n: int) -> np.ndarray:
    rows = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_content_hashes_round_trip_and_missing_ids_are_absent(
    make_backend: BackendFactory, index_name: str
) -> None:
    store = make_backend(index_name)
    store.create_index(MODEL, 4)
    written = docs(3)
    unhashed = Document("plain", "no hash computed")
    assert store.bulk_index([*written, unhashed], vectors(4)).ok
    store.commit()
    reopened = make_backend(index_name)
    assert reopened.content_hashes(["d0", "d2", "missing", "plain"]) == {
        "d0": written[0].content_hash,
        "d2": written[2].content_hash,
        "plain": "",
    }
    assert reopened.get(["d1"])["d1"].content_hash == written[1].content_hash
    assert reopened.content_hashes([]) == {}


def test_a_rewritten_document_carries_its_new_hash(make_backend: BackendFactory, index_name: str) -> None:
    store = make_backend(index_name)
    store.create_index(MODEL, 4)
    store.bulk_index(docs(2), vectors(2))
    store.commit()
    changed = docs(2, version="v2")[1]
    store.bulk_index([changed], vectors(1))
    store.commit()
    hashes = make_backend(index_name).content_hashes(["d0", "d1"])
    assert hashes == {"d0": docs(2)[0].content_hash, "d1": changed.content_hash}
    assert hashes["d1"] != docs(2)[1].content_hash


def test_all_ids_lists_every_document_of_the_live_index(
    make_backend: BackendFactory, index_name: str
) -> None:
    store = make_backend(index_name)
    store.create_index(MODEL, 4)
    many = [Document(f"id-{i:04d}", f"text {i}") for i in range(1203)]  # more than one page of any scroll
    for start in range(0, len(many), 400):
        batch = many[start : start + 400]
        assert store.bulk_index(batch, vectors(len(batch))).ok
    store.commit()
    assert sorted(make_backend(index_name).all_ids()) == sorted(d.id for d in many)
    store.delete(["id-0000", "id-1202"])
    store.commit()
    assert len(list(make_backend(index_name).all_ids())) == 1201

"""Batched, incremental indexing on the real embedded backend, with a counting in-memory bi-encoder: what is
embedded, skipped, re-embedded, deleted, and how far ahead of the writes the source is read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from hybrid_rerank.connector.backends.base import Vector
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder, ProgressCallback
from hybrid_rerank.connector.indexing import (
    batched,
    delete_documents,
    index_documents,
    sync_deletions,
)


class CountingEmbedder:
    """Deterministic 4-d vectors; records every document id it embeds, and fails on `fail_on` if set."""

    model_name = "counting-embedder"
    dimension = 4

    def __init__(self, fail_on: str | None = None, nan_for: str | None = None) -> None:
        self.embedded: list[str] = []
        self.fail_on, self.nan_for = fail_on, nan_for
        self.read_when_embedding: list[int] = []
        self.source_position: list[int] = [0]

    def embed_documents(
        self, documents: Sequence[Document], progress: ProgressCallback | None = None
    ) -> Vector:
        if any(d.id == self.fail_on for d in documents):
            raise RuntimeError("the embedding run dies here")
        self.read_when_embedding.append(self.source_position[0])
        self.embedded.extend(d.id for d in documents)
        if progress is not None:
            progress(1, len(documents))  # as a real embedder reports its own batches
        rows = [[len(d.text) % 5 + 1.0, 1.0, float(i % 3), 0.5] for i, d in enumerate(documents)]
        vectors = np.array(rows, dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for row, d in enumerate(documents):
            if d.id == self.nan_for:
                vectors[row, 0] = np.nan
        return vectors


def corpus(n: int, changed: Sequence[int] = ()) -> list[Document]:
    return [
        Document(f"d{i}", f"text {i}{' v2' if i in changed else ''}", metadata={"n": i}) for i in range(n)
    ]


def test_a_rerun_embeds_only_new_and_changed_documents(tmp_path: Path) -> None:
    first = CountingEmbedder()
    report = index_documents(
        EmbeddedBackend(tmp_path, "idx"), cast(Embedder, first), corpus(10), batch_size=3
    )
    assert (report.embedded, report.unchanged, report.bulk.written, report.documents) == (10, 0, 10, 10)
    again = CountingEmbedder()
    report = index_documents(
        EmbeddedBackend(tmp_path, "idx"), cast(Embedder, again), corpus(12, changed=[4, 7]), incremental=True
    )
    assert sorted(again.embedded) == ["d10", "d11", "d4", "d7"]
    assert (report.embedded, report.unchanged) == (4, 8)
    stored = EmbeddedBackend(tmp_path, "idx")
    assert stored.get(["d4"])["d4"].text == "text 4 v2"
    assert stored.content_hashes(["d4", "nope"]) == {"d4": corpus(5, changed=[4])[4].hashed().content_hash}


def test_without_incremental_or_with_recreate_everything_is_embedded(tmp_path: Path) -> None:
    index_documents(EmbeddedBackend(tmp_path, "idx"), cast(Embedder, CountingEmbedder()), corpus(5))
    for options in ({}, {"incremental": True, "recreate": True}):
        embedder = CountingEmbedder()
        index_documents(EmbeddedBackend(tmp_path, "idx"), cast(Embedder, embedder), corpus(5), **options)  # type: ignore[arg-type]
        assert len(embedder.embedded) == 5


def test_a_run_that_dies_keeps_every_written_batch_and_the_rerun_embeds_the_rest_once(tmp_path: Path) -> None:
    dying = CountingEmbedder(fail_on="d7")
    with pytest.raises(RuntimeError, match="dies here"):
        index_documents(EmbeddedBackend(tmp_path, "idx"), cast(Embedder, dying), corpus(11), batch_size=3)
    written = sorted(EmbeddedBackend(tmp_path, "idx").all_ids())
    assert written == ["d0", "d1", "d2", "d3", "d4", "d5"]  # two whole batches; the third was in flight
    rerun = CountingEmbedder()
    report = index_documents(
        EmbeddedBackend(tmp_path, "idx"), cast(Embedder, rerun), corpus(11), batch_size=3, incremental=True
    )
    assert sorted(rerun.embedded) == sorted(f"d{i}" for i in range(6, 11))
    assert (report.embedded, report.unchanged) == (5, 6)
    assert set(dying.embedded) & set(rerun.embedded) == set()
    assert sorted(EmbeddedBackend(tmp_path, "idx").all_ids()) == sorted(f"d{i}" for i in range(11))


def test_a_document_that_failed_to_write_is_listed_and_retried_next_time(tmp_path: Path) -> None:
    report = index_documents(
        EmbeddedBackend(tmp_path, "idx"), cast(Embedder, CountingEmbedder(nan_for="d2")), corpus(4)
    )
    assert [(f.doc_id, f.reason) for f in report.bulk.failures] == [
        ("d2", "vector has NaN or infinite values")
    ]
    retry = CountingEmbedder()
    index_documents(EmbeddedBackend(tmp_path, "idx"), cast(Embedder, retry), corpus(4), incremental=True)
    assert retry.embedded == ["d2"]


def test_the_source_is_read_one_batch_ahead_of_the_writes_at_most(tmp_path: Path) -> None:
    embedder = CountingEmbedder()

    def source() -> Iterator[Document]:
        for doc in corpus(20):
            embedder.source_position[0] += 1
            yield doc

    seen: list[tuple[int, int]] = []
    report = index_documents(
        EmbeddedBackend(tmp_path, "idx"),
        cast(Embedder, embedder),
        source(),
        batch_size=4,
        total=20,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.documents == 20
    assert embedder.read_when_embedding == [4, 8, 12, 16, 20]
    assert seen == [(at + step, 20) for at in range(0, 20, 4) for step in (1, 4)]


def test_sync_deletes_what_the_source_no_longer_holds_and_delete_counts_what_existed(tmp_path: Path) -> None:
    backend = EmbeddedBackend(tmp_path, "idx")
    index_documents(backend, cast(Embedder, CountingEmbedder()), corpus(8))
    assert sync_deletions(backend, {"d1", "d3", "d5", "d6", "d7"}, batch_size=2) == 3
    assert sorted(EmbeddedBackend(tmp_path, "idx").all_ids()) == ["d1", "d3", "d5", "d6", "d7"]
    assert delete_documents(backend, iter(["d1", "missing", "d7"]), batch_size=2) == 2
    assert sorted(EmbeddedBackend(tmp_path, "idx").all_ids()) == ["d3", "d5", "d6"]


def test_batches_are_bounded_and_a_size_below_one_is_refused() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="at least 1"):
        list(batched([1], 0))

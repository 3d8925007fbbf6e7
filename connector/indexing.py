"""Indexing in bounded batches: hash, skip what the index already holds, embed, write, batch after batch.

Memory holds one batch of documents and vectors at a time (plus what the backend itself keeps), and a run
that dies loses at most the batch in flight: every batch before it is written with its content hash, so a
rerun skips it without embedding it again.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import TypeVar

from hybrid_rerank.connector.backends.base import Backend, BulkReport, Passage, Vector
from hybrid_rerank.connector.chunking import PassageSplitter
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder, ProgressCallback
from hybrid_rerank.connector.errors import DocumentFailure

DEFAULT_BATCH_SIZE = 512
T = TypeVar("T")


@dataclass(frozen=True)
class IndexReport:
    """`documents` read; of them `embedded` were embedded and sent (`bulk` says which were written) and
    `unchanged` already held with the same content hash; `deleted` by `--sync`."""

    bulk: BulkReport
    documents: int
    embed_seconds: float
    write_seconds: float
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    passages: int = 0  # vectors written on a passage index (one per passage)


@dataclass
class _Totals:
    documents: int = 0
    embedded: int = 0
    unchanged: int = 0
    written: int = 0
    passages: int = 0
    failures: list[DocumentFailure] = field(default_factory=list)
    embed_seconds: float = 0.0
    write_seconds: float = 0.0


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def changed_documents(batch: Sequence[Document], stored: dict[str, str]) -> list[Document]:
    """The documents of `batch` (hashed) whose hash differs from the stored one, or that are not stored."""
    return [doc for doc in batch if stored.get(doc.id) != doc.content_hash]


def index_documents(
    backend: Backend,
    embedder: Embedder,
    documents: Iterable[Document],
    *,
    recreate: bool = False,
    incremental: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    passages: PassageSplitter | None = None,
) -> IndexReport:
    """Create (or check) the index for the embedder's model, then write `documents` batch by batch with
    their vectors and content hashes. `incremental` (ignored with `recreate`): skip documents the index
    holds with the same content hash, without embedding them. `progress(done, total)` counts documents
    handled (skipped, embedded or written); `total` defaults to the length of a sequence. `passages`: a
    passage index, each document cut by the splitter and embedded passage by passage.

    The model and dimension are checked before any embedding work, so a mismatch fails fast."""
    layout = passages.label if passages is not None else ""
    backend.create_index(embedder.model_name, embedder.dimension, recreate=recreate, passages=layout)
    if total is None and isinstance(documents, Sequence):
        total = len(documents)
    totals = _Totals()
    for batch in batched(documents, batch_size):
        report_batch = _within(progress, totals.documents, len(batch), total)
        hashed = [doc.hashed() for doc in batch]
        _index_batch(backend, embedder, hashed, incremental and not recreate, totals, report_batch, passages)
        totals.documents += len(batch)
        report_batch(len(batch), len(batch))
    backend.commit()
    bulk = BulkReport(written=totals.written, failures=totals.failures)
    return IndexReport(
        bulk,
        totals.documents,
        totals.embed_seconds,
        totals.write_seconds,
        embedded=totals.embedded,
        unchanged=totals.unchanged,
        passages=totals.passages,
    )


def _within(progress: ProgressCallback | None, at: int, size: int, total: int | None) -> ProgressCallback:
    """Progress inside one batch (`done` of its `size`), reported as progress over the whole run."""

    def update(done: int, _: int) -> None:
        if progress is not None:
            progress(at + done, max(total or 0, at + size))

    return update


def _index_batch(
    backend: Backend,
    embedder: Embedder,
    batch: list[Document],
    incremental: bool,
    totals: _Totals,
    progress: ProgressCallback,
    splitter: PassageSplitter | None = None,
) -> None:
    todo = changed_documents(batch, backend.content_hashes([d.id for d in batch])) if incremental else batch
    skipped = len(batch) - len(todo)
    totals.unchanged += skipped
    if not todo:
        return
    started = time.perf_counter()
    spans: list[list[Passage]] | None = None
    if splitter is None:
        vectors = embedder.embed_documents(todo, lambda done, _: progress(skipped + done, len(batch)))
    else:
        spans = [splitter.spans(doc.text) for doc in todo]
        vectors = _embed_passages(
            embedder, splitter, todo, spans, lambda done: progress(skipped + done, len(batch))
        )
        totals.passages += len(vectors)
    embedded = time.perf_counter()
    report = backend.bulk_index(todo, vectors, spans)
    totals.embed_seconds += embedded - started
    totals.write_seconds += time.perf_counter() - embedded
    totals.embedded += len(todo)
    totals.written += report.written
    totals.failures.extend(report.failures)


def _embed_passages(
    embedder: Embedder,
    splitter: PassageSplitter,
    documents: list[Document],
    spans: list[list[Passage]],
    progress: Callable[[int], None],
) -> Vector:
    """One vector per passage, the documents' passages in order, through the embedder's `embed_documents`
    (so its passage prompt applies); progress counts documents whose passages are all embedded."""
    pieces = [
        piece
        for doc, its in zip(documents, spans, strict=True)
        for piece in splitter.passage_documents(doc, its)
    ]
    ends = list(accumulate(len(its) for its in spans))
    return embedder.embed_documents(pieces, lambda done, _: progress(bisect_right(ends, done)))


def delete_documents(backend: Backend, ids: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Remove documents by id, a batch at a time; returns how many existed."""
    deleted = sum(backend.delete(batch) for batch in batched(ids, batch_size))
    backend.commit()
    return deleted


def sync_deletions(backend: Backend, keep: Container[str], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Delete every document of the live index whose id is not in `keep` (the source's ids). The doomed
    ids are listed first, so no store is asked to delete while it lists."""
    doomed = [doc_id for doc_id in backend.all_ids() if doc_id not in keep]
    return delete_documents(backend, doomed, batch_size)

"""Bulk chunking by count and by bytes, with hand-computed sizes: the backend's actions (`bulk_actions`) cut
into requests by opensearch-py's chunker under the backend's `chunk_docs` / `chunk_bytes` (the same call
`OpenSearchBackend.bulk_index` makes; tests/integration/test_opensearch_pressure.py counts the requests a
real node receives).

On the wire one document is two lines, each followed by a newline (compact JSON, as the client sends it):

    {"index":{"_id":"d0","_index":"ix-v1"}}                                             39 + 1 = 40 bytes
    {"doc_id":"d0","title":"","text":"<n chars>","metadata":{},"embedding":[0.5,0.25]}  73 + n + 1 bytes

`{"doc_id":"d0","title":"","text":"` is 34 characters and `","metadata":{},"embedding":[0.5,0.25]}` 39, so a
document with a two-character id and n ASCII characters of text takes 114 + n bytes: n = 86 gives 200 bytes,
n = 286 gives 400, n = 886 gives 1,000.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from opensearchpy.helpers.actions import _chunk_actions, expand_action

from hybrid_rerank.connector.backends import opensearch_bodies as bodies
from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.factory import open_backend
from hybrid_rerank.connector.settings import load_settings

VECTOR = np.array([0.5, 0.25], dtype=np.float32)


def docs_of(sizes: Sequence[int]) -> list[Document]:
    """Documents d0, d1, ... that each take exactly `size` bytes on the wire (ids stay two characters)."""
    assert len(sizes) <= 10
    return [Document(f"d{i}", "x" * (size - 114)) for i, size in enumerate(sizes)]


def chunks(documents: list[Document], chunk_docs: int, chunk_bytes: int) -> list[list[str]]:
    """The ids of each bulk request, as `streaming_bulk` cuts them."""
    backend = open_backend(load_settings(_env_file=None, opensearch_url="http://127.0.0.1:9"), "ix")
    assert isinstance(backend, OpenSearchBackend)  # built, never connected
    actions = bodies.bulk_actions("ix-v1", documents, [VECTOR] * len(documents))
    cut = _chunk_actions(
        map(expand_action, actions), chunk_docs, chunk_bytes, backend.client.transport.serializer
    )
    return [[action["index"]["_id"] for action, _source in data] for data, _lines in cut]


def wire_bytes(document: Document) -> int:
    backend = open_backend(load_settings(_env_file=None, opensearch_url="http://127.0.0.1:9"), "ix")
    (action,) = bodies.bulk_actions("ix-v1", [document], [VECTOR])
    head, source = expand_action(action)
    serializer = backend.client.transport.serializer
    return sum(len(serializer.dumps(line).encode("utf-8")) + 1 for line in (head, source))


@pytest.mark.parametrize("size", [200, 400, 1_000])
def test_the_hand_computed_size_of_a_document(size: int) -> None:
    assert wire_bytes(docs_of([size])[0]) == size


def ids(*groups: int) -> list[list[str]]:
    """`ids(3, 3, 1)` -> [[d0, d1, d2], [d3, d4, d5], [d6]]."""
    out: list[list[str]] = []
    start = 0
    for n in groups:
        out.append([f"d{i}" for i in range(start, start + n)])
        start += n
    return out


@pytest.mark.parametrize(
    ("sizes", "chunk_docs", "chunk_bytes", "expected"),
    [
        # By count: 7 documents, 3 a request.
        ([200] * 7, 3, 10_000_000, ids(3, 3, 1)),
        # By bytes: 600 holds three 200-byte documents exactly, 599 only two.
        ([200] * 7, 500, 600, ids(3, 3, 1)),
        ([200] * 7, 500, 599, ids(2, 2, 2, 1)),
        # Both: whichever limit comes first cuts. 400+400 = 800 (a 200 more would be 1,000 > 800); then
        # three 200s are 600 but the count is full; then the last 400. Then: pairs of 200s by count, and
        # 400+400 = 800 > 799 by bytes.
        ([400, 400, 200, 200, 200, 400], 3, 800, ids(2, 3, 1)),
        ([200, 200, 200, 200, 400, 400], 2, 799, ids(2, 2, 1, 1)),
        # A document over the byte limit still goes, alone.
        ([200, 1_000, 200], 500, 600, ids(1, 1, 1)),
    ],
)
def test_requests_respect_both_limits(
    sizes: list[int], chunk_docs: int, chunk_bytes: int, expected: list[list[str]]
) -> None:
    documents = docs_of(sizes)
    got = chunks(documents, chunk_docs, chunk_bytes)
    assert got == expected
    size_of = {d.id: s for d, s in zip(documents, sizes, strict=True)}
    for request in got:
        assert len(request) <= chunk_docs
        assert len(request) == 1 or sum(size_of[i] for i in request) <= chunk_bytes


def test_the_configured_limits_are_500_documents_and_10_mb() -> None:
    """What the README promises, on the backend the application builds (settings -> factory)."""
    backend = open_backend(load_settings(_env_file=None, opensearch_url="http://127.0.0.1:9"), "ix")
    assert isinstance(backend, OpenSearchBackend)
    assert (backend.chunk_docs, backend.chunk_bytes) == (500, 10_000_000)
    assert backend.max_document_bytes < backend.chunk_bytes  # so every sendable document fits a request
    # 1,001 small documents: 500, 500, 1. Ten documents of exactly 1,000,000 bytes fill a request to the byte.
    small = [Document(f"s{i:04d}", "x") for i in range(1_001)]
    counts = [len(c) for c in chunks(small, backend.chunk_docs, backend.chunk_bytes)]
    assert counts == [500, 500, 1]
    big = [*docs_of([1_000_000] * 10), Document("dx", "x" * (1_000_000 - 114))]
    counts = [len(c) for c in chunks(big, backend.chunk_docs, backend.chunk_bytes)]
    assert counts == [10, 1]

"""The embedded backend: rank-bm25 and exact cosine over a numpy matrix, persisted under DATA_DIR.

Like SQLite for a database project: no server, for a quick start and for tests. On disk an index is a folder

    DATA_DIR/INDEX_NAME/CURRENT            name of the live generation folder
    DATA_DIR/INDEX_NAME/gen-000003/        manifest.json, documents.jsonl, vectors.npy, terms.jsonl
                                           (+ passages.npy on a passage index)

A passage index (`manifest.passages` set) holds one vector row per passage: `vectors.npy` is the passage
matrix and `passages.npy` gives each row's (document row, start, end); the k-NN leg scores a document by
its best row.

Loading reads JSON and a `.npy` array with `allow_pickle=False`, so it never executes code. Every write
builds a new generation folder and then swaps `CURRENT` with an atomic rename, so a crash mid-write leaves
the previous index intact: nothing is half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from hybrid_rerank.connector.backends.base import (
    Backend,
    BulkReport,
    Embedded,
    Filters,
    IndexInfo,
    LegHit,
    Passage,
    Recall,
    Vector,
    bare,
    check_index_matches,
    matches_filters,
    split_sendable,
)
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import ConfigurationError, IndexMismatchError, IndexMissingError
from hybrid_rerank.connector.text import TOKENIZER_VERSION, tokenize

FORMAT_VERSION = 1


class LuceneBM25(BM25Okapi):  # type: ignore[misc]
    """BM25Okapi with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)), which is never negative, and
    Lucene's k1 = 1.2, so scores follow OpenSearch's more closely."""

    def __init__(self, corpus: list[list[str]]) -> None:
        super().__init__(corpus, k1=1.2, b=0.75)

    def _calc_idf(self, nd: dict[str, int]) -> None:
        self.idf = {
            word: math.log(1.0 + (self.corpus_size - freq + 0.5) / (freq + 0.5)) for word, freq in nd.items()
        }


class EmbeddedBackend(Backend):
    """An in-process index for one index name under `data_dir`."""

    name = "embedded"

    def __init__(self, data_dir: Path, index_name: str) -> None:
        if not index_name or "/" in index_name or index_name.startswith("."):
            raise ConfigurationError(f"INDEX_NAME {index_name!r} is not a valid folder name")
        self.root = Path(data_dir) / index_name
        self.index_name = index_name
        self._info: IndexInfo | None = None
        self._documents: list[Document] = []
        self._terms: list[list[str]] = []  # BM25 terms per document, stored so a search need not re-tokenize
        self._row_of: dict[str, int] = {}
        self._rows: list[Embedded] = []  # per document row: its vectors (and passages)
        self._matrix: tuple[Vector, np.ndarray] | None = None  # all vectors, and each one's document row
        self._bm25: LuceneBM25 | None = None
        self._unsaved = False
        self._load()

    # --- index lifecycle -------------------------------------------------------------------------------

    def index_info(self) -> IndexInfo | None:
        return self._info

    def create_index(
        self, embedding_model: str, dimension: int, *, recreate: bool = False, passages: str = ""
    ) -> IndexInfo:
        if self._info is not None and not recreate:
            check_index_matches(self._info, embedding_model, dimension, passages)
            return self._info
        replacing = self._info is not None
        self._documents, self._terms, self._row_of, self._bm25 = [], [], {}, None
        self._rows, self._matrix = [], None
        self._info = IndexInfo(self.index_name, embedding_model, dimension, 0, passages)
        # A re-created index is staged in memory and replaces the old one on disk only at commit, so a run
        # that dies midway leaves the old index whole (as the engines' alias swap); a new index exists on
        # disk at once and takes every batch as it is written.
        self._unsaved = replacing
        if not replacing:
            self._persist()
        return self._info

    # --- writes ----------------------------------------------------------------------------------------

    def bulk_index(
        self,
        documents: Sequence[Document],
        vectors: Vector,
        passages: Sequence[Sequence[Passage]] | None = None,
    ) -> BulkReport:
        info = self._require_index()
        if (passages is not None) != bool(info.passages):
            held = "passages" if info.passages else "one vector per document"
            raise IndexMismatchError(f"index {self.index_name!r} holds {held}; write it the same way")
        accepted, failures = split_sendable(documents, vectors, info.dimension, passages)
        if accepted:
            for item in accepted:
                doc = item.document
                stored = Embedded(doc, item.vectors.astype(np.float32), item.passages)
                row = self._row_of.get(doc.id)
                if row is None:
                    self._row_of[doc.id] = len(self._documents)
                    self._documents.append(doc)
                    self._terms.append(tokenize(doc.full_text))
                    self._rows.append(stored)
                else:
                    self._documents[row] = doc
                    self._terms[row] = tokenize(doc.full_text)
                    self._rows[row] = stored
            self._changed()
        return BulkReport(written=len(accepted), failures=failures)

    def delete(self, ids: Sequence[str]) -> int:
        self._require_index()
        doomed = {self._row_of[i] for i in ids if i in self._row_of}
        if doomed:
            keep = [row for row in range(len(self._documents)) if row not in doomed]
            self._documents = [self._documents[row] for row in keep]
            self._terms = [self._terms[row] for row in keep]
            self._rows = [self._rows[row] for row in keep]
            self._row_of = {doc.id: row for row, doc in enumerate(self._documents)}
            self._changed()
        return len(doomed)

    def commit(self) -> None:
        """Writes are durable and searchable as they happen; only a re-created index waits for this."""
        if self._unsaved:
            self._persist()

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        return {i: self._documents[self._row_of[i]].content_hash for i in ids if i in self._row_of}

    def all_ids(self) -> Iterator[str]:
        self._require_index()
        return iter([doc.id for doc in self._documents])  # a copy: deleting while listing is safe

    # --- reads -----------------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> dict[str, Document]:
        return {i: self._documents[self._row_of[i]] for i in ids if i in self._row_of}

    def bm25(
        self, query: str, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        self._require_index()
        terms = tokenize(query)
        if not terms or not self._documents:
            return []
        if self._bm25 is None:
            self._build_bm25()
        assert self._bm25 is not None
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float64)
        scores[~self._filter_mask(filters)] = 0.0
        return self._top(scores, size, keep=scores > 0.0, texts=texts)

    def knn(
        self, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> list[LegHit]:
        info = self._require_index()
        if vector.shape != (info.dimension,):
            raise IndexMismatchError(
                f"query vector has dimension {vector.shape[-1]}, "
                f"index {self.index_name!r} has {info.dimension}"
            )
        if not self._documents:
            return []
        matrix, owners = self._vector_matrix()
        row_scores = (matrix @ vector.astype(np.float32)).astype(np.float64)
        if not info.passages:
            return self._top(row_scores, size, keep=self._filter_mask(filters), texts=texts)
        # A document's score is its best passage's; `best` keeps which vector row that was.
        scores = np.full(len(self._documents), -np.inf)
        np.maximum.at(scores, owners, row_scores)
        best = np.zeros(len(self._documents), dtype=np.int64)
        order = np.argsort(row_scores, kind="stable")  # ascending: the best row of each document wins last
        best[owners[order]] = order
        hits = self._top(scores, size, keep=self._filter_mask(filters), texts=texts)
        return [self._with_passage(hit, int(best[self._row_of[hit.document.id]]), owners) for hit in hits]

    def _with_passage(self, hit: LegHit, vector_row: int, owners: np.ndarray) -> LegHit:
        document_row = int(owners[vector_row])
        first_row = int(np.searchsorted(owners, document_row))  # rows are grouped by document, in order
        passages = self._rows[document_row].passages
        assert passages is not None
        return LegHit(hit.document, hit.score, passages[vector_row - first_row])

    @property
    def _vectors(self) -> Vector:
        """Every stored vector row: one per document, or one per passage on a passage index."""
        return self._vector_matrix()[0]

    def _vector_matrix(self) -> tuple[Vector, np.ndarray]:
        """Every stored vector row (passages grouped by document, in document order) and its document row."""
        if self._matrix is None:
            assert self._info is not None
            counts = [len(item.vectors) for item in self._rows]
            matrix = (
                np.vstack([item.vectors for item in self._rows])
                if self._rows
                else np.zeros((0, self._info.dimension), dtype=np.float32)
            )
            self._matrix = (matrix.astype(np.float32, copy=False), np.repeat(np.arange(len(counts)), counts))
        return self._matrix

    def recall(
        self, query: str, vector: Vector, size: int, filters: Filters | None = None, *, texts: bool = True
    ) -> Recall:
        started = time.perf_counter()
        bm25 = self.bm25(query, size, filters, texts=texts)
        middle = time.perf_counter()
        knn = self.knn(vector, size, filters, texts=texts)
        ended = time.perf_counter()
        return Recall(bm25, knn, {"bm25": (middle - started) * 1000.0, "knn": (ended - middle) * 1000.0})

    # --- internals -------------------------------------------------------------------------------------

    def _filter_mask(self, filters: Filters | None) -> np.ndarray:
        if not filters:
            return np.ones(len(self._documents), dtype=bool)
        return np.fromiter((matches_filters(d.metadata, filters) for d in self._documents), dtype=bool)

    def _top(self, scores: np.ndarray, size: int, keep: np.ndarray, *, texts: bool) -> list[LegHit]:
        candidates = np.flatnonzero(keep)
        if size <= 0 or candidates.size == 0:
            return []
        if candidates.size > size:
            part = np.argpartition(-scores[candidates], size - 1)[:size]
            candidates = candidates[part]
        # Best first; ties by document id, as everywhere else.
        ordered = sorted(candidates.tolist(), key=lambda row: (-scores[row], self._documents[row].id))
        # `texts=False` hits are bare, as on an engine, so no caller comes to rely on texts it did not ask for
        documents = [self._documents[row] if texts else bare(self._documents[row].id) for row in ordered]
        return [LegHit(doc, float(scores[row])) for doc, row in zip(documents, ordered, strict=True)]

    def _build_bm25(self) -> None:
        self._bm25 = LuceneBM25([terms or [""] for terms in self._terms])

    def _require_index(self) -> IndexInfo:
        if self._info is None:
            raise IndexMissingError(
                f"index {self.index_name!r} does not exist under {self.root.parent}; "
                "run `hybrid-rerank index PATH` first (or check DATA_DIR and INDEX_NAME)"
            )
        return self._info

    def _changed(self) -> None:
        assert self._info is not None
        self._bm25, self._matrix = None, None
        info = self._info
        self._info = IndexInfo(
            info.name, info.embedding_model, info.dimension, len(self._documents), info.passages
        )
        if not self._unsaved:  # a re-created index waits for commit
            self._persist()

    def _persist(self) -> None:
        assert self._info is not None
        self._unsaved = False
        self.root.mkdir(parents=True, exist_ok=True)
        previous = self._current_generation()
        number = int(previous.name.split("-")[1]) + 1 if previous else 1
        generation = self.root / f"gen-{number:06d}"
        if generation.exists():
            shutil.rmtree(generation)
        generation.mkdir()
        with (generation / "documents.jsonl").open("w", encoding="utf-8") as handle:
            for doc in self._documents:
                handle.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
        matrix, owners = self._vector_matrix()
        np.save(generation / "vectors.npy", matrix, allow_pickle=False)
        if self._info.passages:
            spans = [(p.start, p.end) for item in self._rows for p in item.passages or []]
            table = np.column_stack([owners, np.asarray(spans, dtype=np.int64).reshape(-1, 2)])
            np.save(generation / "passages.npy", table.astype(np.int64), allow_pickle=False)
        with (generation / "terms.jsonl").open("w", encoding="utf-8") as handle:
            for terms in self._terms:
                handle.write(json.dumps(terms, ensure_ascii=False) + "\n")
        manifest = {
            "format": FORMAT_VERSION,
            "tokenizer": TOKENIZER_VERSION,
            "name": self._info.name,
            "embedding_model": self._info.embedding_model,
            "dimension": self._info.dimension,
            "count": len(self._documents),
            "passages": self._info.passages,
        }
        (generation / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        pointer = self.root / "CURRENT.tmp"
        pointer.write_text(generation.name, encoding="utf-8")
        os.replace(pointer, self.root / "CURRENT")  # the commit point
        for stale in self.root.glob("gen-*"):
            if stale != generation:
                shutil.rmtree(stale, ignore_errors=True)

    def _current_generation(self) -> Path | None:
        pointer = self.root / "CURRENT"
        if not pointer.is_file():
            return None
        return self.root / pointer.read_text(encoding="utf-8").strip()

    def _load(self) -> None:
        generation = self._current_generation()
        if generation is None:
            return
        try:
            manifest = json.loads((generation / "manifest.json").read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}")
            with (generation / "documents.jsonl").open(encoding="utf-8") as handle:
                documents = [_document_from_store(json.loads(line)) for line in handle]
            vectors = np.load(generation / "vectors.npy", allow_pickle=False).astype(np.float32, copy=False)
            layout = str(manifest.get("passages") or "")
            table = np.load(generation / "passages.npy", allow_pickle=False) if layout else None
            terms_file = generation / "terms.jsonl"
            if manifest.get("tokenizer") == TOKENIZER_VERSION and terms_file.is_file():
                with terms_file.open(encoding="utf-8") as handle:
                    terms = [json.loads(line) for line in handle]
            else:  # written by another tokenizer version: recompute
                terms = [tokenize(doc.full_text) for doc in documents]
        except (OSError, ValueError, KeyError) as exc:
            raise IndexMismatchError(
                f"embedded index at {generation} is unreadable ({exc}); re-create it with `index --recreate`"
            ) from exc
        rows = _stored_rows(documents, vectors, table)
        if rows is None or vectors.shape[1:] != (manifest["dimension"],) or len(terms) != len(documents):
            raise IndexMismatchError(
                f"embedded index at {generation} is inconsistent: {len(documents)} documents, "
                f"{len(terms)} term lists, vectors {vectors.shape}; re-create it with `index --recreate`"
            )
        self._documents = documents
        self._terms = terms
        self._row_of = {doc.id: row for row, doc in enumerate(documents)}
        self._rows, self._matrix = rows, None
        self._info = IndexInfo(
            manifest["name"], manifest["embedding_model"], manifest["dimension"], len(documents), layout
        )
        if documents:  # built here, so a search's BM25 time is the query's own
            self._build_bm25()


def _stored_rows(
    documents: list[Document], vectors: Vector, table: np.ndarray | None
) -> list[Embedded] | None:
    """Each document's vectors (and passages, from `table`'s (document row, start, end) rows), or None when
    the files do not agree."""
    if table is None:
        if len(vectors) != len(documents):
            return None
        return [Embedded(doc, vectors[row : row + 1]) for row, doc in enumerate(documents)]
    if table.shape != (len(vectors), 3):
        return None
    owners = table[:, 0]
    bounds = np.searchsorted(owners, np.arange(len(documents) + 1))
    rows = []
    for row, doc in enumerate(documents):
        first, last = int(bounds[row]), int(bounds[row + 1])
        if first == last:
            return None
        spans = [Passage(int(start), int(end)) for start, end in table[first:last, 1:]]
        rows.append(Embedded(doc, vectors[first:last], spans))
    return rows


def _document_from_store(record: dict[str, object]) -> Document:
    metadata = record.get("metadata") or {}
    assert isinstance(metadata, dict)
    return Document(
        id=str(record["_id"]),
        text=str(record["text"]),
        title=str(record.get("title", "")),
        metadata=metadata,
        content_hash=str(record.get("content_hash", "")),
    )

"""Small slices of the team's real datasets (../shared/datasets), indexed and searched end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document, load_documents
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from tests.conftest import shared_dataset


def dataset_slice(
    folder: Path, n_queries: int, n_distractors: int
) -> tuple[list[Document], dict[str, str], dict[str, set[str]]]:
    """The first test queries, their relevant documents and the first other documents of the corpus."""
    qrels: dict[str, set[str]] = {}
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["query-id"] in qrels or len(qrels) < n_queries:
                qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["_id"] in qrels:
                queries[record["_id"]] = record["text"]  # never the query metadata: it holds the answers
    wanted = {doc_id for ids in qrels.values() for doc_id in ids}
    documents = load_documents(folder).documents
    kept = [d for d in documents if d.id in wanted]
    kept += [d for d in documents if d.id not in wanted][:n_distractors]
    return kept, queries, qrels


@pytest.mark.parametrize(("name", "min_hits"), [("scifact", 8), ("cmrc2018", 9)])
def test_hybrid_recall_finds_relevant_documents(
    name: str, min_hits: int, tmp_path: Path, embedder: Embedder
) -> None:
    documents, queries, qrels = dataset_slice(shared_dataset(name), n_queries=10, n_distractors=60)
    backend = EmbeddedBackend(tmp_path, name)
    report = index_documents(backend, embedder, documents)
    assert report.bulk.ok and report.bulk.written == len(documents)
    pipeline = SearchPipeline(backend, embedder, None, SearchOptions(recall_depth=20))
    hits = 0
    for query_id, text in queries.items():
        result = pipeline.search(text, k=5, rerank=False)
        hits += any(h.id in qrels[query_id] for h in result.hits)
    assert hits >= min_hits, f"{hits} of {len(queries)} {name} queries had a relevant document in the top 5"


def test_chinese_queries_match_through_bigrams(tmp_path: Path, embedder: Embedder) -> None:
    documents, queries, qrels = dataset_slice(shared_dataset("cmrc2018"), n_queries=10, n_distractors=60)
    backend = EmbeddedBackend(tmp_path, "cmrc")
    index_documents(backend, embedder, documents)
    firsts = sum(backend.bm25(text, 1)[0].document.id in qrels[qid] for qid, text in queries.items())
    assert firsts >= 8

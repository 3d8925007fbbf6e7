"""A long-document benchmark built from a BEIR corpus, and index-time passages measured on it (lab only).

`build`: documents that each concatenate 4 to 6 abstracts (a shuffled mix of the chosen queries' relevant
abstracts and filler abstracts), written as a BEIR folder; a long document is relevant to a query when any
of its abstracts is (with that abstract's grade). The relevant abstract lands anywhere in its document, so
a bi-encoder reading only the first window usually misses it.

`measure`: each layout (one vector per document, and passages) is indexed on the embedded backend (and an
engine when its URL is given), then `eval`'s own `run_eval` scores BM25, dense, the hybrid fusions and the
reranked hybrid on it; the report adds each index's size on disk.

    python -m hybrid_rerank.connector.lab.long_docs build ../shared/datasets/scifact OUT --queries 100
    python -m hybrid_rerank.connector.lab.long_docs measure OUT --passages 200/50 [--opensearch URL]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from hybrid_rerank.connector.backends.base import Backend, Passage
from hybrid_rerank.connector.chunking import PassageOptions, PassageSplitter, model_splitter
from hybrid_rerank.connector.documents import Document, load_documents
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.lab.evaluation import cached_embeddings, eval_index_name, load_beir, run_eval
from hybrid_rerank.connector.settings import load_settings


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def build(source: Path, out: Path, *, queries: int, documents: int, seed: int = 0) -> dict[str, int]:
    """Write the long-document BEIR folder; returns its counts."""
    rng = random.Random(seed)
    corpus = {doc.id: doc for doc in load_documents(source).documents}
    qrels = read_qrels(source / "qrels" / "test.tsv")
    chosen = sorted(qrels, key=lambda q: (len(q), q))[:queries]
    relevant = sorted({doc_id for q in chosen for doc_id in qrels[q] if doc_id in corpus})
    filler = sorted(set(corpus) - set(relevant))
    rng.shuffle(filler)
    sizes = [rng.randint(4, 6) for _ in range(documents)]
    members = relevant + filler[: max(sum(sizes) - len(relevant), 0)]
    rng.shuffle(members)
    long_of: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        at = 0
        for number, size in enumerate(sizes):
            group = members[at : at + size]
            at += size
            if not group:
                break
            long_id = f"long-{number:05d}"
            for doc_id in group:
                long_of[doc_id] = long_id
            text = "\n\n".join(corpus[d].full_text for d in group)
            record = {"_id": long_id, "title": "", "text": text, "metadata": {"members": group}}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    judged = 0
    (out / "qrels").mkdir(exist_ok=True)
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id in chosen:
            grades: dict[str, int] = {}
            for doc_id, grade in qrels[query_id].items():
                if doc_id in long_of:
                    grades[long_of[doc_id]] = max(grade, grades.get(long_of[doc_id], 0))
            for long_id, grade in sorted(grades.items()):
                handle.write(f"{query_id}\t{long_id}\t{grade}\n")
                judged += 1
    wanted = set(chosen)
    with (source / "queries.jsonl").open(encoding="utf-8") as src, (out / "queries.jsonl").open("w") as dst:
        for line in src:
            if line.strip() and str(json.loads(line)["_id"]) in wanted:
                dst.write(line)
    return {"documents": written, "abstracts": at, "queries": len(chosen), "judgements": judged}


def passage_vectors(
    embedder: Embedder, splitter: PassageSplitter, documents: list[Document], cache_dir: Path
) -> tuple[list[list[Passage]], Any]:
    """Every document's passages and their vectors (cached on disk like `eval`'s corpus embeddings)."""
    spans = [splitter.spans(doc.text) for doc in documents]
    pieces = [
        p for doc, its in zip(documents, spans, strict=True) for p in splitter.passage_documents(doc, its)
    ]
    vectors, _ = cached_embeddings(embedder, pieces, cache_dir)
    return spans, vectors


def build_passage_index(
    backend: Backend, embedder: Embedder, splitter: PassageSplitter, documents: list[Document], cache: Path
) -> int:
    """The passage index `run_eval` then reuses (same model name and count); returns the passage count."""
    spans, vectors = passage_vectors(embedder, splitter, documents, cache)
    backend.create_index(embedder.cache_name, int(vectors.shape[1]), recreate=True, passages=splitter.label)
    for start in range(0, len(documents), 200):
        end = start + 200
        first, last = sum(map(len, spans[:start])), sum(map(len, spans[:end]))
        report = backend.bulk_index(documents[start:end], vectors[first:last], spans[start:end])
        if report.failures:
            raise RuntimeError(f"passage index: {report.failures[0]}")
    backend.commit()
    return len(vectors)


def index_bytes(backend: Backend, data_dir: Path, name: str) -> int:
    """Bytes on disk: the embedded generation folder, or the engine's primary store after a force merge."""
    from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
    from hybrid_rerank.connector.backends.engine import EngineBackend

    if isinstance(backend, EmbeddedBackend):
        generation = backend.root / (backend.root / "CURRENT").read_text(encoding="utf-8").strip()
        return sum(path.stat().st_size for path in generation.iterdir())
    assert isinstance(backend, EngineBackend)
    client = backend.client
    client.indices.forcemerge(index=name, max_num_segments=1)
    client.indices.refresh(index=name)  # until then the merged-away segments still count
    client.indices.flush(index=name)
    rows = client.cat.indices(index=f"{name}-v*", format="json", bytes="b")
    return sum(int(row["pri.store.size"]) for row in rows)


def open_engine(url: str, name: str) -> Backend:
    from opensearchpy import OpenSearch

    from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend

    return OpenSearchBackend(OpenSearch(hosts=[url], timeout=300), name, url=url)


def measure(
    folder: Path, options: PassageOptions | None, engine_url: str | None, rerank_depth: int
) -> dict[str, Any]:
    """One layout (None: one vector per document) on the embedded backend, and the engine when given."""
    from hybrid_rerank.connector.backends.embedded import EmbeddedBackend

    settings = load_settings()
    embedder = Embedder(settings.embedding_model, batch_size=32)
    documents = load_beir(folder).documents
    suffix = f"-p{options.tokens}-{options.overlap}" if options else "-plain"
    name = eval_index_name(load_beir(folder)) + suffix
    backends: list[tuple[str, Backend]] = [("embedded", EmbeddedBackend(settings.data_dir, name))]
    if engine_url:
        backends.append(("opensearch", open_engine(engine_url, name)))
    results: dict[str, Any] = {}
    for label, backend in backends:
        started = time.perf_counter()
        passages = 0
        if options is not None:
            splitter = model_splitter(embedder.source.location, options)
            cache = settings.data_dir / "embedding-cache"
            passages = build_passage_index(backend, embedder, splitter, documents, cache)
        # Both stores recall (nearly) the same candidates: rerank once (embedded) on a small machine.
        depth = rerank_depth if label == "embedded" else 0
        print(f"{time.strftime('%H:%M:%S')} {label} {suffix}: evaluating", file=sys.stderr, flush=True)
        report = run_eval(settings, folder, backend=backend, embedder=embedder, rerank_depth=depth)
        results[label] = {
            "layout": options.label if options else "one vector per document",
            "passages": passages or len(documents),
            "bytes": index_bytes(backend, settings.data_dir, name),
            "seconds": round(time.perf_counter() - started, 1),
            "reranker": report.reranker,
            "systems": report.systems,
        }
    return results


def rerank_reading(folder: Path, options: PassageOptions, depth: int) -> dict[str, float]:
    """On the passage index `measure` built (embedded), the same reranked head read two ways: from the
    document's start (`full_text`, as without passages) and from its matched passage; nDCG@10 of each."""
    from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
    from hybrid_rerank.connector.factory import make_reranker, search_options
    from hybrid_rerank.connector.lab.evaluation import evaluate_run
    from hybrid_rerank.connector.stages import first_stage_ranking, fuse_recall, rerank_head, rerank_order
    from hybrid_rerank.workers.protocol import Candidate

    settings = load_settings()
    benchmark = load_beir(folder)
    name = f"{eval_index_name(benchmark)}-p{options.tokens}-{options.overlap}"
    backend = EmbeddedBackend(settings.data_dir, name)
    embedder = Embedder(settings.embedding_model)
    reranker = make_reranker(settings)
    assert reranker is not None, "RERANK_MODEL is off"
    query_ids = sorted(benchmark.queries)
    vectors = embedder.embed_texts([benchmark.queries[q] for q in query_ids])
    fusion = search_options(settings).fusion_options
    pools = [
        fuse_recall(backend.recall(benchmark.queries[q], v, settings.recall_depth), fusion)
        for q, v in zip(query_ids, vectors, strict=True)
    ]
    heads = {
        "passage first": [rerank_head(pool, depth) for pool in pools],
        "document start": [[Candidate(e.id, e.document.full_text) for e in pool[:depth]] for pool in pools],
    }
    results: dict[str, float] = {}
    for label, per_query in heads.items():
        outcomes = reranker.rerank_many(
            [(benchmark.queries[q], h) for q, h in zip(query_ids, per_query, strict=True)]
        )
        for weight in (1.0, 0.4):
            run = {
                q: rerank_order(first_stage_ranking(pool), outcome.scores or {}, depth, weight)[0]
                for q, pool, outcome in zip(query_ids, pools, outcomes, strict=True)
            }
            results[f"{label}, w={weight:g}"] = evaluate_run(run, benchmark.qrels)["ndcg@10"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the long-document BEIR folder")
    make.add_argument("source", type=Path)
    make.add_argument("out", type=Path)
    make.add_argument("--queries", type=int, default=100)
    make.add_argument("--documents", type=int, default=1000)
    run = commands.add_parser("measure", help="nDCG@10 and index size, with and without passages")
    run.add_argument("folder", type=Path)
    run.add_argument("--passages", default="200/50", help="TOKENS/OVERLAP")
    run.add_argument("--opensearch", help="also measure on this OpenSearch node")
    run.add_argument("--rerank-depth", type=int, default=30)
    run.add_argument("--only", choices=["plain", "passages"], help="measure one layout only")
    run.add_argument("--out", type=Path, help="write the results as JSON here")
    run.add_argument("--rerank-reading", action="store_true", help="only compare what the reranker reads")
    args = parser.parse_args()
    if args.command == "build":
        print(json.dumps(build(args.source, args.out, queries=args.queries, documents=args.documents)))
        return
    tokens, _, overlap = str(args.passages).partition("/")
    if args.rerank_reading:
        print(json.dumps(rerank_reading(args.folder, PassageOptions(int(tokens), int(overlap or 0)), 30)))
        return
    layouts = {"plain": None, "passages": PassageOptions(int(tokens), int(overlap or 0))}
    results = {
        key: measure(args.folder, layout, args.opensearch, args.rerank_depth)
        for key, layout in layouts.items()
        if args.only in (None, key)
    }
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

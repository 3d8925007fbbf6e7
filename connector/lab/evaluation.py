"""`hybrid-rerank eval`: metrics on a BEIR folder for BM25, dense, each fusion and hybrid + rerank, on the
configured backend; corpus embeddings cached by model and corpus. Query `metadata` (the answers) is unread."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.backends.base import Backend, Vector
from hybrid_rerank.connector.documents import Document, load_documents
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.lab.metrics import hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.pipeline import SearchOptions
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.connector.stages import (
    bm25_pool,
    first_stage_ranking,
    fuse_recall,
    rerank_head,
    rerank_order,
    rerank_weight,
)
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate

FUSIONS: tuple[FusionMethod, ...] = ("rrf", "minmax", "zscore")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Benchmark:
    name: str
    documents: list[Document]
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]


def load_beir(folder: Path, split: str = "test") -> Benchmark:
    """corpus.jsonl, queries.jsonl (id and text only) and qrels/SPLIT.tsv."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ConfigurationError(f"no qrels for split {split!r}: {qrels_path} not found")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries: dict[str, str] = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                if str(record["_id"]) in qrels:
                    queries[str(record["_id"])] = str(record["text"])
    missing = set(qrels) - set(queries)
    if missing:
        raise ConfigurationError(f"{len(missing)} judged queries are missing from queries.jsonl")
    return Benchmark(folder.name, load_documents(folder).documents, queries, qrels)


def corpus_fingerprint(documents: Sequence[Document]) -> str:
    hasher = hashlib.sha256()
    for doc in documents:
        for part in (doc.id, doc.title, doc.text):
            hasher.update(part.encode("utf-8"))
            hasher.update(b"\0")
    return hasher.hexdigest()


def cached_embeddings(
    embedder: Embedder, documents: Sequence[Document], cache_dir: Path, progress: Progress | None = None
) -> tuple[Vector, bool]:
    """Corpus embeddings from `cache_dir` when this model has embedded this corpus before; (vectors, hit)."""
    model = hashlib.sha256(embedder.cache_name.encode("utf-8")).hexdigest()[:12]
    path = cache_dir / f"{model}-{corpus_fingerprint(documents)[:16]}.npy"
    if path.is_file():
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape[0] == len(documents):
            return vectors.astype(np.float32, copy=False), True
    vectors = embedder.embed_documents(documents, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, vectors, allow_pickle=False)
    partial.replace(path)
    return vectors, False


def evaluate_run(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean metrics over the judged queries (a query missing from the run scores 0)."""
    metrics: dict[str, list[float]] = {m: [] for m in ("ndcg@10", "mrr@10", "recall@100", "hit@1", "hit@10")}
    for query_id, judged in qrels.items():
        ranking = run.get(query_id, [])
        metrics["ndcg@10"].append(ndcg_at_k(ranking, judged, 10))
        metrics["mrr@10"].append(mrr_at_k(ranking, judged, 10))
        metrics["recall@100"].append(recall_at_k(ranking, judged, 100))
        metrics["hit@1"].append(hit_rate_at_k(ranking, judged, 1))
        metrics["hit@10"].append(hit_rate_at_k(ranking, judged, 10))
    return {name: float(np.mean(values)) if values else 0.0 for name, values in metrics.items()}


def eval_index_name(benchmark: Benchmark) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", benchmark.name.lower()).strip("-") or "corpus"
    return f"eval-{slug}-{corpus_fingerprint(benchmark.documents)[:8]}"


def ensure_eval_index(
    backend: Backend, embedder: Embedder, documents: Sequence[Document], vectors: Vector
) -> bool:
    """(Re)build the evaluation index unless it already holds this corpus for this model; True if built."""
    info = backend.index_info()
    if (
        info is not None
        and info.count == len(documents)
        and info.embedding_model == embedder.cache_name
        and info.dimension == vectors.shape[1]
    ):
        return False
    backend.create_index(embedder.cache_name, int(vectors.shape[1]), recreate=True)
    report = backend.bulk_index(documents, vectors)
    backend.commit()
    if report.failures:
        raise ConfigurationError(
            f"{len(report.failures)} documents failed to index, e.g. {report.failures[0]}"
        )
    return True


@dataclass(frozen=True)
class PreparedBenchmark:
    benchmark: Benchmark
    backend: Backend
    embedder: Embedder
    cache_hit: bool
    index_built: bool


def prepare_benchmark(
    settings: Settings,
    folder: Path,
    split: str,
    *,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> PreparedBenchmark:
    """The BEIR split loaded, its corpus embedded (or read from the cache) and indexed (or reused)."""
    from hybrid_rerank.connector.factory import make_embedder, open_backend

    benchmark = load_beir(folder, split)
    embedder = embedder or make_embedder(settings)
    vectors, cache_hit = cached_embeddings(
        embedder,
        benchmark.documents,
        settings.data_dir / "embedding-cache",
        (lambda done, total: progress("embedding corpus", done, total)) if progress else None,
    )
    backend = backend or open_backend(settings, eval_index_name(benchmark))
    built = ensure_eval_index(backend, embedder, benchmark.documents, vectors)
    return PreparedBenchmark(benchmark, backend, embedder, cache_hit, built)


def hybrid_rankings(
    backend: Backend, options: SearchOptions, texts: Sequence[str], vectors: Vector, depth: int
) -> list[list[tuple[str, float]]]:
    """The configured hybrid fusion's top `depth` (id, fused score) for each query text."""
    rankings: list[list[tuple[str, float]]] = []
    for text, vector in zip(texts, vectors, strict=True):
        pool = fuse_recall(backend.recall(text, vector, options.recall_depth), options.fusion_options)
        rankings.append(first_stage_ranking(pool[:depth]))
    return rankings


METRICS = ("ndcg@10", "mrr@10", "recall@100", "hit@1", "hit@10")


@dataclass(frozen=True)
class EvalReport(Report):
    dataset: str
    split: str
    queries: int
    documents: int
    backend: str
    embedding_model: str
    rerank_model: str | None  # None: no reranked system (off, or it could not load)
    reranker: str | None
    rerank_depth: int
    rerank_weight: float  # 1.0: the rerank order alone, else also an interpolated system
    recall_depth: int
    rerank_failures: tuple[str, ...]  # "query id: reason"; those queries kept their first-stage order
    rerank_skipped: str | None  # why the model could not load
    # queries the language guard answered by BM25 alone or left unreranked (their rows show that order)
    language_guarded: int
    embedding_cache_hit: bool
    index_built: bool
    seconds: float
    systems: dict[str, dict[str, float]]  # system -> METRICS
    domain_in: int = 0  # queries the domain guard gave the model's tuned weight instead of `rerank_weight`

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.queries,
            "documents": self.documents,
            "backend": self.backend,
            "embedding_model": self.embedding_model,
            "rerank_model": self.rerank_model,
            "reranker": self.reranker,
            "rerank_depth": self.rerank_depth,
            "rerank_weight": self.rerank_weight,
            "recall_depth": self.recall_depth,
            "rerank_failures": list(self.rerank_failures),
            "rerank_skipped": self.rerank_skipped,
            "language_guarded": self.language_guarded,
            "domain_in": self.domain_in,
            "embedding_cache_hit": self.embedding_cache_hit,
            "index_built": self.index_built,
            "seconds": self.seconds,
            "systems": self.systems,
        }

    def table(self) -> Table:
        cache = "cached" if self.embedding_cache_hit else "computed"
        return report_table(
            f"{Path(self.dataset).name} {self.split}: {self.queries} queries, {self.documents} documents, "
            f"{self.backend} backend",
            ("system", *METRICS),
            [[name, *(f"{metrics[m]:.4f}" for m in METRICS)] for name, metrics in self.systems.items()],
            caption=f"{self.seconds:.0f}s; corpus embeddings {cache}"
            + (
                f"; {self.language_guarded} queries in a language the models do not read kept BM25 alone "
                "or the first-stage order in the default rows (LANGUAGE_GUARD)"
                if self.language_guarded
                else ""
            ),
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.systems)
        ndcg = [self.systems[n]["ndcg@10"] for n in names]
        recall = [self.systems[n]["recall@100"] for n in names]
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names)), 4))
        ax.bar(x - 0.2, ndcg, 0.4, label="nDCG@10")
        ax.bar(x + 0.2, recall, 0.4, label="Recall@100")
        for xi, value in zip(x, ndcg, strict=True):
            ax.text(xi - 0.2, value + 0.01, f"{value:.3f}", ha="center", fontsize=8)
        ax.set_xticks(x, names, rotation=20, ha="right")
        ax.set_ylim(0, 1.15)
        name = Path(self.dataset).name
        ax.set_title(f"{name} ({self.split}, {self.queries} queries, {self.backend} backend)")
        ax.legend(loc="upper right", ncols=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_eval(
    settings: Settings,
    folder: Path,
    *,
    split: str = "test",
    rerank_depth: int | None = None,
    max_queries: int | None = None,
    backend: Backend | None = None,
    embedder: Embedder | None = None,
    reranker: Reranker | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Every system on the same recall legs; the reranked system reranks the configured fusion's top M,
    through the pipeline's own stage functions."""
    from hybrid_rerank.connector.factory import domain_guard, language_guard, make_reranker, search_options

    started = time.perf_counter()
    prepared = prepare_benchmark(
        settings, folder, split, backend=backend, embedder=embedder, progress=progress
    )
    benchmark, backend, embedder = prepared.benchmark, prepared.backend, prepared.embedder
    cache_hit, built = prepared.cache_hit, prepared.index_built
    query_ids = sorted(benchmark.queries)[:max_queries] if max_queries else sorted(benchmark.queries)
    qrels = {q: benchmark.qrels[q] for q in query_ids}
    query_vectors = embedder.embed_queries([benchmark.queries[q] for q in query_ids])
    # The default pipeline's guards: language (BM25 alone / no rerank) and domain (the model's tuned weight).
    guard = language_guard(settings)
    plans = {q: guard.plan(benchmark.queries[q]) if guard is not None else None for q in query_ids}

    options = search_options(settings)
    domains, in_domain = domain_guard(settings) if options.rerank_weight is None else None, 0
    depth = settings.rerank_depth if rerank_depth is None else rerank_depth
    configured = f"hybrid-{settings.fusion}"
    runs: dict[str, dict[str, list[str]]] = {
        name: {} for name in ("bm25", "dense", *(f"hybrid-{f}" for f in FUSIONS))
    }
    firsts: dict[str, list[tuple[str, float]]] = {}  # the configured fusion's ranking, as reranking reads it
    heads: dict[str, list[Candidate]] = {}
    for done, (query_id, vector) in enumerate(zip(query_ids, query_vectors, strict=True), start=1):
        recall = backend.recall(benchmark.queries[query_id], vector, options.recall_depth)
        runs["bm25"][query_id] = [h.document.id for h in recall.bm25]
        runs["dense"][query_id] = [h.document.id for h in recall.knn]
        for method in FUSIONS:
            pool = fuse_recall(recall, replace(options.fusion_options, method=method))
            runs[f"hybrid-{method}"][query_id] = [entry.id for entry in pool]
            if method == settings.fusion:
                plan = plans[query_id]
                if plan is not None and not plan.dense:
                    pool = bm25_pool(recall.bm25)
                firsts[query_id] = first_stage_ranking(pool)
                heads[query_id] = rerank_head(pool, depth)
        if progress:
            progress("first stage", done, len(query_ids))

    reranker = reranker if reranker is not None else make_reranker(settings)
    skipped = reranker.available() if reranker is not None else None
    if skipped is not None:  # a model that cannot load skips the system instead of failing every query
        reranker = None
    rerank_name = f"{configured}+rerank@{depth}"
    weights: set[float] = set()
    failures: list[str] = []
    mixed: dict[str, list[str]] = {}
    if reranker is not None and depth > 0:
        readable = [q for q in query_ids if (plan := plans[q]) is None or plan.rerank]
        outcomes = dict(
            zip(
                readable,
                reranker.rerank_many(
                    [(benchmark.queries[q], heads[q]) for q in readable],
                    progress=(lambda done, total: progress("reranking", done, total)) if progress else None,
                ),
                strict=True,
            )
        )
        runs[rerank_name] = {}
        for position, query_id in enumerate(query_ids):
            first = firsts[query_id]
            outcome = outcomes.get(query_id)
            if outcome is None:  # the reranker does not read this query: the first stage, as in search
                runs[rerank_name][query_id] = mixed[query_id] = [doc_id for doc_id, _ in first]
                continue
            if outcome.scores is None:  # counted and reported: that query keeps its first-stage order
                failures.append(f"{query_id}: {outcome.reason}")
                runs[rerank_name][query_id] = mixed[query_id] = [doc_id for doc_id, _ in first]
                continue
            weight = rerank_weight(options.rerank_weight, outcome.interpolation_weight)
            weights.add(weight)
            query_weight = weight
            if domains is not None and outcome.interpolation_weight is not None:
                vector = query_vectors[position] if (plan := plans[query_id]) is None or plan.dense else None
                query_weight = domains.decide(weight, vector, embedder.model_name).weight
                in_domain += query_weight != weight
            runs[rerank_name][query_id] = rerank_order(first, outcome.scores, depth, 1.0)[0]
            mixed[query_id] = rerank_order(first, outcome.scores, depth, query_weight)[0]
    if len(weights) > 1:
        raise ConfigurationError(f"the rerank replies carried different interpolation weights: {weights}")
    weight = weights.pop() if weights else 1.0
    if reranker is not None and depth > 0 and weight < 1.0:
        tag = f" ({in_domain} in-domain w={domains.in_domain_weight:g})" if domains and in_domain else ""
        runs[f"{rerank_name} interpolated w={weight:g}{tag}"] = mixed

    return EvalReport(
        dataset=str(folder),
        split=split,
        queries=len(query_ids),
        documents=len(benchmark.documents),
        backend=backend.name,
        embedding_model=embedder.model_name,
        rerank_model=settings.rerank_model if reranker is not None else None,
        reranker=reranker.description if reranker is not None else None,
        rerank_depth=depth,
        rerank_weight=weight,
        recall_depth=settings.recall_depth,
        rerank_failures=tuple(failures),
        rerank_skipped=skipped,
        language_guarded=sum(
            1 for q in query_ids if (plan := plans[q]) is not None and plan.note is not None
        ),
        embedding_cache_hit=cache_hit,
        index_built=built,
        seconds=time.perf_counter() - started,
        systems={name: evaluate_run(run, qrels) for name, run in runs.items()},
        domain_in=in_domain,
    )

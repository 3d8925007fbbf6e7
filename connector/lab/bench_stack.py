"""`hybrid-rerank bench search` and `bench index`: the first stage and bulk indexing, each against a baseline
in the same run.

- search: per-stage p50/p95 on the embedded backend and, with OPENSEARCH_URL or ELASTICSEARCH_URL, on that
  engine. Hybrid recall is timed as the pipeline runs it: both legs without texts in one request (`legs`;
  `bm25` and `knn` are the node's own `took` of each), fusion, then one fetch of the texts of the reranked
  head and the first page (`fetch`). Baselines on the same index, timed in turn with hybrid for every query:
  `bm25_only`, a BM25 search of the same depth returning its hits with their texts (what a BM25-only first
  stage costs), `bm25_lean`, BM25 as hybrid does it (ids, then the texts of the head and page),
  `knn_only`, the k-NN leg alone without texts (the floor the second leg adds), and `hybrid_all_texts`, both
  legs with every hit's text (how hybrid recall ran before). The engine's top 10 (each leg and fused) is
  compared with the embedded backend's on the first OVERLAP_QUERIES queries.
- index: OpenSearch bulk writes, our backend (`bulk_index` + `commit`) against raw opensearch-py
  `streaming_bulk` with its defaults into an index with the same mapping, on the same documents and vectors;
  embedding is excluded (vectors come from the embedding cache).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from hybrid_rerank.connector.backends.base import Backend, Recall, Vector
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench import latency_summary, machine
from hybrid_rerank.connector.lab.evaluation import cached_embeddings, load_beir, prepare_benchmark
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.connector.stages import (
    FusionOptions,
    PoolEntry,
    bm25_pool,
    fuse_recall,
    shown_ids,
    with_documents,
)

# Each timed in turn with hybrid_recall, query by query; `hybrid_all_texts`: both legs with every hit's text
BASELINES = ("bm25_only", "bm25_lean", "knn_only", "hybrid_all_texts")
STAGES = ("embed_query", *BASELINES, "legs", "bm25", "knn", "fusion", "fetch", "hybrid_recall")
OVERLAP_QUERIES = 50
OVERLAP_K = 10
RANKINGS = ("bm25", "knn", "fused")


def top_k_overlap(ours: Sequence[Sequence[str]], reference: Sequence[Sequence[str]], k: int) -> float:
    """Mean share of the reference's top k found in ours' top k, query by query (1.0: the same sets)."""
    if len(ours) != len(reference) or not ours:
        raise ValueError("top_k_overlap needs the same, non-zero number of queries on both sides")
    return sum(len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ours, reference, strict=True)) / len(ours)


@dataclass(frozen=True)
class SearchTimings:
    """One backend's per-stage latency_summary (ms), in STAGES order, and hybrid over BM25-only."""

    queries: int
    recall_depth: int
    stages: dict[str, dict[str, float]]
    hybrid_vs_bm25_only: dict[str, float]  # p50 and p95 ratios
    # top-10 overlap with the embedded backend per ranking (bm25, knn, fused); empty for the embedded one
    overlap_with_embedded: dict[str, float] = field(default_factory=dict)
    hybrid_vs_bm25_lean: dict[str, float] = field(default_factory=dict)  # p50 and p95 ratios
    settings: dict[str, Any] = field(default_factory=dict)  # depths, fusion, the engine's version, load

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "recall_depth": self.recall_depth,
            **self.stages,
            "hybrid_vs_bm25_only": self.hybrid_vs_bm25_only,
            "hybrid_vs_bm25_lean": self.hybrid_vs_bm25_lean,
            "top10_overlap_with_embedded": self.overlap_with_embedded,
            "settings": self.settings,
        }


@dataclass(frozen=True)
class SearchBenchReport(Report):
    machine: str
    dataset: str
    backends: dict[str, SearchTimings]  # "embedded", and the engine's name with its URL set

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "search",
            "machine": self.machine,
            "dataset": self.dataset,
            "backends": {name: timings.to_json() for name, timings in self.backends.items()},
        }

    def table(self) -> Table:
        rows: list[list[str]] = []
        for backend, timings in self.backends.items():
            for stage, summary in timings.stages.items():
                rows.append([backend, stage, f"{summary['p50']:.2f}", f"{summary['p95']:.2f}"])
            ratio, lean = timings.hybrid_vs_bm25_only, timings.hybrid_vs_bm25_lean
            rows.append([backend, "hybrid / BM25-only", f"x{ratio['p50']:.2f}", f"x{ratio['p95']:.2f}"])
            if lean:
                rows.append([backend, "hybrid / BM25 lean", f"x{lean['p50']:.2f}", f"x{lean['p95']:.2f}"])
            for ranking, share in timings.overlap_with_embedded.items():
                rows.append([backend, f"top-10 overlap with embedded: {ranking}", f"{share:.3f}", ""])
        return report_table(
            f"first stage per stage, ms ({self.machine})", ("backend", "stage", "p50", "p95"), rows, names=2
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots(figsize=(8, 4))
        x = np.arange(len(STAGES))
        width = 0.8 / max(len(self.backends), 1)
        for i, (name, timings) in enumerate(self.backends.items()):
            values = [timings.stages.get(s, {}).get("p50", 0.0) for s in STAGES]
            errors = [
                timings.stages.get(s, {}).get("p95", 0.0) - v for s, v in zip(STAGES, values, strict=True)
            ]
            ax.bar(
                x + i * width,
                values,
                width,
                yerr=[[0] * len(values), errors],
                capsize=3,
                label=f"{name} (p50, p95)",
            )
        ax.set_xticks(x + width * (len(self.backends) - 1) / 2, STAGES, rotation=15)
        ax.set_ylabel("ms")
        ax.set_title(f"First stage per stage ({self.machine})", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


@dataclass(frozen=True)
class IndexBenchReport(Report):
    machine: str
    dataset: str
    documents: int
    rounds: int
    ours_seconds: tuple[float, ...]  # one per round; the best counts
    raw_seconds: tuple[float, ...]

    @property
    def ours_docs_per_s(self) -> float:
        return self.documents / min(self.ours_seconds)

    @property
    def raw_docs_per_s(self) -> float:
        return self.documents / min(self.raw_seconds)

    @property
    def ratio(self) -> float:
        """Ours over raw streaming_bulk, in docs/s."""
        return min(self.raw_seconds) / min(self.ours_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "index",
            "machine": self.machine,
            "dataset": self.dataset,
            "documents": self.documents,
            "rounds": self.rounds,
            "ours_docs_per_s": self.ours_docs_per_s,
            "raw_streaming_bulk_docs_per_s": self.raw_docs_per_s,
            "ratio": self.ratio,
            "ours_seconds": list(self.ours_seconds),
            "raw_seconds": list(self.raw_seconds),
        }

    def table(self) -> Table:
        return report_table(
            f"OpenSearch bulk, {self.documents} documents, embedding excluded, best of {self.rounds} "
            f"rounds ({self.machine})",
            ("writer", "docs/s", "best s", "vs raw"),
            [
                ["raw streaming_bulk", f"{self.raw_docs_per_s:.0f}", f"{min(self.raw_seconds):.2f}", "x1.00"],
                [
                    "ours (bulk_index + commit)",
                    f"{self.ours_docs_per_s:.0f}",
                    f"{min(self.ours_seconds):.2f}",
                    f"x{self.ratio:.2f}",
                ],
            ],
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        values = [self.raw_docs_per_s, self.ours_docs_per_s]
        ax.bar(["raw streaming_bulk", "ours (bulk_index + commit)"], values, color=["grey", "tab:blue"])
        ax.text(1, values[1], f"x{self.ratio:.2f}", ha="center", va="bottom")
        ax.set_ylabel("documents / s")
        ax.set_title(f"OpenSearch bulk, {self.documents} documents, embedding excluded", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_search_bench(
    settings: Settings,
    folder: Path,
    *,
    n_queries: int,
    index_name: str | None = None,
    log: Callable[[str], None] = print,
) -> SearchBenchReport:
    """`index_name`: the index each backend is measured on (None: the evaluation index of `folder`)."""
    from hybrid_rerank.connector.factory import open_backend

    embedded = settings.model_copy(update={"opensearch_url": None, "elasticsearch_url": None})
    targets = [("embedded", embedded)]
    if settings.opensearch_url:
        targets.append(("opensearch", settings))
    elif settings.elasticsearch_url:
        targets.append(("elasticsearch", settings))
    else:
        log("neither OPENSEARCH_URL nor ELASTICSEARCH_URL is set: measuring the embedded backend only")
    backends: dict[str, SearchTimings] = {}
    reference: dict[str, list[list[str]]] = {}  # the embedded backend's top 10s, measured first
    for name, target in targets:
        log(f"{name}: preparing the evaluation index")
        store = open_backend(target, index_name) if index_name else None
        prepared = prepare_benchmark(target, folder, "test", backend=store)
        backend, embedder = prepared.backend, prepared.embedder
        queries = [prepared.benchmark.queries[q] for q in sorted(prepared.benchmark.queries)][:n_queries]
        stages: dict[str, list[float]] = {k: [] for k in STAGES}
        depth = target.recall_depth
        fusion = FusionOptions(target.fusion, target.rrf_k, target.bm25_weight)
        top: dict[str, list[list[str]]] = {ranking: [] for ranking in RANKINGS}
        embedder.embed_texts(queries[:2])  # warm-up
        _hybrid(backend, target, queries[0], embedder.embed_texts(queries[:1])[0], {})
        load_before = os.getloadavg()
        for index, query in enumerate(queries):
            started = time.perf_counter()
            vector = embedder.embed_texts([query])[0]  # not embed_query: the cache would hide the model
            stages["embed_query"].append((time.perf_counter() - started) * 1000.0)
            steps = ("hybrid", *BASELINES)
            for step in steps[index % len(steps) :] + steps[: index % len(steps)]:  # each goes first in turn
                begun = time.perf_counter()
                if step == "hybrid":
                    legs = _hybrid(backend, target, query, vector, stages)
                    stages["hybrid_recall"].append((time.perf_counter() - begun) * 1000.0)
                elif step == "bm25_only":
                    backend.bm25(query, depth)
                elif step == "hybrid_all_texts":
                    fuse_recall(backend.recall(query, vector, depth), fusion)
                elif step == "bm25_lean":
                    _with_texts(backend, target, bm25_pool(backend.bm25(query, depth, texts=False)))
                else:
                    backend.knn(vector, depth, texts=False)
                if step != "hybrid":
                    stages[step].append((time.perf_counter() - begun) * 1000.0)
            if index < OVERLAP_QUERIES:
                top["bm25"].append([hit.document.id for hit in legs.bm25[:OVERLAP_K]])
                top["knn"].append([hit.document.id for hit in legs.knn[:OVERLAP_K]])
                top["fused"].append([entry.id for entry in fuse_recall(legs, fusion)][:OVERLAP_K])
        summary = {stage: latency_summary(values) for stage, values in stages.items() if values}
        ratios = {
            baseline: {q: summary["hybrid_recall"][q] / summary[baseline][q] for q in ("p50", "p95")}
            for baseline in ("bm25_only", "bm25_lean")
        }
        if name == "embedded":
            reference = top
            overlap: dict[str, float] = {}
        else:
            overlap = {r: top_k_overlap(top[r], reference[r], OVERLAP_K) for r in RANKINGS}
            log(
                f"{name}: top-{OVERLAP_K} overlap with embedded "
                + ", ".join(f"{r} {v:.3f}" for r, v in overlap.items())
            )
        described = {k: getattr(target, k) for k in ("recall_depth", "rerank_depth", "top_k", "fusion")}
        described |= {"index": index_name or "evaluation index", "engine": _engine_version(backend)}
        described["load_average_1m_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
        lean = ratios["bm25_lean"]
        backends[name] = SearchTimings(
            len(queries), target.recall_depth, summary, ratios["bm25_only"], overlap, lean, described
        )
    return SearchBenchReport(machine=machine(), dataset=str(folder), backends=backends)


def _hybrid(
    backend: Backend, settings: Settings, query: str, vector: Vector, stages: dict[str, list[float]]
) -> Recall:
    """Hybrid recall as the pipeline runs it (client-side fusion), each part timed into `stages`."""
    begun = time.perf_counter()
    recall = backend.recall(query, vector, settings.recall_depth, texts=False)
    fused = time.perf_counter()
    pool = fuse_recall(recall, FusionOptions(settings.fusion, settings.rrf_k, settings.bm25_weight))
    fetching = time.perf_counter()
    _with_texts(backend, settings, pool)
    ended = time.perf_counter()
    if stages:
        stages["legs"].append((fused - begun) * 1000.0)
        stages["bm25"].append(recall.leg_ms.get("bm25", float("nan")))
        stages["knn"].append(recall.leg_ms.get("knn", float("nan")))
        stages["fusion"].append((fetching - fused) * 1000.0)
        stages["fetch"].append((ended - fetching) * 1000.0)
    return recall


def _with_texts(backend: Backend, settings: Settings, pool: list[PoolEntry]) -> list[PoolEntry]:
    """The texts of the reranked head and the first page, fetched as the pipeline does."""
    return with_documents(pool, backend.documents(shown_ids(pool, settings.rerank_depth, 0, settings.top_k)))


def _engine_version(backend: Backend) -> str:
    client = getattr(backend, "client", None)
    if client is None:
        return backend.name
    try:
        return f"{backend.name} {client.info()['version']['number']}"
    except Exception:  # a node that refuses `GET /` (some Elasticsearch setups): the figures still count
        return backend.name


def run_index_bench(
    settings: Settings,
    folder: Path,
    *,
    n_docs: int | None,
    rounds: int = 2,
    log: Callable[[str], None] = print,
) -> IndexBenchReport:
    from opensearchpy import helpers

    from hybrid_rerank.connector.backends import opensearch_bodies as bodies
    from hybrid_rerank.connector.factory import make_embedder, open_backend, opensearch_client
    from hybrid_rerank.mappings import index_body

    if not settings.opensearch_url:
        raise ConfigurationError(
            "bench index needs OPENSEARCH_URL (e.g. `scripts/opensearch start` and its url)"
        )
    benchmark = load_beir(folder, "test")
    embedder = make_embedder(settings)
    vectors, _ = cached_embeddings(embedder, benchmark.documents, settings.data_dir / "embedding-cache")
    documents = benchmark.documents[:n_docs] if n_docs else benchmark.documents
    vectors = vectors[: len(documents)]
    client = opensearch_client(settings)  # the baseline's, and to drop each round's index
    ours_s: list[float] = []
    raw_s: list[float] = []
    for round_ in range(rounds):
        for which in ("raw", "ours") if round_ % 2 == 0 else ("ours", "raw"):
            name = f"bench-{which}-{uuid.uuid4().hex[:8]}"
            log(f"round {round_ + 1}: {which} writing {len(documents)} documents")
            if which == "ours":
                backend = open_backend(settings, name)
                backend.create_index(embedder.model_name, int(vectors.shape[1]))
                started = time.perf_counter()
                report = backend.bulk_index(documents, vectors)
                backend.commit()
                ours_s.append(time.perf_counter() - started)
                if not report.ok:
                    raise ConfigurationError(f"bulk write failed during the benchmark: {report.failures[:3]}")
                client.indices.delete(index=f"{name}-v*")
            else:
                body = index_body(
                    dimension=int(vectors.shape[1]),
                    embedding_model=embedder.model_name,
                    analyzer=settings.opensearch_analyzer,
                    m=settings.hnsw_m,
                    ef_construction=settings.hnsw_ef_construction,
                )
                client.indices.create(index=name, body=body)
                started = time.perf_counter()
                for ok, item in helpers.streaming_bulk(
                    client, bodies.bulk_actions(name, documents, list(vectors))
                ):
                    if not ok:
                        raise ConfigurationError(f"raw bulk write failed during the benchmark: {item}")
                client.indices.refresh(index=name)
                raw_s.append(time.perf_counter() - started)
                client.indices.delete(index=name)
    return IndexBenchReport(
        machine=machine(),
        dataset=str(folder),
        documents=len(documents),
        rounds=rounds,
        ours_seconds=tuple(ours_s),
        raw_seconds=tuple(raw_s),
    )

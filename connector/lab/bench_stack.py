"""`hybrid-rerank bench search` and `bench index`: the first stage and bulk indexing, each against a baseline
in the same run.

- search: per-stage p50/p95 (query embedding, BM25 leg, k-NN leg, fusion, hybrid recall in all) on the
  embedded backend and, with OPENSEARCH_URL or ELASTICSEARCH_URL, on that engine; the baseline is BM25-only on
  the same index, timed alternately with hybrid for every query. The engine's top 10 (each leg and fused) is
  compared with the embedded backend's on the first OVERLAP_QUERIES queries.
- index: OpenSearch bulk writes, our backend (`bulk_index` + `commit`) against raw opensearch-py
  `streaming_bulk` with its defaults into an index with the same mapping, on the same documents and vectors;
  embedding is excluded (vectors come from the embedding cache).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.fusion import fuse
from hybrid_rerank.connector.lab.bench import latency_summary, machine
from hybrid_rerank.connector.lab.evaluation import cached_embeddings, load_beir, prepare_benchmark
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings

STAGES = ("embed_query", "bm25_only", "bm25", "knn", "fusion", "hybrid_recall")
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

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "recall_depth": self.recall_depth,
            **self.stages,
            "hybrid_vs_bm25_only": self.hybrid_vs_bm25_only,
            "top10_overlap_with_embedded": self.overlap_with_embedded,
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
            ratio = timings.hybrid_vs_bm25_only
            rows.append([backend, "hybrid / BM25-only", f"x{ratio['p50']:.2f}", f"x{ratio['p95']:.2f}"])
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
    settings: Settings, folder: Path, *, n_queries: int, log: Callable[[str], None] = print
) -> SearchBenchReport:
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
        prepared = prepare_benchmark(target, folder, "test")
        backend, embedder = prepared.backend, prepared.embedder
        queries = [prepared.benchmark.queries[q] for q in sorted(prepared.benchmark.queries)][:n_queries]
        stages: dict[str, list[float]] = {k: [] for k in STAGES}
        top: dict[str, list[list[str]]] = {ranking: [] for ranking in RANKINGS}
        weights = [target.bm25_weight, 1.0 - target.bm25_weight]
        embedder.embed_texts(queries[:2])  # warm-up
        backend.recall(queries[0], embedder.embed_texts(queries[:1])[0], target.recall_depth)
        for index, query in enumerate(queries):
            started = time.perf_counter()
            vector = embedder.embed_texts([query])[0]  # not embed_query: the cache would hide the model
            stages["embed_query"].append((time.perf_counter() - started) * 1000.0)

            for step in ("bm25_only", "hybrid") if index % 2 == 0 else ("hybrid", "bm25_only"):
                begun = time.perf_counter()
                if step == "bm25_only":
                    backend.bm25(query, target.recall_depth)
                    stages["bm25_only"].append((time.perf_counter() - begun) * 1000.0)
                    continue
                recall = backend.recall(query, vector, target.recall_depth)
                stages["hybrid_recall"].append((time.perf_counter() - begun) * 1000.0)
                stages["bm25"].append(recall.leg_ms.get("bm25", float("nan")))
                stages["knn"].append(recall.leg_ms.get("knn", float("nan")))
                begun = time.perf_counter()
                legs = [
                    [(h.document.id, h.score) for h in recall.bm25],
                    [(h.document.id, h.score) for h in recall.knn],
                ]
                fused = fuse(
                    target.fusion,
                    legs,
                    rrf_k=target.rrf_k,
                    weights=None if target.fusion == "rrf" else weights,
                )
                stages["fusion"].append((time.perf_counter() - begun) * 1000.0)
                if index < OVERLAP_QUERIES:
                    top["bm25"].append([doc_id for doc_id, _ in legs[0][:OVERLAP_K]])
                    top["knn"].append([doc_id for doc_id, _ in legs[1][:OVERLAP_K]])
                    top["fused"].append([hit.id for hit in fused[:OVERLAP_K]])
        summary = {stage: latency_summary(values) for stage, values in stages.items() if values}
        ratio = {
            "p50": summary["hybrid_recall"]["p50"] / summary["bm25_only"]["p50"],
            "p95": summary["hybrid_recall"]["p95"] / summary["bm25_only"]["p95"],
        }
        if name == "embedded":
            reference = top
            overlap: dict[str, float] = {}
        else:
            overlap = {r: top_k_overlap(top[r], reference[r], OVERLAP_K) for r in RANKINGS}
            log(
                f"{name}: top-{OVERLAP_K} overlap with embedded "
                + ", ".join(f"{r} {overlap[r]:.3f}" for r in RANKINGS)
            )
        backends[name] = SearchTimings(len(queries), target.recall_depth, summary, ratio, overlap)
    return SearchBenchReport(machine=machine(), dataset=str(folder), backends=backends)


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

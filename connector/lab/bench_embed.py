"""`hybrid-rerank bench embed`: index-time embedding, plain `SentenceTransformer.encode` (its defaults: fp32,
batch 32) against our embedder in each backend, on the same documents, each in a fresh spawned process.

Quality: the cosine between each variant's vector and the baseline's for the same document, and with `--full`
the dense leg's nDCG@10 on the test split (the whole corpus embedded by each variant).

With `queries`, also one query's embedding time, today's path against the one-query runners
(`bench_query_embed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.lab.bench import in_fresh_process, machine, peak_rss_mib
from hybrid_rerank.connector.lab.bench_query_embed import (
    QUERY_VARIANTS,
    QueryReport,
    cycled,
    query_report,
    time_queries,
)
from hybrid_rerank.connector.lab.evaluation import evaluate_run, load_beir
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.runtime.models import resolve_model

BASELINE = "baseline"
VARIANTS: tuple[tuple[str, str], ...] = (
    ("baseline SentenceTransformer.encode fp32", BASELINE),
    ("ours torch fp32", "torch"),
    ("ours torch bf16", "torch-bf16"),
    ("ours onnx fp32", "onnx"),
    ("ours onnx int8", "onnx-int8"),
)


def embed_once(backend: str, settings: Settings, texts: Sequence[str]) -> dict[str, Any]:
    """Runs in its own process: load, warm up, embed every text in one call, timed."""
    if backend == BASELINE:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_model(settings.embedding_model).location)
        model.encode(list(texts[:8]))

        def run() -> np.ndarray:
            return np.asarray(model.encode(list(texts), normalize_embeddings=True), dtype=np.float32)

    else:
        from hybrid_rerank.connector.embedder import Embedder

        embedder = Embedder(
            settings.embedding_model,
            batch_size=settings.embedding_batch_size,
            backend=backend,  # type: ignore[arg-type]
            token_budget=settings.embedding_token_budget,
            cache_dir=settings.embedding_onnx_cache,
        )
        embedder.embed_texts(list(texts[:8]))

        def run() -> np.ndarray:
            return embedder.embed_texts(texts)

    started = time.perf_counter()
    vectors = run()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "vectors": vectors,
        "peak_rss_mib": peak_rss_mib(),
    }


@dataclass(frozen=True)
class EmbedRow:
    name: str
    backend: str
    docs_per_s: float
    seconds: float
    peak_rss_mib: float
    cosine_to_baseline: dict[str, float]  # "mean" and "min" over the documents
    dense_ndcg: float | None  # with --full only
    speedup: float  # against the first (baseline) row

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "backend": self.backend,
            "docs_per_s": self.docs_per_s,
            "seconds": self.seconds,
            "peak_rss_mib": self.peak_rss_mib,
            "cosine_to_baseline": self.cosine_to_baseline,
        }
        if self.dense_ndcg is not None:
            row["dense_ndcg@10"] = self.dense_ndcg
        row["speedup"] = self.speedup
        return row


@dataclass(frozen=True)
class EmbedBenchReport(Report):
    machine: str
    model: str
    dataset: str
    documents: int
    mean_chars: float
    results: tuple[EmbedRow, ...]
    query: QueryReport | None = None  # with `queries` only

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "embed",
            "machine": self.machine,
            "model": self.model,
            "dataset": self.dataset,
            "documents": self.documents,
            "mean_chars": self.mean_chars,
            "results": [row.to_json() for row in self.results],
            "query_embedding": self.query.to_json() if self.query is not None else None,
        }

    def table(self) -> Table:
        documents = self.documents_table()
        if self.query is None:
            return documents
        both = Table.grid(padding=(1, 0))
        both.add_row(documents)
        both.add_row(self.query_table(self.query))
        return both

    def query_table(self, query: QueryReport) -> Table:
        load = ", ".join(f"{x:.2f}" for x in query.load_average)
        return report_table(
            f"one query's embedding, {query.queries} queries, {self.machine}, load average {load}",
            ("variant", "runs", "p50 ms", "p95 ms", "p50 vs baseline", "cosine to baseline", "dense nDCG@10"),
            [
                [
                    row.name,
                    row.runs,
                    f"{row.p50_ms:.2f}",
                    f"{row.p95_ms:.2f}",
                    f"x{row.ratio_p50:.3f}",
                    f"mean {row.cosine_to_baseline['mean']:.4f}, min {row.cosine_to_baseline['min']:.4f}",
                    "--full" if row.dense_ndcg is None else f"{row.dense_ndcg:.4f}",
                ]
                for row in query.results
            ],
            names=2,
            caption=f"settings: {query.settings}; auto runs {query.default}",
        )

    def documents_table(self) -> Table:
        return report_table(
            f"embedding {self.documents} documents ({self.model}), {self.machine}",
            ("variant", "docs/s", "vs baseline", "peak RSS MiB", "cosine to baseline", "dense nDCG@10"),
            [
                [
                    row.name,
                    f"{row.docs_per_s:.1f}",
                    f"x{row.speedup:.2f}",
                    f"{row.peak_rss_mib:.0f}",
                    f"mean {row.cosine_to_baseline['mean']:.4f}, min {row.cosine_to_baseline['min']:.4f}",
                    "--full" if row.dense_ndcg is None else f"{row.dense_ndcg:.4f}",
                ]
                for row in self.results
            ],
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.results
        names = [r.name.replace("ours ", "").replace(" SentenceTransformer.encode", "") for r in rows]
        panels = 1 if self.query is None else 2
        fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
        ax = axes[0][0]
        x = np.arange(len(rows))
        ax.bar(x, [r.docs_per_s for r in rows], color=["grey"] + ["tab:green"] * (len(rows) - 1))
        for xi, r in zip(x, rows, strict=True):
            ax.text(float(xi), r.docs_per_s, f"x{r.speedup:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("documents / s")
        ax.set_title(f"Embedding {self.documents} documents ({self.machine})", fontsize=9)
        if self.query is not None:
            query_panel(axes[0][1], self.query, self.machine)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_embed_bench(
    settings: Settings,
    folder: Path,
    *,
    n_docs: int | None,
    full: bool,
    backends: Sequence[str] | None = None,
    queries: int = 0,
    log: Callable[[str], None] = print,
) -> EmbedBenchReport:
    """`queries`: also time that many query embeddings per query variant (every test query once with
    `full`, for their dense nDCG@10); 0 leaves the query half out."""
    benchmark = load_beir(folder, "test")
    documents = benchmark.documents if full or not n_docs else benchmark.documents[:n_docs]
    texts = [d.full_text for d in documents]
    chosen = [(name, b) for name, b in VARIANTS if backends is None or b in backends or b == BASELINE]
    results: list[EmbedRow] = []
    baseline_vectors: np.ndarray | None = None
    query_ids = sorted(benchmark.queries)
    for name, backend in chosen:
        log(f"embedding {len(texts)} documents: {name}")
        measured = in_fresh_process(embed_once, backend, settings, texts)
        vectors = measured["vectors"]
        if baseline_vectors is None:
            baseline_vectors = vectors
        cosines = np.sum(vectors * baseline_vectors, axis=1)
        ndcg = None
        if full:
            query_texts = [benchmark.queries[q] for q in query_ids]
            query_run = in_fresh_process(embed_once, backend, settings, query_texts)
            ndcg = dense_ndcg(documents, query_ids, query_run["vectors"], vectors, benchmark.qrels)
        docs_per_s = len(texts) / measured["seconds"]
        results.append(
            EmbedRow(
                name=name,
                backend=backend,
                docs_per_s=docs_per_s,
                seconds=measured["seconds"],
                peak_rss_mib=measured["peak_rss_mib"],
                cosine_to_baseline={"mean": float(cosines.mean()), "min": float(cosines.min())},
                dense_ndcg=ndcg,
                speedup=docs_per_s / results[0].docs_per_s if results else 1.0,
            )
        )
    query = None
    if queries > 0 and baseline_vectors is not None:
        query = time_query_variants(settings, benchmark, documents, baseline_vectors, queries, full, log)
    return EmbedBenchReport(
        machine=machine(),
        model=settings.embedding_model,
        dataset=str(folder),
        documents=len(texts),
        mean_chars=float(np.mean([len(t) for t in texts])) if texts else 0.0,
        results=tuple(results),
        query=query,
    )


def time_query_variants(
    settings: Settings,
    benchmark: Any,
    documents: Sequence[Any],
    document_vectors: np.ndarray,
    queries: int,
    full: bool,
    log: Callable[[str], None],
) -> QueryReport:
    """The query half: `queries` test queries (all of them, once each, with `full`) timed in one fresh
    process; with `full`, each variant's dense nDCG@10 over the baseline's fp32 `document_vectors`."""
    query_ids = sorted(benchmark.queries)
    texts = [benchmark.queries[q] for q in query_ids]
    timed = texts if full else cycled(texts, queries)
    log(f"embedding {len(timed)} queries one at a time, each query variant in turn")
    measured = in_fresh_process(time_queries, settings, timed)
    ndcg = None
    if full:
        backends = [backend for _, backend in QUERY_VARIANTS]
        ndcg = {
            backend: dense_ndcg(documents, query_ids, variant["vectors"], document_vectors, benchmark.qrels)
            for backend, variant in zip(backends, measured["variants"], strict=True)
        }
    return query_report(settings, measured, ndcg, len(timed))


def query_panel(ax: Any, query: QueryReport, machine_name: str) -> None:
    """Bars of each query variant's p50, labelled with its ratio to the baseline."""
    rows = query.results
    x = np.arange(len(rows))
    ax.bar(x, [r.p50_ms for r in rows], color=["grey"] + ["tab:blue"] * (len(rows) - 1))
    for xi, r in zip(x, rows, strict=True):
        ax.text(float(xi), r.p50_ms, f"x{r.ratio_p50:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [r.name.replace("ours ", "") for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("ms per query (p50)")
    load = ", ".join(f"{v:.1f}" for v in query.load_average[:3])
    ax.set_title(f"One query's embedding, {query.queries} queries ({machine_name}; load {load})", fontsize=9)


def dense_ndcg(
    documents: Sequence[Any],
    query_ids: Sequence[str],
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    qrels: dict[str, dict[str, int]],
) -> float:
    """nDCG@10 of exact cosine search over the whole corpus."""
    ids = [d.id for d in documents]
    top = np.argsort(-(query_vectors @ doc_vectors.T), axis=1)[:, :100]
    run = {q: [ids[j] for j in row] for q, row in zip(query_ids, top, strict=True)}
    return evaluate_run(run, qrels)["ndcg@10"]

"""Benchmarks that run the baseline and ours side by side in one run and print the ratio: these machines are
noisy, so absolute times from different runs are not comparable, ratios from one run are.

`celery`: rerank latency for the same candidates, in-process against through Celery workers on Redis.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_rerank.connector.backends.embedded import LuceneBM25
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.connector.text import tokenize
from hybrid_rerank.workers.client import Reranker
from hybrid_rerank.workers.protocol import Candidate


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "mean": float(values.mean()),
        "n": float(len(values)),
    }


def candidate_sets(folder: Path, n_queries: int, depth: int) -> list[tuple[str, list[Candidate]]]:
    """`n_queries` queries of a BEIR folder (cycled if it has fewer), each with its BM25 top `depth`."""
    benchmark = load_beir(folder)
    documents, queries = benchmark.documents, benchmark.queries
    bm25 = LuceneBM25([tokenize(d.full_text) or [""] for d in documents])
    texts = list(queries.values())
    sets = []
    for i in range(n_queries):
        query = texts[i % len(texts)]
        scores = bm25.get_scores(tokenize(query))
        top = np.argsort(-scores)[:depth]
        sets.append((query, [Candidate(documents[j].id, documents[j].full_text) for j in top]))
    return sets


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a newly spawned process: its own imports, caches and peak RSS, none inherited."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_celery_bench(
    settings: Settings,
    *,
    dataset: Path | None,
    n_queries: int,
    depth: int,
    out_dir: Path,
    start_worker: bool,
    progress: Any = None,
) -> dict[str, Any]:
    """Rerank the same candidates in-process and through Celery, alternating which goes first."""
    from hybrid_rerank.workers.celery_app import make_app
    from hybrid_rerank.workers.client import CeleryReranker, InProcessReranker
    from hybrid_rerank.workers.factory import make_scorer
    from hybrid_rerank.workers.local import WorkerProcess
    from hybrid_rerank.workers.protocol import queue_for

    if settings.redis_url is None or settings.rerank_model is None:
        raise ConfigurationError("bench celery needs REDIS_URL and RERANK_MODEL (a loadable cross-encoder)")
    folder = dataset or demo_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = candidate_sets(folder, n_queries, depth)
    scorer = make_scorer(settings)
    assert scorer is not None
    scorer.load()
    local: Reranker = InProcessReranker(scorer)
    remote = CeleryReranker(
        make_app(settings, fail_fast=True),
        settings.rerank_model,
        deadline_ms=600_000,
        max_chars=scorer.max_chars,
        use_cache=False,  # both paths must run the model on every query
    )

    worker = None
    if start_worker:
        env = {**os.environ, "REDIS_URL": settings.redis_url.get_secret_value(), "RERANK_CACHE_TTL_S": "0"}
        worker = WorkerProcess("bench", env, out_dir).start(remote.app)
    try:
        for query, candidates in sets[:3]:  # warm-up, not measured
            local.rerank(query, candidates)
            remote.rerank(query, candidates)
        in_process: list[float] = []
        celery: list[float] = []
        for index, (query, candidates) in enumerate(sets):
            order = [(local, in_process), (remote, celery)]
            for reranker, samples in order if index % 2 == 0 else reversed(order):
                started = time.perf_counter()
                outcome = reranker.rerank(query, candidates)
                samples.append((time.perf_counter() - started) * 1000.0)
                if outcome.scores is None:
                    raise ConfigurationError(f"rerank failed during the benchmark: {outcome.reason}")
            if progress is not None:
                progress(index + 1, len(sets))
    finally:
        if worker is not None:
            worker.stop()

    a, b = latency_summary(in_process), latency_summary(celery)
    # Per-query differences: the same candidates on both paths, so the model's share cancels out.
    paired = latency_summary([c - i for c, i in zip(celery, in_process, strict=True)])
    report = {
        "benchmark": "celery",
        "machine": machine(),
        "model": settings.rerank_model,
        "queue": queue_for(settings.rerank_model),
        "dataset": str(folder),
        "queries": n_queries,
        "candidates_per_query": depth,
        "max_length": settings.rerank_max_length,
        "in_process_ms": a,
        "celery_ms": b,
        "overhead_ms": {k: b[k] - a[k] for k in ("p50", "p95", "mean")},
        "paired_overhead_ms": {k: paired[k] for k in ("p50", "p95", "mean")},
        "ratio": {k: b[k] / a[k] for k in ("p50", "p95", "mean")},
        "samples_ms": {"in_process": in_process, "celery": celery},
    }
    (out_dir / "bench-celery.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_latencies(report, out_dir / "bench-celery.png")
    return report


def plot_latencies(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples_ms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in (("in-process", samples["in_process"]), ("Celery + Redis", samples["celery"])):
        ordered = np.sort(np.asarray(values))
        ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=label)
    ax.set_xlabel(f"rerank latency per query, ms ({report['candidates_per_query']} candidates)")
    ax.set_ylabel("share of queries")
    ax.set_title(
        f"In-process vs Celery: median per-query overhead {report['paired_overhead_ms']['p50']:.1f} ms "
        f"(p50 ratio x{report['ratio']['p50']:.2f})"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

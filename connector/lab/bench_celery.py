"""`hybrid-rerank bench celery`: rerank latency for the same candidates, in-process against through Celery
workers on Redis, alternating which goes first."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench import candidate_sets, latency_summary, machine
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.client import Reranker

STATS = ("p50", "p95", "mean")


@dataclass(frozen=True)
class CeleryBenchReport(Report):
    machine: str
    model: str
    queue: str
    dataset: str
    queries: int
    candidates_per_query: int
    max_length: int
    in_process_ms: dict[str, float]  # latency_summary
    celery_ms: dict[str, float]
    samples_in_process_ms: tuple[float, ...]
    samples_celery_ms: tuple[float, ...]

    @property
    def overhead_ms(self) -> dict[str, float]:
        return {k: self.celery_ms[k] - self.in_process_ms[k] for k in STATS}

    @property
    def paired_overhead_ms(self) -> dict[str, float]:
        """Per-query differences: the same candidates on both paths, so the model's share cancels out."""
        paired = latency_summary(
            [c - i for c, i in zip(self.samples_celery_ms, self.samples_in_process_ms, strict=True)]
        )
        return {k: paired[k] for k in STATS}

    @property
    def ratio(self) -> dict[str, float]:
        return {k: self.celery_ms[k] / self.in_process_ms[k] for k in STATS}

    def printed_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_json().items() if k != "samples_ms"}

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "celery",
            "machine": self.machine,
            "model": self.model,
            "queue": self.queue,
            "dataset": self.dataset,
            "queries": self.queries,
            "candidates_per_query": self.candidates_per_query,
            "max_length": self.max_length,
            "in_process_ms": self.in_process_ms,
            "celery_ms": self.celery_ms,
            "overhead_ms": self.overhead_ms,
            "paired_overhead_ms": self.paired_overhead_ms,
            "ratio": self.ratio,
            "samples_ms": {
                "in_process": list(self.samples_in_process_ms),
                "celery": list(self.samples_celery_ms),
            },
        }

    def table(self) -> Table:
        overhead, ratio, paired = self.overhead_ms, self.ratio, self.paired_overhead_ms
        return report_table(
            f"rerank {self.candidates_per_query} candidates x {self.queries} queries: {self.model} "
            f"({self.machine})",
            ("path", "p50 ms", "p95 ms", "mean ms"),
            [
                ["in-process", *(f"{self.in_process_ms[k]:.1f}" for k in STATS)],
                ["Celery + Redis", *(f"{self.celery_ms[k]:.1f}" for k in STATS)],
                ["overhead", *(f"{overhead[k]:+.1f} (x{ratio[k]:.2f})" for k in STATS)],
                ["per-query overhead", *(f"{paired[k]:+.1f}" for k in STATS)],
            ],
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for label, values in (
            ("in-process", self.samples_in_process_ms),
            ("Celery + Redis", self.samples_celery_ms),
        ):
            ordered = np.sort(np.asarray(values))
            ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=label)
        ax.set_xlabel(f"rerank latency per query, ms ({self.candidates_per_query} candidates)")
        ax.set_ylabel("share of queries")
        ax.set_title(
            f"In-process vs Celery: median per-query overhead {self.paired_overhead_ms['p50']:.1f} ms "
            f"(p50 ratio x{self.ratio['p50']:.2f})"
        )
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_celery_bench(
    settings: Settings,
    *,
    dataset: Path | None,
    n_queries: int,
    depth: int,
    out_dir: Path,
    start_worker: bool,
    progress: Callable[[int, int], None] | None = None,
) -> CeleryBenchReport:
    """Rerank the same candidates in-process and through Celery, alternating which goes first. `out_dir`
    receives the local worker's log."""
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

    return CeleryBenchReport(
        machine=machine(),
        model=settings.rerank_model,
        queue=queue_for(settings.rerank_model),
        dataset=str(folder),
        queries=n_queries,
        candidates_per_query=depth,
        max_length=settings.rerank_max_length,
        in_process_ms=latency_summary(in_process),
        celery_ms=latency_summary(celery),
        samples_in_process_ms=tuple(in_process),
        samples_celery_ms=tuple(celery),
    )

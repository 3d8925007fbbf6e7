"""`hybrid-rerank bench celery`: rerank latency for the same candidates, in-process against through Celery
workers on Redis, alternating which goes first; with the worker's peak RSS, its start-to-ready time and its
first request. Cross-request batching has its own bench (`bench_batching`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    # Defaults: reports written before these were recorded.
    settings: dict[str, Any] = field(default_factory=dict)  # the variant's: what worker and client ran with
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute, before and after
    first_request_ms: float = 0.0  # the first request after the worker started (model warmed at load)
    worker_peak_rss_mib: dict[str, float] = field(default_factory=dict)  # by process: "parent", "pool-0"
    worker_ready_s: tuple[float, ...] = ()  # from `celery worker` start to each process's "model ready"
    worker_task_s: tuple[float, ...] = ()  # each task's time as the worker logged it, the first one first

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

    def _first_task(self) -> str:
        tasks = [s * 1000.0 for s in self.worker_task_s]
        if len(tasks) < 2:
            return "-"
        return f"{tasks[0]:.1f} ms (median of the rest {float(np.median(tasks[1:])):.1f})"

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
            "settings": self.settings,
            "load_average": list(self.load_average),
            "first_request_ms": self.first_request_ms,
            "worker_peak_rss_mib": self.worker_peak_rss_mib,
            "worker_ready_s": list(self.worker_ready_s),
            "worker_task_s": list(self.worker_task_s),
            "samples_ms": {
                "in_process": list(self.samples_in_process_ms),
                "celery": list(self.samples_celery_ms),
            },
        }

    def table(self) -> Table:
        overhead, ratio, paired = self.overhead_ms, self.ratio, self.paired_overhead_ms
        return report_table(
            f"rerank {self.candidates_per_query} candidates x {self.queries} queries: {self.model} "
            f"({self.machine}, load {self.load_average[0]:.1f}-{self.load_average[1]:.1f}; "
            f"{settings_line(self.settings)}"
            f"; first request {self.first_request_ms:.1f} ms, on the worker {self._first_task()}; "
            "worker peak RSS "
            f"{', '.join(f'{k} {v:.0f} MiB' for k, v in self.worker_peak_rss_mib.items())}; ready after "
            f"{', '.join(f'{s:.1f}' for s in self.worker_ready_s)} s)",
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
    loads = [os.getloadavg()[0]]
    if start_worker:
        env = {**os.environ, "REDIS_URL": settings.redis_url.get_secret_value(), "RERANK_CACHE_TTL_S": "0"}
        worker = WorkerProcess("bench", env, out_dir).start(remote.app)
    try:
        started = time.perf_counter()
        remote.rerank(*sets[0])
        first_ms = (time.perf_counter() - started) * 1000.0
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
        peaks = worker.peak_rss_mib() if worker is not None else {}
        ready = tuple(worker.ready_after_s()) if worker is not None else ()
        tasks = tuple(worker.task_seconds()) if worker is not None else ()
    finally:
        if worker is not None:
            worker.stop()
    loads.append(os.getloadavg()[0])
    parent = worker.process.pid if worker is not None and worker.process is not None else None
    names = {pid: "parent" if pid == parent else f"pool-{i}" for i, pid in enumerate(sorted(peaks))}

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
        settings=variant_settings(settings),
        load_average=(loads[0], loads[1]),
        first_request_ms=first_ms,
        worker_peak_rss_mib={names[pid]: mib for pid, mib in peaks.items()},
        worker_ready_s=ready,
        worker_task_s=tasks,
    )


def variant_settings(settings: Settings) -> dict[str, Any]:
    """What the worker and the client ran with, for the report."""
    return {
        "rerank_backend": settings.rerank_backend,
        "rerank_max_length": settings.rerank_max_length,
        "rerank_threads": settings.rerank_threads,
        "rerank_batch_window_ms": settings.rerank_batch_window_ms,
        "rerank_admission": settings.rerank_admission,
        "rerank_skip_late": settings.rerank_skip_late,
        "score_cache": "off",
    }


def settings_line(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())

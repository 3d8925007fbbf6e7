"""Cross-request batching on the workers (RERANK_BATCH_WINDOW_MS): throughput and p95 at 1, 4 and 8 concurrent
searches, a default worker against one that batches, started afresh and alternating in one run.

`python -m hybrid_rerank.connector.lab.bench_batching [--window-ms 5] [--depth 30] [--seconds 15]`."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench import candidate_sets, latency_summary, machine
from hybrid_rerank.connector.lab.bench_celery import variant_settings
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.client import CeleryReranker

TASK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BatchingBenchReport(Report):
    """Searches through the workers from N client threads at once, per variant and N."""

    machine: str
    model: str
    candidates_per_query: int
    seconds_per_level: float
    variants: dict[str, dict[str, Any]]  # name -> the worker's settings
    load_average: tuple[float, float]
    runs: tuple[dict[str, Any], ...]  # variant, concurrency, seconds, latencies_ms, batched (per reply)

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for variant in self.variants:
            for concurrency in sorted({run["concurrency"] for run in self.runs}):
                runs = [r for r in self.runs if r["variant"] == variant and r["concurrency"] == concurrency]
                latencies = [ms for r in runs for ms in r["latencies_ms"]]
                batched = [b for r in runs for b in r["batched"]]
                rows.append(
                    {
                        "variant": variant,
                        "concurrency": concurrency,
                        "searches_per_s": len(latencies) / sum(r["seconds"] for r in runs),
                        "latency_ms": latency_summary(latencies),
                        "requests_per_model_call": float(np.mean(batched)) if batched else 1.0,
                        "failed": sum(len(r.get("failures", ())) for r in runs),
                    }
                )
        baseline = {r["concurrency"]: r for r in rows if r["variant"] == next(iter(self.variants))}
        for row in rows:
            base = baseline[row["concurrency"]]
            row["throughput_ratio"] = row["searches_per_s"] / base["searches_per_s"]
            row["p95_ratio"] = row["latency_ms"]["p95"] / base["latency_ms"]["p95"]
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "celery-batching",
            "machine": self.machine,
            "model": self.model,
            "candidates_per_query": self.candidates_per_query,
            "seconds_per_level": self.seconds_per_level,
            "variants": self.variants,
            "load_average": list(self.load_average),
            "summary": self.summary(),
            "runs": list(self.runs),
        }

    def printed_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_json().items() if k != "runs"}

    def table(self) -> Table:
        return report_table(
            f"{self.candidates_per_query} candidates per search, {self.model} ({self.machine}, load "
            f"{self.load_average[0]:.1f}-{self.load_average[1]:.1f}); ratios against "
            f"{next(iter(self.variants))}",
            ("variant", "at once", "searches/s", "p50 ms", "p95 ms", "requests per call", "failed", "ratio"),
            [
                [
                    row["variant"],
                    str(row["concurrency"]),
                    f"{row['searches_per_s']:.2f}",
                    f"{row['latency_ms']['p50']:.0f}",
                    f"{row['latency_ms']['p95']:.0f}",
                    f"{row['requests_per_model_call']:.2f}",
                    str(row["failed"]),
                    f"x{row['throughput_ratio']:.2f} /s, x{row['p95_ratio']:.2f} p95",
                ]
                for row in self.summary()
            ],
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        rows = self.summary()
        for variant in self.variants:
            mine = [r for r in rows if r["variant"] == variant]
            ax.plot(
                [r["concurrency"] for r in mine], [r["searches_per_s"] for r in mine], "o-", label=variant
            )
        ax.set_xlabel("searches at once")
        ax.set_ylabel("reranked searches per second")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_batching_bench(
    settings: Settings,
    *,
    dataset: Path | None,
    depth: int,
    out_dir: Path,
    window_ms: float,
    concurrencies: tuple[int, ...] = (1, 4, 8),
    seconds: float = 15.0,
    rounds: int = 2,
) -> BatchingBenchReport:
    """A default worker (prefork, a process per core) against one batching across requests (a threads pool
    of max(concurrencies), one model, `window_ms`), each started afresh per round, alternating which goes
    first; at each concurrency, client threads search for `seconds`."""
    from hybrid_rerank.workers.celery_app import make_app
    from hybrid_rerank.workers.local import WorkerProcess
    from hybrid_rerank.workers.protocol import max_readable_chars

    if settings.redis_url is None or settings.rerank_model is None:
        raise ConfigurationError("the batching bench needs REDIS_URL and RERANK_MODEL")
    sets = candidate_sets(dataset or demo_data_dir(), 200, depth)
    app = make_app(settings, fail_fast=True)
    remote = CeleryReranker(
        app,
        settings.rerank_model,
        deadline_ms=120_000,
        max_chars=max_readable_chars(settings.rerank_max_length, settings.rerank_max_passages),
        use_cache=False,
    )
    cores = os.cpu_count() or 1
    variants: dict[str, dict[str, Any]] = {
        f"default (prefork -c {cores})": {
            "rerank_batch_window_ms": 0.0,
            "pool": "prefork",
            "processes": cores,
        },
        f"batching ({window_ms:g} ms, threads -c {max(concurrencies)})": {
            "rerank_batch_window_ms": window_ms,
            "pool": "threads",
            "threads": max(concurrencies),
        },
    }
    base_env = {**os.environ, "REDIS_URL": settings.redis_url.get_secret_value(), "RERANK_CACHE_TTL_S": "0"}
    loads = [os.getloadavg()[0]]
    runs: list[dict[str, Any]] = []
    for round_index in range(rounds):
        names = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in names:
            variant = variants[name]
            env = {**base_env, "RERANK_BATCH_WINDOW_MS": f"{variant['rerank_batch_window_ms']:g}"}
            size = int(variant.get("processes") or variant["threads"])
            worker = WorkerProcess(f"batching-bench-{round_index}", env, out_dir, size)
            worker.start(app, timeout_s=300.0)
            try:
                remote.rerank(*sets[0])  # the first request of a fresh worker, not measured
                for concurrency in concurrencies:
                    latencies, batched, failures, wall = _load(remote, sets, concurrency, seconds)
                    runs.append(
                        {
                            "variant": name,
                            "round": round_index,
                            "concurrency": concurrency,
                            "seconds": wall,
                            "latencies_ms": latencies,
                            "batched": batched,
                            "failures": failures,
                        }
                    )
            finally:
                worker.stop()
    loads.append(os.getloadavg()[0])
    settings_used = variant_settings(settings)
    return BatchingBenchReport(
        machine=machine(),
        model=settings.rerank_model,
        candidates_per_query=depth,
        seconds_per_level=seconds,
        variants={name: {**settings_used, **v} for name, v in variants.items()},
        load_average=(loads[0], loads[1]),
        runs=tuple(runs),
    )


def _load(
    remote: CeleryReranker, sets: list[tuple[str, list[Any]]], concurrency: int, seconds: float
) -> tuple[list[float], list[int], list[str], float]:
    """`concurrency` threads searching in a loop for `seconds` (as `rerank` does, one task per search, read
    raw for the requests that shared its model call): latencies (ms), requests per call, the wall time."""
    from celery.result import AsyncResult

    from hybrid_rerank.workers.protocol import parse_reply

    latencies: list[float] = []
    batched: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    started = time.perf_counter()
    until = started + seconds

    def client(offset: int) -> None:
        index = offset
        while time.perf_counter() < until:
            begun = time.perf_counter()
            result = AsyncResult(remote.submit(*sets[index % len(sets)]), app=remote.app)
            try:
                reply = result.get(timeout=TASK_TIMEOUT_S)
            except Exception as exc:  # counted and reported: one lost task does not end the run
                with lock:
                    failures.append(f"no reply in {TASK_TIMEOUT_S:.0f} s: {exc!r}")
                index += concurrency
                continue
            outcome = parse_reply(result.state, reply)
            result.forget()
            if outcome.scores is None:
                with lock:
                    failures.append(f"rerank failed: {outcome.reason}")
                index += concurrency
                continue
            with lock:
                latencies.append((time.perf_counter() - begun) * 1000.0)
                batched.append(int(reply.get("batched", 1)))
            index += concurrency

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, batched, failures, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """The command line of the module's docstring."""
    import argparse

    from rich.console import Console

    from hybrid_rerank.connector.lab.reports import write_report
    from hybrid_rerank.connector.settings import load_settings

    parser = argparse.ArgumentParser(prog="bench_batching", description=__doc__)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run_batching_bench(
        load_settings(),
        dataset=args.dataset,
        depth=args.depth,
        out_dir=args.out,
        window_ms=args.window_ms,
        seconds=args.seconds,
        rounds=args.rounds,
    )
    write_report(report, args.out, "bench-celery-batching", Console(width=200), as_json=False)


if __name__ == "__main__":
    main()

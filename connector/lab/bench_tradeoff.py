"""`hybrid-rerank bench tradeoff`: nDCG@10 against rerank milliseconds per query for each rerank depth and
max_length, on bench_rerank's workload, each point measured in a fresh spawned process."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from hybrid_rerank.connector.lab.bench import latency_summary, machine
from hybrid_rerank.connector.lab.bench_rerank import (
    Variant,
    Workload,
    build_workload,
    measure_in_fresh_process,
    rerank_quality,
    tuned_weight,
)
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings


@dataclass(frozen=True)
class TradeoffPoint:
    max_length: int
    depth: int
    ms_per_query: float  # mean
    p95_ms: float
    ndcg: dict[str, float]  # nDCG@10 of "rerank", "interpolated" and "first_stage"

    def to_json(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "depth": self.depth,
            "ms_per_query": self.ms_per_query,
            "p95_ms": self.p95_ms,
            "ndcg@10": self.ndcg,
        }


@dataclass(frozen=True)
class TradeoffReport(Report):
    machine: str
    model: str
    backend: str
    dataset: str
    queries: int
    interpolation_weight: float
    first_stage_ndcg: float
    points: tuple[TradeoffPoint, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "tradeoff",
            "machine": self.machine,
            "model": self.model,
            "backend": self.backend,
            "dataset": self.dataset,
            "queries": self.queries,
            "interpolation_weight": self.interpolation_weight,
            "first_stage_ndcg@10": self.first_stage_ndcg,
            "points": [p.to_json() for p in self.points],
        }

    def table(self) -> Table:
        return report_table(
            f"rerank trade-off, {self.queries} queries, {self.backend}, {self.machine}",
            ("max_length", "depth", "ms/query", "p95 ms", "nDCG@10 rerank", "nDCG@10 interpolated"),
            [
                [
                    str(p.max_length),
                    str(p.depth),
                    f"{p.ms_per_query:.0f}",
                    f"{p.p95_ms:.0f}",
                    f"{p.ndcg['rerank']:.4f}",
                    f"{p.ndcg['interpolated']:.4f}",
                ]
                for p in self.points
            ],
            names=0,
            caption=f"first stage nDCG@10 {self.first_stage_ndcg:.4f}",
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for max_length in sorted({p.max_length for p in self.points}):
            line = [p for p in self.points if p.max_length == max_length]
            xs = [p.ms_per_query for p in line]
            ys = [p.ndcg["interpolated"] for p in line]
            ax.plot(xs, ys, marker="o", label=f"max_length {max_length}")
            for p, xv, yv in zip(line, xs, ys, strict=True):
                ax.annotate(f"@{p.depth}", (xv, yv), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.axhline(self.first_stage_ndcg, color="black", lw=1, ls="--", label="first stage (hybrid)")
        ax.set_xscale("log")
        ax.set_xlabel(f"rerank ms per query ({self.backend}, mean)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"Rerank depth and max_length ({self.queries} queries, {self.machine})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def run_tradeoff(
    settings: Settings,
    folder: Path,
    model: str,
    *,
    n_queries: int | None,
    depths: Sequence[int],
    max_lengths: Sequence[int],
    backend: str,
    progress: Callable[..., None] | None = None,
    log: Callable[[str], None] = print,
) -> TradeoffReport:
    """nDCG@10 against ms per query for each (max_length, rerank depth): each depth is timed in its own call,
    the quality comes from the deepest call's scores (the scores of a pair do not depend on its batch)."""
    deepest = max(depths)
    workload = build_workload(settings, folder, n_queries, deepest, progress)
    weight = tuned_weight(settings, model)
    points: list[TradeoffPoint] = []
    for max_length in max_lengths:
        for depth in sorted(depths):
            log(f"max_length {max_length}, depth {depth}")
            cut = Workload(
                workload.query_ids, workload.queries, [c[:depth] for c in workload.candidates], workload.qrels
            )
            measured = measure_in_fresh_process(
                Variant(f"{backend}", backend, max_length), model, cut, settings
            )
            points.append(
                TradeoffPoint(
                    max_length=max_length,
                    depth=depth,
                    ms_per_query=statistics.fmean(measured["latency_ms"]),
                    p95_ms=latency_summary(measured["latency_ms"])["p95"],
                    ndcg=rerank_quality(cut, measured["scores"], depth, weight),
                )
            )
    first = rerank_quality(workload, [[0.0] * len(c) for c in workload.candidates], 0, weight)["first_stage"]
    return TradeoffReport(
        machine=machine(),
        model=model,
        backend=backend,
        dataset=str(folder),
        queries=len(workload.queries),
        interpolation_weight=weight,
        first_stage_ndcg=first,
        points=tuple(points),
    )

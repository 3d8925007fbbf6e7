"""What `bench serve` measures and how it reports it: one `Outcome` per request, per-route statistics for each
client count, the service's added latency over an in-process pipeline, and the report (JSON, PNG, table).

Everything here is pure: no network, no clock. `bench_serve` produces the outcomes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.lab.reports import Report, report_table

SEARCH = "/search"
ROUTES = (SEARCH, "/rerank", "/v1/rerank")
ALL = "all"  # the row that sums every route of a level
QUANTILES = ("p50", "p95", "p99")


@dataclass(frozen=True)
class Outcome:
    """One request. `status` is None when it was never answered (`lost` says why: a timeout, or the
    connection's error); `fallback` is why an answered request was not reranked."""

    route: str
    latency_ms: float
    status: int | None
    lost: str | None = None
    fallback: str | None = None
    invalid: str | None = None  # a 2xx reply that is not what the route promises
    detail: str | None = None  # the start of an error reply's body: what the service said was wrong

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.invalid is None


def percentiles(samples_ms: Sequence[float]) -> dict[str, float] | None:
    """p50, p95, p99 (linear interpolation, as numpy), mean, max and n; None without samples."""
    if not samples_ms:
        return None
    values = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "max": float(values.max()),
        "n": float(len(values)),
    }


@dataclass(frozen=True)
class RouteStats:
    """One route at one client count. sent = ok + errors + lost; a fallback is counted within ok (a
    /search reply with `reranked: false`) or within errors (a rerank route's 429 or 5xx)."""

    route: str
    sent: int
    ok: int
    reranked: int  # ok replies that were reranked: a /search fallback is ok but not reranked
    errors: dict[str, int]  # HTTP status, or "invalid reply: why" for a 2xx we could not use
    lost: dict[str, int]  # "timeout", or "connection (ErrorType)"
    error_examples: dict[str, str]  # status -> the first such reply's body (its start)
    fallbacks: dict[str, int]
    latency_ms: dict[str, float] | None  # percentiles() of the ok replies
    throughput_rps: float  # ok replies per second of the level's wall time

    @property
    def answered(self) -> int:
        return self.sent - sum(self.lost.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.errors.items() if status.isdigit() and int(status) >= 500)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "reranked": self.reranked,
            "answered": self.answered,
            "errors": self.errors,
            "lost": self.lost,
            "error_examples": self.error_examples,
            "lost_total": sum(self.lost.values()),
            "server_errors_5xx": self.server_errors,
            "fallbacks": self.fallbacks,
            "latency_ms": self.latency_ms,
            "throughput_rps": self.throughput_rps,
            "reranked_rps": self.reranked_rps,
        }

    @property
    def reranked_rps(self) -> float:
        return self.throughput_rps * self.reranked / self.ok if self.ok else 0.0


def route_stats(route: str, outcomes: Iterable[Outcome], elapsed_s: float) -> RouteStats:
    chosen = list(outcomes)
    errors: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for outcome in chosen:
        if outcome.status is None:
            lost[outcome.lost or "unanswered"] += 1
        elif outcome.invalid is not None:
            errors[f"invalid reply: {outcome.invalid}"] += 1
        elif not outcome.ok:
            errors[str(outcome.status)] += 1
            examples.setdefault(str(outcome.status), outcome.detail or "")
    good = [o.latency_ms for o in chosen if o.ok]
    return RouteStats(
        route=route,
        sent=len(chosen),
        ok=len(good),
        reranked=sum(1 for o in chosen if o.ok and o.fallback is None),
        errors=dict(sorted(errors.items())),
        lost=dict(sorted(lost.items())),
        error_examples=dict(sorted(examples.items())),
        fallbacks=dict(Counter(o.fallback for o in chosen if o.fallback is not None).most_common()),
        latency_ms=percentiles(good),
        throughput_rps=len(good) / elapsed_s if elapsed_s > 0 else 0.0,
    )


@dataclass(frozen=True)
class LoadLevel:
    """`clients` closed-loop clients for `seconds`; `elapsed_s` includes waiting for the requests still in
    flight when the time was up (each bounded by the request timeout)."""

    clients: int
    seconds: float
    elapsed_s: float
    routes: dict[str, RouteStats]  # each route that was sent, then ALL

    def to_json(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": self.seconds,
            "elapsed_s": self.elapsed_s,
            "routes": {name: stats.to_json() for name, stats in self.routes.items()},
        }


def aggregate(clients: int, seconds: float, elapsed_s: float, outcomes: Sequence[Outcome]) -> LoadLevel:
    """Per-route statistics in ROUTES order (then any other route), and ALL over every request."""
    names = [r for r in ROUTES if any(o.route == r for o in outcomes)]
    names += sorted({o.route for o in outcomes} - set(names))
    routes = {name: route_stats(name, (o for o in outcomes if o.route == name), elapsed_s) for name in names}
    routes[ALL] = route_stats(ALL, outcomes, elapsed_s)
    return LoadLevel(clients, seconds, elapsed_s, routes)


@dataclass(frozen=True)
class AddedLatency:
    """The same queries, one at a time, alternating which goes first: `pipeline.search(query)` in the
    bench's own process against POST /search (client-side wall time of each)."""

    rerank_path: str  # where both paths rerank: "Celery workers (REDIS_URL)", "in-process", "off"
    in_process_ms: tuple[float, ...]
    service_ms: tuple[float, ...]
    reranked_in_process: int
    reranked_service: int
    service_errors: dict[str, int]  # status -> count; those queries are left out of both sides
    # Each pipeline's own `timings_ms.total`, per query: what the wall time spent outside the pipeline.
    in_process_pipeline_ms: tuple[float, ...] = ()
    service_pipeline_ms: tuple[float, ...] = ()

    @property
    def queries(self) -> int:
        return len(self.in_process_ms)

    def summary(self) -> dict[str, Any]:
        local, served = percentiles(self.in_process_ms), percentiles(self.service_ms)
        paired = percentiles([s - i for s, i in zip(self.service_ms, self.in_process_ms, strict=True)])
        difference = (
            {q: served[q] - local[q] for q in ("p50", "p95")} if local is not None and served else None
        )
        return {
            "in_process_ms": local,
            "service_ms": served,
            "difference_ms": difference,  # service p50 - in-process p50, and the same for p95
            "paired_difference_ms": paired,  # per query, service - in-process
            "in_process_pipeline_ms": percentiles(self.in_process_pipeline_ms),
            "service_pipeline_ms": percentiles(self.service_pipeline_ms),
            # per query, the service's wall time less its pipeline's total: HTTP, JSON and the framework
            "outside_pipeline_ms": percentiles(
                [w - p for w, p in zip(self.service_ms, self.service_pipeline_ms, strict=True)]
                if len(self.service_pipeline_ms) == len(self.service_ms)
                else []
            ),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "rerank_path": self.rerank_path,
            "queries": self.queries,
            "reranked": {"in_process": self.reranked_in_process, "service": self.reranked_service},
            "service_errors": self.service_errors,
            **self.summary(),
            "samples_ms": {"in_process": list(self.in_process_ms), "service": list(self.service_ms)},
        }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in counts.items()) or "0"


def _ms(stats: dict[str, float] | None, key: str) -> str:
    return "-" if stats is None else f"{stats[key]:,.1f}"


@dataclass(frozen=True)
class ServeBenchReport(Report):
    machine: str
    target: str
    dataset: str
    queries: int  # distinct queries the clients cycle through
    candidates_per_rerank: int  # documents sent to /rerank and /v1/rerank
    mix: dict[str, float]  # route -> weight
    request_timeout_s: float
    stack: dict[str, str]  # what the bench's settings say the stack is (the service runs on the same env)
    levels: tuple[LoadLevel, ...]
    added_latency: AddedLatency | None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "serve",
            "machine": self.machine,
            "target": self.target,
            "dataset": self.dataset,
            "queries": self.queries,
            "candidates_per_rerank": self.candidates_per_rerank,
            "mix": self.mix,
            "request_timeout_s": self.request_timeout_s,
            "stack": self.stack,
            "notes": list(self.notes),
            "levels": [level.to_json() for level in self.levels],
            "added_latency": None if self.added_latency is None else self.added_latency.to_json(),
        }

    def printed_json(self) -> dict[str, Any]:
        printed = self.to_json()
        if printed["added_latency"] is not None:
            printed["added_latency"] = {
                k: v for k, v in printed["added_latency"].items() if k != "samples_ms"
            }
        return printed

    def table(self) -> Table:
        rows = []
        for level in self.levels:
            for name, stats in level.routes.items():
                rows.append(
                    [
                        str(level.clients),
                        name,
                        str(stats.sent),
                        str(stats.ok),
                        f"{stats.throughput_rps:.1f}",
                        f"{stats.reranked_rps:.1f}",
                        *(_ms(stats.latency_ms, q) for q in QUANTILES),
                        _counts(stats.errors),
                        _counts(stats.lost),
                        _counts(stats.fallbacks),
                    ]
                )
        return report_table(
            f"load on {self.target}: engine {self.stack.get('backend', '?')}, "
            f"rerank via {self.stack.get('rerank', '?')} ({self.machine})",
            (
                "clients",
                "route",
                "sent",
                "ok",
                "ok/s",
                "reranked/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "lost",
                "rerank fallbacks",
            ),
            rows,
            names=2,
            caption=self.added_latency_line(),
        )

    def added_latency_line(self) -> str | None:
        added = self.added_latency
        if added is None:
            return None
        summary = added.summary()
        local, served, paired = (
            summary["in_process_ms"],
            summary["service_ms"],
            summary["paired_difference_ms"],
        )
        if local is None or served is None or paired is None:
            return f"added latency: no query answered on both paths ({_counts(added.service_errors)})"
        return (
            f"added latency, 1 client, {added.queries} queries, rerank {added.rerank_path}: in-process "
            f"p50 {local['p50']:,.1f} / p95 {local['p95']:,.1f} ms, POST /search p50 {served['p50']:,.1f} / "
            f"p95 {served['p95']:,.1f} ms, difference {served['p50'] - local['p50']:+,.1f} / "
            f"{served['p95'] - local['p95']:+,.1f} ms (per query p50 {paired['p50']:+,.1f} ms)"
            + (
                f"; the service's pipeline p50 {summary['service_pipeline_ms']['p50']:,.1f} ms (in-process "
                f"{summary['in_process_pipeline_ms']['p50']:,.1f}), outside it per query p50 "
                f"{summary['outside_pipeline_ms']['p50']:,.1f} ms"
                if summary["outside_pipeline_ms"] and summary["in_process_pipeline_ms"]
                else ""
            )
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (latency, throughput, added) = plt.subplots(1, 3, figsize=(16, 4.8))
        clients = [level.clients for level in self.levels]
        names = list(dict.fromkeys(name for level in self.levels for name in level.routes if name != ALL))
        names.append(ALL)  # every route any level sent (a short level may miss one), then the sum
        colors = {name: f"C{i}" for i, name in enumerate(names)}
        styles = {"p50": "-", "p95": "--", "p99": ":"}
        for name in names:
            if name == ALL:
                continue
            for quantile, style in styles.items():
                values = [_latency(level, name, quantile) for level in self.levels]
                latency.plot(
                    clients, values, style, marker="o", color=colors[name], label=f"{name} {quantile}"
                )
        for name in names:
            values = [
                level.routes[name].throughput_rps if name in level.routes else 0.0 for level in self.levels
            ]
            throughput.plot(clients, values, marker="o", color=colors[name], label=f"{name} ok")
            reranked = [
                level.routes[name].reranked_rps if name in level.routes else 0.0 for level in self.levels
            ]
            throughput.plot(clients, reranked, "--", marker="x", color=colors[name], label=f"{name} reranked")
        for axis in (latency, throughput):
            axis.set_xlabel("concurrent clients")
            axis.grid(alpha=0.3)
            if clients and max(clients) >= 10 * min(clients):
                axis.set_xscale("log")
            axis.set_xticks(clients, [str(c) for c in clients])
        latency.set_yscale("log")
        latency.set_ylabel("latency of ok replies, ms")
        latency.set_title("p50 / p95 / p99 per route", fontsize=10)
        latency.legend(fontsize=7, ncol=2)
        throughput.set_ylabel("replies / s")
        throughput.set_title("throughput per route: ok, and reranked (dashed)", fontsize=10)
        throughput.legend(fontsize=7, ncol=2)
        self._plot_added(added)
        fig.suptitle(f"bench serve: {self.target} ({self.machine})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def _plot_added(self, axis: Any) -> None:
        summary = None if self.added_latency is None else self.added_latency.summary()
        if summary is None or summary["in_process_ms"] is None or summary["service_ms"] is None:
            axis.text(0.5, 0.5, "added latency not measured", ha="center", va="center")
            axis.set_axis_off()
            return
        assert self.added_latency is not None
        x = np.arange(2)
        for offset, (label, key) in zip(
            (-0.2, 0.2), (("in-process", "in_process_ms"), ("POST /search", "service_ms")), strict=True
        ):
            values = [summary[key]["p50"], summary[key]["p95"]]
            bars = axis.bar(x + offset, values, 0.4, label=label)
            axis.bar_label(bars, fmt="%.0f", fontsize=8)
        difference = summary["difference_ms"]
        axis.set_xticks(x, [f"p50 ({difference['p50']:+.1f} ms)", f"p95 ({difference['p95']:+.1f} ms)"])
        axis.set_ylabel("ms, one client")
        axis.set_title(
            f"added latency, {self.added_latency.queries} queries, rerank {self.added_latency.rerank_path}",
            fontsize=10,
        )
        axis.legend(fontsize=8)


def _latency(level: LoadLevel, route: str, quantile: str) -> float:
    stats = level.routes.get(route)
    return float("nan") if stats is None or stats.latency_ms is None else stats.latency_ms[quantile]

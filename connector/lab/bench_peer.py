"""`hybrid-rerank bench peer`: our reranker beside a peer serving system, Infinity (infinity-emb), on the same
cross-encoder folder, the same pairs and the same window, against the sentence-transformers baseline.

Workload: `bench rerank`'s (BEIR test queries, each with its hybrid top-`depth` candidates), with every
document cut to the window beforehand (peer_infinity.cut_to_window), so all engines read the same tokens.
Each measurement is a fresh process: ours and the baseline spawned from our environment, Infinity's in its
own (scripts/peer-infinity). Rounds alternate: each round runs every engine at every window, in an order
rotated by one each round, so drifting machine load falls on every engine alike. A round's ratio is an
engine's pairs/s over the baseline's in the same round at the same window; the report gives each engine's
median pairs/s and median ratio over the rounds, and the margin of ours over the peer's best engine.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.lab.bench import machine
from hybrid_rerank.connector.lab.bench_rerank import (
    BASELINE,
    Variant,
    Workload,
    build_workload,
    measure_in_fresh_process,
)
from hybrid_rerank.connector.lab.peer_infinity import (
    PEER_ENGINES,
    cut_to_window,
    peer_folders,
    peer_python,
    run_peer,
)
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings

OURS_RUNNERS = ("onnx-int8", "onnx", "torch", "torch-bf16")


@dataclass(frozen=True)
class Engine:
    name: str
    side: str  # "baseline", "ours" or "peer"
    kind: str  # baseline: "baseline"; ours: a runner kind; peer: one of PEER_ENGINES


def parse_engines(ours: str, peer: str) -> list[Engine]:
    """The baseline first, then ours (comma-separated runner kinds), then Infinity's (comma-separated of
    torch, optimum, http)."""
    engines = [Engine("baseline CrossEncoder.predict fp32", "baseline", BASELINE)]
    for kind in filter(None, (k.strip() for k in ours.split(","))):
        if kind not in OURS_RUNNERS:
            raise ValueError(f"unknown runner {kind!r} for ours; choose from {', '.join(OURS_RUNNERS)}")
        engines.append(Engine(f"ours {kind}", "ours", kind))
    for kind in filter(None, (k.strip() for k in peer.split(","))):
        if kind not in PEER_ENGINES:
            raise ValueError(f"unknown Infinity engine {kind!r}; choose from {', '.join(PEER_ENGINES)}")
        label = {"torch": "torch", "optimum": "optimum int8", "http": "HTTP server (optimum int8)"}[kind]
        engines.append(Engine(f"infinity {label}", "peer", kind))
    names = [e.name for e in engines]
    if len(set(names)) != len(names):
        raise ValueError(f"an engine is named twice: {', '.join(names)}")
    if not any(e.side == "ours" for e in engines) or not any(e.side == "peer" for e in engines):
        raise ValueError("name at least one of ours (--ours) and one of Infinity's (--peer-engines)")
    return engines


def round_order(engines: Sequence[Engine], round_index: int) -> list[Engine]:
    """Every engine once, rotated by `round_index`, so no engine always runs first or right after another."""
    shift = round_index % len(engines)
    return [*engines[shift:], *engines[:shift]]


@dataclass(frozen=True)
class EngineResult:
    """One engine at one window over the rounds; ratios are against the baseline in the same round."""

    engine: Engine
    max_length: int
    description: str
    pairs_per_s: list[float]  # one per round
    ratios: list[float]  # one per round
    peak_rss_mib: float
    max_score_diff: float  # against the baseline's scores for the same pairs, first round
    score_correlation: float

    @property
    def median_pairs_per_s(self) -> float:
        return statistics.median(self.pairs_per_s)

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine.name,
            "side": self.engine.side,
            "kind": self.engine.kind,
            "max_length": self.max_length,
            "description": self.description,
            "pairs_per_s": self.median_pairs_per_s,
            "pairs_per_s_rounds": self.pairs_per_s,
            "vs_baseline": self.median_ratio,
            "vs_baseline_rounds": self.ratios,
            "peak_rss_mib": self.peak_rss_mib,
            "max_score_diff": self.max_score_diff,
            "score_correlation": self.score_correlation,
        }


def round_ratios(samples: dict[str, list[float]], baseline: str) -> dict[str, list[float]]:
    """Per engine, its pairs/s over the baseline's in the same round."""
    reference = samples[baseline]
    for name, values in samples.items():
        if len(values) != len(reference):
            raise ValueError(f"{name} has {len(values)} rounds, the baseline {len(reference)}")
    return {name: [v / b for v, b in zip(values, reference, strict=True)] for name, values in samples.items()}


def margin(results: Sequence[EngineResult], max_length: int) -> dict[str, Any] | None:
    """Ours' best engine against the peer's best at one window, by median ratio to the baseline."""
    at = [r for r in results if r.max_length == max_length]
    ours = [r for r in at if r.engine.side == "ours"]
    peer = [r for r in at if r.engine.side == "peer"]
    if not ours or not peer:
        return None
    best_ours = max(ours, key=lambda r: r.median_ratio)
    best_peer = max(peer, key=lambda r: r.median_ratio)
    return {
        "max_length": max_length,
        "ours": best_ours.engine.name,
        "peer": best_peer.engine.name,
        "ours_over_peer": best_ours.median_ratio / best_peer.median_ratio,
    }


@dataclass(frozen=True)
class PeerBenchReport(Report):
    machine: str
    settings: dict[str, Any]
    model: str
    dataset: str
    queries: int
    candidates_per_query: int
    pairs: int
    rounds: int
    results: tuple[EngineResult, ...]
    load_average: dict[str, list[float]] = field(default_factory=dict)  # "start" and "end": 1/5/15 min

    @property
    def max_lengths(self) -> list[int]:
        return sorted({r.max_length for r in self.results})

    def margins(self) -> list[dict[str, Any]]:
        return [m for length in self.max_lengths if (m := margin(self.results, length)) is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "peer",
            "machine": self.machine,
            "settings": self.settings,
            "load_average": self.load_average,
            "model": self.model,
            "dataset": self.dataset,
            "queries": self.queries,
            "candidates_per_query": self.candidates_per_query,
            "pairs": self.pairs,
            "rounds": self.rounds,
            "results": [r.to_json() for r in self.results],
            "margins": self.margins(),
        }

    def table(self) -> Table:
        caption = "; ".join(
            f"max_length {m['max_length']}: {m['ours']} x{m['ours_over_peer']:.2f} {m['peer']}"
            for m in self.margins()
        )
        return report_table(
            f"peer: {self.pairs} pairs ({self.queries} queries x {self.candidates_per_query}), "
            f"{self.rounds} rounds, {self.machine}",
            ("engine", "max_length", "pairs/s", "vs baseline", "rounds", "peak RSS MiB", "max |diff|"),
            [
                [
                    r.engine.name,
                    str(r.max_length),
                    f"{r.median_pairs_per_s:.1f}",
                    f"x{r.median_ratio:.2f}",
                    " ".join(f"{v:.2f}" for v in r.ratios),
                    f"{r.peak_rss_mib:.0f}",
                    f"{r.max_score_diff:.1e}",
                ]
                for r in self.results
            ],
            caption=caption,
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lengths = self.max_lengths
        names = list(dict.fromkeys(r.engine.name for r in self.results))
        colors = {"baseline": "grey", "ours": "tab:blue", "peer": "tab:orange"}
        fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 4.4), squeeze=False)
        for axis, length in zip(axes[0], lengths, strict=True):
            rows = [r for r in self.results if r.max_length == length]
            rows.sort(key=lambda r: names.index(r.engine.name))
            x = np.arange(len(rows))
            axis.bar(x, [r.median_pairs_per_s for r in rows], color=[colors[r.engine.side] for r in rows])
            for xi, r in zip(x, rows, strict=True):
                axis.text(xi, r.median_pairs_per_s, f"x{r.median_ratio:.2f}", ha="center", va="bottom")
            axis.set_xticks(x, [r.engine.name for r in rows], rotation=25, ha="right", fontsize=8)
            axis.set_ylabel("pairs / s (median of rounds)")
            axis.set_title(f"max_length {length}")
        fig.suptitle(
            f"Ours beside Infinity: {self.pairs} pairs, {self.rounds} rounds, {self.machine}", fontsize=10
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def cut_workload(workload: Workload, model: str, max_length: int) -> Workload:
    """The workload with every document cut to the window (see peer_infinity.cut_to_window)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    candidates = [
        [
            (doc_id, text, score)
            for (doc_id, _, score), text in zip(
                per_query,
                cut_to_window(tokenizer, query, [t for _, t, _ in per_query], max_length),
                strict=True,
            )
        ]
        for query, per_query in zip(workload.queries, workload.candidates, strict=True)
    ]
    return replace(workload, candidates=candidates)


def score_agreement(
    scores: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]
) -> tuple[float, float]:
    flat = np.array([v for per_query in scores for v in per_query], dtype=np.float64)
    ref = np.array([v for per_query in reference for v in per_query], dtype=np.float64)
    if flat.shape != ref.shape:
        raise ValueError(f"{flat.size} scores against the baseline's {ref.size}")
    correlation = float(np.corrcoef(flat, ref)[0, 1]) if flat.size > 1 else 1.0
    return float(np.abs(flat - ref).max()) if flat.size else 0.0, correlation


def engine_results(
    engines: Sequence[Engine],
    max_lengths: Sequence[int],
    measured: dict[tuple[str, int], list[dict[str, Any]]],
    rounds_done: int,
) -> list[EngineResult]:
    """Each engine at each window over the first `rounds_done` rounds (all engines have run them)."""
    results: list[EngineResult] = []
    for length in max_lengths:
        runs = {e.name: measured[e.name, length][:rounds_done] for e in engines}
        samples = {name: [m["pairs_per_s"] for m in done] for name, done in runs.items()}
        ratios = round_ratios(samples, engines[0].name)
        reference = runs[engines[0].name][0]["scores"]
        for engine in engines:
            first = runs[engine.name][0]
            diff, correlation = score_agreement(first["scores"], reference)
            results.append(
                EngineResult(
                    engine=engine,
                    max_length=length,
                    description=first["description"],
                    pairs_per_s=samples[engine.name],
                    ratios=ratios[engine.name],
                    peak_rss_mib=max(m["peak_rss_mib"] for m in runs[engine.name]),
                    max_score_diff=diff,
                    score_correlation=correlation,
                )
            )
    return results


@dataclass(frozen=True)
class PeerPlan:
    max_lengths: list[int]
    rounds: int
    batch_size: int  # Infinity's
    port: int  # Infinity's HTTP server, on 127.0.0.1
    work_dir: Path  # Infinity's environment and model folders
    timeout_s: float = 1800.0


def run_peer_bench(
    settings: Settings,
    dataset: Path,
    model: str,
    engines: Sequence[Engine],
    plan: PeerPlan,
    *,
    n_queries: int | None,
    depth: int,
    log: Callable[[str], None] = print,
    on_round: Callable[[PeerBenchReport], None] | None = None,
) -> PeerBenchReport:
    """`model`: a cross-encoder folder with torch weights (the baseline and Infinity's torch engine read
    them). `on_round` receives the report of the rounds done so far after each round."""
    python = peer_python(plan.work_dir, log)
    folders = peer_folders(python, Path(model), plan.work_dir, plan.max_lengths, log)
    workload = build_workload(settings, dataset, n_queries, depth, None)
    windows = {length: cut_workload(workload, model, length) for length in plan.max_lengths}
    load_start = list(os.getloadavg())
    measured: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def report(rounds_done: int) -> PeerBenchReport:
        return PeerBenchReport(
            machine=machine(),
            settings={
                "rerank_threads": settings.rerank_threads,
                "rerank_batch_size": settings.rerank_batch_size,
                "rerank_token_budget": settings.rerank_token_budget,
                "infinity_batch_size": plan.batch_size,
                "max_lengths": plan.max_lengths,
                "documents": "cut to the window beforehand, at a word boundary, for every engine",
            },
            model=model,
            dataset=str(dataset),
            queries=len(workload.queries),
            candidates_per_query=depth,
            pairs=workload.pairs,
            rounds=rounds_done,
            results=tuple(engine_results(engines, plan.max_lengths, measured, rounds_done)),
            load_average={"start": load_start, "end": list(os.getloadavg())},
        )

    for round_index in range(plan.rounds):
        for length in plan.max_lengths:
            cut = windows[length]
            for engine in round_order(engines, round_index):
                log(f"round {round_index + 1}/{plan.rounds}, max_length {length}: {engine.name}")
                if engine.side == "peer":
                    result = run_peer(
                        python,
                        engine.kind,
                        folders[engine.kind, length],
                        cut.queries,
                        [[t for _, t, _ in c] for c in cut.candidates],
                        batch_size=plan.batch_size,
                        port=plan.port,
                        timeout_s=plan.timeout_s,
                    )
                else:
                    result = measure_in_fresh_process(
                        Variant(engine.name, engine.kind, length), model, cut, settings
                    )
                result["pairs_per_s"] = cut.pairs / (sum(result["latency_ms"]) / 1000.0)
                log(f"  {result['pairs_per_s']:.1f} pairs/s (load average {os.getloadavg()[0]:.1f})")
                measured.setdefault((engine.name, length), []).append(result)
        if on_round is not None:
            on_round(report(round_index + 1))
    return report(plan.rounds)

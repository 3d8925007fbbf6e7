"""`hybrid-rerank bench rerank`: the reranking core against the plain sentence-transformers baseline on the
same pairs, in one run (`bench tradeoff`, in bench_tradeoff, reuses its workload and measurement).

Workload: BEIR test queries, each with its hybrid top-`depth` candidates from the evaluation index (the same
recall `eval` uses). Every variant scores exactly these (query, document) pairs. Each variant runs in a fresh
spawned process, so its peak RSS is its own and no variant warms another's caches; with `rounds` > 1 the
variants alternate (round r starts r places further down the list), and each variant's figures come from
its fastest round, so a burst of load on a shared machine hurts one round, not one variant. The baseline is
`CrossEncoder(folder, max_length=256).predict(pairs)` with its defaults (fp32 torch, batch 32).

Quality: each variant's scores rerank the first `quality_depth` candidates of every query; nDCG@10 is reported
for the rerank order alone and interpolated with the first stage at the model's tuned weight.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from hybrid_rerank.connector.factory import search_options
from hybrid_rerank.connector.lab.bench import in_fresh_process, latency_summary, machine, peak_rss_mib
from hybrid_rerank.connector.lab.evaluation import evaluate_run, hybrid_rankings, prepare_benchmark
from hybrid_rerank.connector.lab.reports import Report, report_table
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.connector.stages import rerank_order, rerank_weight
from hybrid_rerank.workers.runtime.models import interpolation_weight, resolve_model

BASELINE = "baseline"


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str  # "baseline" or a runner kind
    max_length: int


@dataclass(frozen=True)
class Workload:
    query_ids: list[str]
    queries: list[str]
    candidates: list[list[tuple[str, str, float]]]  # per query: (doc id, text, fused score), best first
    qrels: dict[str, dict[str, int]]

    @property
    def pairs(self) -> int:
        return sum(len(c) for c in self.candidates)


@dataclass(frozen=True)
class RerankRow:
    """One variant's figures; speedup and ndcg_delta are against the first (baseline) row."""

    variant: Variant
    description: str
    pairs_per_s: float
    latency_ms: dict[str, float]  # latency_summary of the per-query calls
    peak_rss_mib: float
    ndcg: dict[str, float]  # nDCG@10 of "rerank", "interpolated" and "first_stage"
    max_score_diff: float  # against the baseline's scores for the same pairs
    score_correlation: float
    speedup: float
    ndcg_delta: float
    pairs_per_s_rounds: tuple[float, ...] = ()  # every round's figure, in round order

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.variant),
            "description": self.description,
            "pairs_per_s": self.pairs_per_s,
            "pairs_per_s_rounds": list(self.pairs_per_s_rounds),
            "latency_ms": self.latency_ms,
            "peak_rss_mib": self.peak_rss_mib,
            "ndcg@10": self.ndcg,
            "max_score_diff": self.max_score_diff,
            "score_correlation": self.score_correlation,
            "speedup": self.speedup,
            "ndcg_delta": self.ndcg_delta,
        }


@dataclass(frozen=True)
class RerankBenchReport(Report):
    machine: str
    model: str
    dataset: str
    queries: int
    candidates_per_query: int
    pairs: int
    quality_depth: int
    interpolation_weight: float
    results: tuple[RerankRow, ...]
    trained_model: bool
    rounds: int = 1
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end
    threads: int | None = None  # RERANK_THREADS of our variants (None: the runtime's default)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "rerank",
            "machine": self.machine,
            "model": self.model,
            "dataset": self.dataset,
            "queries": self.queries,
            "candidates_per_query": self.candidates_per_query,
            "pairs": self.pairs,
            "quality_depth": self.quality_depth,
            "interpolation_weight": self.interpolation_weight,
            "results": [row.to_json() for row in self.results],
            "trained_model": self.trained_model,
            "rounds": self.rounds,
            "load_average": list(self.load_average),
            "threads": self.threads,
        }

    def table(self) -> Table:
        return report_table(
            f"rerank: {self.pairs} pairs ({self.queries} queries x {self.candidates_per_query}), "
            f"best of {self.rounds} alternating round(s), {self.machine}, load "
            f"{self.load_average[0]:.1f} -> {self.load_average[1]:.1f}",
            ("variant", "pairs/s", "vs baseline", "p50 ms", "p95 ms", "peak RSS MiB", "nDCG@10", "interp."),
            [
                [
                    row.variant.name,
                    f"{row.pairs_per_s:.1f}",
                    f"x{row.speedup:.2f}",
                    f"{row.latency_ms['p50']:.0f}",
                    f"{row.latency_ms['p95']:.0f}",
                    f"{row.peak_rss_mib:.0f}",
                    f"{row.ndcg['rerank']:.4f} ({row.ndcg_delta:+.4f})",
                    f"{row.ndcg['interpolated']:.4f}",
                ]
                for row in self.results
            ],
        )

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.results
        names = [r.variant.name.replace("ours ", "").replace(" CrossEncoder.predict", "") for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
        x = np.arange(len(rows))
        left.bar(x, [r.pairs_per_s for r in rows], color=["grey"] + ["tab:blue"] * (len(rows) - 1))
        for xi, r in zip(x, rows, strict=True):
            left.text(xi, r.pairs_per_s, f"x{r.speedup:.2f}", ha="center", va="bottom", fontsize=8)
        left.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        left.set_ylabel("pairs / s")
        left.set_title(f"{self.pairs} pairs, {self.candidates_per_query} per query")
        right.bar(x - 0.2, [r.ndcg["rerank"] for r in rows], 0.4, label="rerank order")
        right.bar(x + 0.2, [r.ndcg["interpolated"] for r in rows], 0.4, label="interpolated")
        right.axhline(rows[0].ndcg["first_stage"], color="black", lw=1, ls="--", label="first stage")
        right.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
        right.set_ylabel(f"nDCG@10 (rerank top {self.quality_depth})")
        right.set_ylim(0, 1)
        right.legend(fontsize=8, loc="lower right")
        fig.suptitle(
            f"Rerank speed and quality: {self.queries} test queries of {Path(self.dataset).name}, "
            f"{self.machine}, load {max(self.load_average):.1f}, best of {self.rounds} round(s)",
            fontsize=10,
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def default_variants(max_length: int, default_backend: str, default_length: int, bf16: bool) -> list[Variant]:
    variants = [
        Variant("baseline CrossEncoder.predict fp32", BASELINE, max_length),
        Variant("ours torch fp32", "torch", max_length),
    ]
    if bf16:
        variants.append(Variant("ours torch bf16", "torch-bf16", max_length))
    variants += [
        Variant("ours onnx fp32", "onnx", max_length),
        Variant("ours onnx int8", "onnx-int8", max_length),
    ]
    if (default_backend, default_length) not in {(v.backend, v.max_length) for v in variants}:
        variants.append(
            Variant(f"ours default ({default_backend}, {default_length})", default_backend, default_length)
        )
    return variants


def default_runner(settings: Settings) -> str:
    """The runner the default configuration uses: `auto` on a folder that ships only ONNX (the shipped
    reranker) is that int8 file, so the bench measures the same export of the torch model."""
    from hybrid_rerank.workers.runtime.models import bundled_onnx, has_torch_weights

    if settings.rerank_backend != "auto":
        return settings.rerank_backend
    folder = Path(resolve_model(settings.rerank_model or "").location)
    if folder.is_dir() and not has_torch_weights(folder):
        shipped = bundled_onnx(folder)
        return "onnx-int8" if shipped is not None and "int8" in shipped.name else "onnx"
    return "torch"


def tuned_weight(settings: Settings, model: str) -> float:
    """The weight the pipeline would use with `model`: RERANK_INTERPOLATION, else the folder's tuned one."""
    folder = resolve_model(model).location
    return rerank_weight(settings.rerank_interpolation, interpolation_weight(folder))


def build_workload(
    settings: Settings, folder: Path, n_queries: int | None, depth: int, progress: Callable[..., None] | None
) -> Workload:
    prepared = prepare_benchmark(settings, folder, "test", progress=progress)
    benchmark = prepared.benchmark
    query_ids = sorted(benchmark.queries)[:n_queries] if n_queries else sorted(benchmark.queries)
    texts = [benchmark.queries[q] for q in query_ids]
    vectors = prepared.embedder.embed_queries(texts)
    rankings = hybrid_rankings(prepared.backend, search_options(settings), texts, vectors, depth)
    documents = {d.id: d for d in benchmark.documents}
    candidates = [[(d, documents[d].full_text, score) for d, score in ranked] for ranked in rankings]
    return Workload(query_ids, texts, candidates, {q: benchmark.qrels[q] for q in query_ids})


def measure(variant: Variant, model: str, workload: Workload, settings: Settings) -> dict[str, Any]:
    """Runs in its own process: load, warm up on one query, then time every query's pairs in one call."""
    if variant.backend == BASELINE:
        import torch
        from sentence_transformers import CrossEncoder

        from hybrid_rerank.workers.runtime.models import quiet_transformers

        quiet_transformers()
        cross_encoder = CrossEncoder(resolve_model(model).location, max_length=variant.max_length)

        def score(query: str, texts: Sequence[str]) -> np.ndarray:
            raw = cross_encoder.predict(
                [(query, t) for t in texts], show_progress_bar=False, activation_fn=torch.nn.Identity()
            )
            return np.asarray(raw, dtype=np.float32).reshape(len(texts))

        description = (
            f"sentence-transformers CrossEncoder.predict (fp32, batch 32, max_length {variant.max_length})"
        )
    else:
        from hybrid_rerank.workers.scorer import CrossEncoderScorer

        scorer = CrossEncoderScorer(
            model,
            max_length=variant.max_length,
            batch_size=settings.rerank_batch_size,
            token_budget=settings.rerank_token_budget,
            backend=variant.backend,  # type: ignore[arg-type]
            threads=settings.rerank_threads,
            cache_dir=settings.data_dir / "onnx-cache",
        )
        loaded = scorer.load()

        def score(query: str, texts: Sequence[str]) -> np.ndarray:
            return np.asarray(scorer.score_pairs([query] * len(texts), texts, loaded))

        description = f"{loaded.runner.description}, max_length {variant.max_length}"

    first_texts = [t for _, t, _ in workload.candidates[0]]
    score(workload.queries[0], first_texts)  # warm-up: lazy init, allocator, thread pools
    latencies: list[float] = []
    scores: list[list[float]] = []
    for query, candidates in zip(workload.queries, workload.candidates, strict=True):
        texts = [t for _, t, _ in candidates]
        started = time.perf_counter()
        values = score(query, texts)
        latencies.append((time.perf_counter() - started) * 1000.0)
        scores.append(values.tolist())
    return {
        "description": description,
        "latency_ms": latencies,
        "scores": scores,
        "peak_rss_mib": peak_rss_mib(),
    }


def measure_in_fresh_process(
    variant: Variant, model: str, workload: Workload, settings: Settings
) -> dict[str, Any]:
    result: dict[str, Any] = in_fresh_process(measure, variant, model, workload, settings)
    return result


def rerank_quality(
    workload: Workload, scores: Sequence[Sequence[float]], quality_depth: int, weight: float
) -> dict[str, float]:
    """nDCG@10 reranking each query's first `quality_depth` candidates: the rerank order and interpolated."""
    runs: dict[str, dict[str, list[str]]] = {"rerank": {}, "interpolated": {}, "first_stage": {}}
    for query_id, candidates, values in zip(workload.query_ids, workload.candidates, scores, strict=True):
        first = [(d, s) for d, _, s in candidates]
        head = dict(zip([d for d, _ in first[:quality_depth]], values[:quality_depth], strict=True))
        runs["first_stage"][query_id] = [d for d, _ in first]
        runs["rerank"][query_id] = rerank_order(first, head, quality_depth, 1.0)[0]
        runs["interpolated"][query_id] = rerank_order(first, head, quality_depth, weight)[0]
    return {name: evaluate_run(run, workload.qrels)["ndcg@10"] for name, run in runs.items()}


def alternating(variants: Sequence[Variant], rounds: int) -> list[tuple[int, Variant]]:
    """(round, variant) in run order: each round starts one variant further down the list."""
    count = len(variants)
    return [(r, variants[(r + i) % count]) for r in range(rounds) for i in range(count)]


def run_rerank_bench(
    settings: Settings,
    folder: Path,
    model: str,
    *,
    trained_model: bool,
    n_queries: int | None,
    depth: int,
    quality_depth: int,
    variants: Sequence[Variant],
    rounds: int = 1,
    progress: Callable[..., None] | None = None,
    log: Callable[[str], None] = print,
) -> RerankBenchReport:
    """`trained_model`: False when `model` is the untrained stand-in of `torch_model_for_bench`. The first
    variant is the baseline the others are compared with."""
    workload = build_workload(settings, folder, n_queries, depth, progress)
    weight = tuned_weight(settings, model)
    load_start = os.getloadavg()[0]
    measured: dict[Variant, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_index, variant in alternating(variants, rounds):
        log(f"round {round_index + 1}/{rounds}: measuring {variant.name} on {workload.pairs} pairs")
        measured[variant].append(measure_in_fresh_process(variant, model, workload, settings))
    rows: list[RerankRow] = []
    reference: np.ndarray | None = None
    for variant in variants:
        per_round = [workload.pairs / (sum(m["latency_ms"]) / 1000.0) for m in measured[variant]]
        best = measured[variant][int(np.argmax(per_round))]
        flat = np.array([v for per_query in best["scores"] for v in per_query])
        reference = flat if reference is None else reference
        ndcg = rerank_quality(workload, best["scores"], quality_depth, weight)
        baseline = rows[0] if rows else None
        rows.append(
            RerankRow(
                variant=variant,
                description=best["description"],
                pairs_per_s=max(per_round),
                latency_ms=latency_summary(best["latency_ms"]),
                peak_rss_mib=max(m["peak_rss_mib"] for m in measured[variant]),
                ndcg=ndcg,
                max_score_diff=float(np.abs(flat - reference).max()) if flat.size else 0.0,
                score_correlation=float(np.corrcoef(flat, reference)[0, 1]) if flat.size > 1 else 1.0,
                speedup=max(per_round) / baseline.pairs_per_s if baseline is not None else 1.0,
                ndcg_delta=ndcg["rerank"] - baseline.ndcg["rerank"] if baseline is not None else 0.0,
                pairs_per_s_rounds=tuple(per_round),
            )
        )
    return RerankBenchReport(
        machine=machine(),
        model=model,
        dataset=str(folder),
        queries=len(workload.queries),
        candidates_per_query=depth,
        pairs=workload.pairs,
        quality_depth=quality_depth,
        interpolation_weight=weight,
        results=tuple(rows),
        trained_model=trained_model,
        rounds=rounds,
        load_average=(load_start, os.getloadavg()[0]),
        threads=settings.rerank_threads,
    )


def torch_model_for_bench(
    settings: Settings, model: str | None, log: Callable[[str], None]
) -> tuple[str, bool]:
    """(model, trained): the baseline needs torch weights. Without a trained folder, a cross-encoder of the
    same architecture (all-MiniLM-L6-v2 with a fresh head) measures speed honestly, though not quality."""
    from hybrid_rerank.workers.runtime.models import has_torch_weights

    name = model or settings.rerank_model
    if name and has_torch_weights(Path(resolve_model(name).location)):
        return name, True
    folder = settings.data_dir / "models" / "minilm-l6-untrained-ce"
    if not has_torch_weights(folder):
        from sentence_transformers import CrossEncoder

        from hybrid_rerank.workers.runtime.models import quiet_transformers

        quiet_transformers()
        CrossEncoder(resolve_model("all-MiniLM-L6-v2").location, num_labels=1).save_pretrained(str(folder))
    log(
        f"{name or 'RERANK_MODEL'} has no torch weights for the baseline: measuring speed on {folder} "
        "(all-MiniLM-L6-v2 with an untrained head); its nDCG columns mean nothing. "
        "Pass --model with a folder that `hybrid-rerank train-reranker` wrote for quality."
    )
    return str(folder), False

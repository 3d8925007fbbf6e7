"""What the benchmarks share. Each one runs the baseline and ours side by side in one run and prints the
ratio: these machines are noisy, so absolute times from different runs are not comparable, ratios from one
run are.

The benchmarks: `bench_celery` (in-process against Celery), `bench_rerank` and `bench_tradeoff` (the
cross-encoder), `bench_embed` (index-time embedding), `bench_stack` (first stage and bulk indexing).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_rerank.connector.backends.embedded import LuceneBM25
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.text import tokenize
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
    """`function(*args)` in a newly spawned process: its own imports, caches and peak RSS, none inherited.
    `function` must be importable by name (module level)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def peak_rss_mib() -> float:
    """This process's own peak resident set, MiB: `VmHWM`, which belongs to the address space and starts
    afresh at exec. Linux keeps ru_maxrss across fork and exec, so a child spawned by a large parent would
    report the parent's peak; it is only the fallback where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)  # bytes on macOS, else KiB


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"

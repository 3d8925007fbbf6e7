"""The query half of `bench embed`: p50 of one query's embedding, today's path (queries embedded like the
documents, `EMBEDDING_QUERY_BACKEND=same`) against the one-query ONNX runners, in one fresh process, the
variants taking turns query by query (the one that goes first rotates) so that load on a shared machine falls
on all of them alike. The LRU cache is off: every call runs the model.

Quality: each variant's query vectors against the baseline's (cosine), and with `--full` SciFact's dense
nDCG@10 over the baseline's fp32 document vectors, so the ranking a search gets from the index it has.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hybrid_rerank.connector.settings import Settings

if TYPE_CHECKING:
    from hybrid_rerank.connector.embedder import Embedder

# (name, query backend): the first is the baseline, today's path.
QUERY_VARIANTS: tuple[tuple[str, str], ...] = (
    ("baseline: like the documents", "same"),
    ("ours onnx fp32, one query", "onnx"),
    ("ours onnx int8, one query", "onnx-int8"),
)
WARM_UP_QUERIES = 10


def time_queries(settings: Settings, texts: Sequence[str]) -> dict[str, Any]:
    """Runs in its own process: `time_embedders` over `query_embedders(settings)`."""
    return time_embedders(query_embedders(settings), texts)


def query_embedders(settings: Settings) -> list[Embedder]:
    """One embedder per query variant, as the settings configure the documents, the LRU cache off."""
    from hybrid_rerank.connector.embedder import Embedder

    return [
        Embedder(
            settings.embedding_model,
            backend=settings.embedding_backend,
            cache_dir=settings.embedding_onnx_cache,
            query_cache_size=0,
            query_backend=backend,  # type: ignore[arg-type]
            query_threads=settings.embedding_query_threads,
        )
        for _, backend in QUERY_VARIANTS
    ]


def time_embedders(embedders: Sequence[Embedder], texts: Sequence[str]) -> dict[str, Any]:
    """Every embedder warmed, then each text embedded by each in turn. Returns per embedder the
    milliseconds, the vectors and what ran, plus the load average around it."""
    for embedder in embedders:
        for text in texts[:WARM_UP_QUERIES]:
            embedder.embed_query(text)
    load_before = os.getloadavg()
    millis: list[list[float]] = [[] for _ in embedders]
    vectors: list[list[np.ndarray]] = [[] for _ in embedders]
    for turn, text in enumerate(texts):
        for offset in range(len(embedders)):
            which = (turn + offset) % len(embedders)
            started = time.perf_counter()
            vector = embedders[which].embed_query(text)
            millis[which].append((time.perf_counter() - started) * 1000.0)
            vectors[which].append(vector)
    return {
        "variants": [
            {"ms": ms, "vectors": np.stack(rows), "runs": embedder.query_description}
            for ms, rows, embedder in zip(millis, vectors, embedders, strict=True)
        ],
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "document_backend": embedders[0].backend,
        "torch_threads": torch_threads(),
    }


def torch_threads() -> str:
    """torch's intra-op threads in this process, or why there are none."""
    import sys

    torch = sys.modules.get("torch")
    return str(torch.get_num_threads()) if torch is not None else "torch not loaded"


@dataclass(frozen=True)
class QueryRow:
    name: str
    query_backend: str
    runs: str  # what ran, as the embedder describes it
    p50_ms: float
    p95_ms: float
    ratio_p50: float  # p50 / the baseline's p50
    cosine_to_baseline: dict[str, float]
    dense_ndcg: float | None  # with --full only: the baseline's fp32 documents, these query vectors

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "query_backend": self.query_backend,
            "runs": self.runs,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "ratio_p50": self.ratio_p50,
            "cosine_to_baseline": self.cosine_to_baseline,
        }
        if self.dense_ndcg is not None:
            row["dense_ndcg@10"] = self.dense_ndcg
        return row


@dataclass(frozen=True)
class QueryReport:
    queries: int
    load_average: list[float]  # 1, 5, 15 min before the timed loop, then after
    settings: dict[str, str]
    default: str  # the query backend `auto` runs
    results: tuple[QueryRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "load_average": self.load_average,
            "settings": self.settings,
            "default": self.default,
            "results": [row.to_json() for row in self.results],
        }


def query_report(
    settings: Settings, measured: dict[str, Any], ndcg: dict[str, float] | None, queries: int
) -> QueryReport:
    """The table's rows from `time_queries`'s result; `ndcg`: dense nDCG@10 by query backend (--full)."""
    from hybrid_rerank.connector.query_embedding import AUTO_QUERY_BACKEND

    variants = measured["variants"]
    baseline_p50 = float(np.percentile(variants[0]["ms"], 50))
    rows = []
    for (name, backend), variant in zip(QUERY_VARIANTS, variants, strict=True):
        cosines = np.sum(variant["vectors"] * variants[0]["vectors"], axis=1)
        p50 = float(np.percentile(variant["ms"], 50))
        rows.append(
            QueryRow(
                name=name,
                query_backend=backend,
                runs=variant["runs"],
                p50_ms=p50,
                p95_ms=float(np.percentile(variant["ms"], 95)),
                ratio_p50=p50 / baseline_p50,
                cosine_to_baseline={"mean": float(cosines.mean()), "min": float(cosines.min())},
                dense_ndcg=None if ndcg is None else ndcg[backend],
            )
        )
    return QueryReport(
        queries=queries,
        load_average=measured["load_average"],
        settings={
            "document_backend": measured["document_backend"],
            "query_threads": str(settings.embedding_query_threads),
            "torch_threads": measured["torch_threads"],
        },
        default=AUTO_QUERY_BACKEND,
        results=tuple(rows),
    )


def cycled(texts: Sequence[str], count: int) -> list[str]:
    """`count` texts, going round `texts` again if it has fewer."""
    return [texts[i % len(texts)] for i in range(count)] if texts else []

"""`hybrid-rerank demo`: index the built-in corpus, then show first-stage and reranked top-5 per query."""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybrid_rerank.connector.errors import ModelLoadError
from hybrid_rerank.connector.factory import make_embedder, make_pipeline, make_scorer, open_backend
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.lab.evaluation import load_beir
from hybrid_rerank.connector.lab.metrics import ndcg_at_k
from hybrid_rerank.connector.progress import progress_bar
from hybrid_rerank.connector.settings import Settings
from hybrid_rerank.workers.client import InProcessReranker, Reranker

DEMO_INDEX = "demo"
SHOWN = 5


def demo_data_dir() -> Path:
    return Path(str(resources.files("hybrid_rerank.connector.lab") / "demo_data"))


def run_demo(settings: Settings, console: Console, *, rerank: bool = True) -> None:
    # The demo promises to run offline: never wait on a model hub that cannot be reached.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = demo_data_dir()
    benchmark = load_beir(folder)
    documents, queries, qrels = benchmark.documents, benchmark.queries, benchmark.qrels

    embedder = make_embedder(settings)
    console.print(
        f"[bold]Embedding model:[/] {embedder.model_name} — {embedder.source.origin}", highlight=False
    )
    reranker = _reranker(settings, console) if rerank else None

    backend = open_backend(settings, DEMO_INDEX)
    console.print(
        f"[bold]Indexing[/] {len(documents)} demo documents into {backend.name} index {DEMO_INDEX!r}"
    )
    with progress_bar(console, "embedding", len(documents)) as update:
        report = index_documents(backend, embedder, documents, recreate=True, progress=update)
    console.print(
        f"indexed {report.bulk.written} documents in {report.embed_seconds + report.write_seconds:.1f}s "
        f"({report.documents / max(report.embed_seconds, 1e-9):.0f} docs/s embedding)"
    )

    pipeline = make_pipeline(settings, backend=backend, embedder=embedder, reranker=reranker)
    depth = max(SHOWN, pipeline.options.rerank_depth)
    first_scores, final_scores, rerank_ms = [], [], []
    started = time.perf_counter()
    for query_id, text in queries.items():
        relevant = qrels.get(query_id, {})
        result = pipeline.search(text, k=depth, rerank=reranker is not None)
        first_stage = [h.id for h in sorted(result.hits, key=lambda h: h.fused_rank)]
        final = [h.id for h in result.hits]
        first_scores.append(ndcg_at_k(first_stage, relevant, SHOWN))
        final_scores.append(ndcg_at_k(final, relevant, SHOWN))
        rerank_ms.append(result.timings_ms.get("rerank", 0.0))
        titles = {h.id: h.document.title for h in result.hits}
        table = Table(title=f"{query_id}: {text}", title_justify="left")
        table.add_column("#")
        table.add_column(f"first stage (hybrid {pipeline.options.fusion})", no_wrap=True, max_width=38)
        if result.reranked:
            table.add_column("reranked (cross-encoder)", no_wrap=True, max_width=38)
        for position in range(min(SHOWN, len(first_stage))):
            row = [str(position + 1), _label(first_stage[position], relevant, titles)]
            if result.reranked:
                row.append(_label(final[position], relevant, titles))
            table.add_row(*row)
        console.print(table)
    elapsed = time.perf_counter() - started

    n = len(queries)
    console.print(f"\n[bold]{n} queries[/] in {elapsed:.1f}s; ✓ marks a document judged relevant")
    console.print(f"nDCG@{SHOWN} first stage: {sum(first_scores) / n:.3f}", highlight=False)
    if reranker is not None:
        console.print(
            f"nDCG@{SHOWN} reranked:    {sum(final_scores) / n:.3f}  "
            f"(rerank {sum(rerank_ms) / n:.0f} ms per query for the top {pipeline.options.rerank_depth})",
            highlight=False,
        )


def _reranker(settings: Settings, console: Console) -> Reranker | None:
    scorer = make_scorer(settings)
    if scorer is None:
        console.print("[yellow]Reranker:[/] off (RERANK_MODEL=none); showing the first stage only")
        return None
    try:
        scorer.load()
    except ModelLoadError as exc:
        console.print(f"[yellow]Reranker: not available[/] — {exc}", highlight=False)
        console.print(
            "[yellow]To rerank, unset RERANK_MODEL (the shipped scifact-minilm-l6-reranker-int8 runs "
            "offline) or point it at a local cross-encoder folder[/], e.g.\n"
            "  RERANK_MODEL=/models/ms-marco-MiniLM-L-6-v2 hybrid-rerank demo\n"
            "or, on a machine with network access, let it download one:\n"
            "  HF_HUB_OFFLINE=0 RERANK_MODEL=cross-encoder/ms-marco-MiniLM-L-6-v2 hybrid-rerank demo\n"
            "Showing the first stage only.",
            highlight=False,
        )
        return None
    console.print(f"[bold]Reranker:[/] {scorer.description}", highlight=False)
    return InProcessReranker(scorer)


def _label(doc_id: str, relevant: dict[str, int], titles: dict[str, str]) -> str:
    mark = "✓" if relevant.get(doc_id, 0) > 0 else " "
    return f"{mark} {doc_id} {titles.get(doc_id, '')}"

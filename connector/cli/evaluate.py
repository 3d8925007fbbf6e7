"""`hybrid-rerank eval`: standard metrics on a BEIR folder for every system (lab extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hybrid_rerank.connector.cli.common import app, err, load, out, require_lab, staged_progress


@app.command("eval")
def evaluate(
    dataset: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    ],
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    rerank_depth: Annotated[
        int | None, typer.Option(help="candidates reranked (default RERANK_DEPTH)")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(min=1, help="evaluate the first N judged queries")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="where the JSON report and the PNG go")] = Path(
        "eval-results"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report to stdout")] = False,
) -> None:
    """nDCG@10, MRR@10, Recall@100 and hit rate for BM25, dense, each hybrid fusion and hybrid + rerank."""
    require_lab()
    from hybrid_rerank.connector.lab.evaluation import plot_report, run_eval

    settings = load()
    with staged_progress() as progress:
        report = run_eval(
            settings,
            dataset,
            split=split,
            rerank_depth=rerank_depth,
            max_queries=max_queries,
            progress=progress,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{dataset.name}-{split}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_report(report, out_dir / f"{stem}.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"{dataset.name} {split}: {report['queries']} queries, {report['documents']} documents, "
        f"{report['backend']} backend"
    )
    columns = ["ndcg@10", "mrr@10", "recall@100", "hit@1", "hit@10"]
    table.add_column("system")
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in report["systems"].items():
        table.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
    out.print(table)
    if report["rerank_model"] is None:
        why = report["rerank_skipped"] or "RERANK_MODEL is off"
        out.print(f"[yellow]no reranked system:[/] {why}", highlight=False)
    for failure in report["rerank_failures"][:5]:
        err.print(f"[yellow]not reranked[/] {failure}", highlight=False)
    if report["rerank_failures"]:
        err.print(f"{len(report['rerank_failures'])} queries kept their first-stage order", highlight=False)
    cache = "cached" if report["embedding_cache_hit"] else "computed"
    out.print(
        f"report: {out_dir / (stem + '.json')}, chart: {out_dir / (stem + '.png')} "
        f"({report['seconds']:.0f}s; corpus embeddings {cache})",
        highlight=False,
    )

"""`hybrid-rerank eval`: standard metrics on a BEIR folder for every system (lab extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, err, flag, load, out, require_lab, staged_progress


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
    from hybrid_rerank.connector.lab.evaluation import run_eval
    from hybrid_rerank.connector.lab.reports import write_report

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
    write_report(report, out_dir, f"eval-{dataset.name}-{split}", out, as_json)
    if as_json:
        return
    if report.rerank_model is None:
        why = report.rerank_skipped or "RERANK_MODEL is off"
        flag(out, "no reranked system:", "yellow", why)
    for failure in report.rerank_failures[:5]:
        flag(err, "not reranked", "yellow", failure)
    if report.rerank_failures:
        err.print(f"{len(report.rerank_failures)} queries kept their first-stage order", highlight=False)

"""`hybrid-rerank bench ...`: baseline and ours side by side in one run, with ratios (lab extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hybrid_rerank.connector.cli.common import app, err, load, out, require_lab
from hybrid_rerank.connector.progress import progress_bar

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: baseline and ours in one run, with ratios.")
app.add_typer(bench_app, name="bench")


@bench_app.command("celery")
def bench_celery(
    dataset: Annotated[
        Path | None, typer.Option(help="BEIR folder for queries and candidates (default: demo)")
    ] = None,
    queries: Annotated[
        int, typer.Option(min=1, help="queries measured (cycled if the dataset has fewer)")
    ] = 50,
    depth: Annotated[int, typer.Option(min=1, help="candidates reranked per query")] = 30,
    out_dir: Annotated[Path, typer.Option("--out", help="where the JSON report and the PNG go")] = Path(
        "bench-results"
    ),
    start_worker: Annotated[
        bool, typer.Option("--start-worker/--no-start-worker", help="start a local worker for the run")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Rerank latency for the same candidates, in-process vs through Celery workers (p50/p95, overhead)."""
    require_lab()
    from hybrid_rerank.connector.lab.bench import run_celery_bench

    settings = load()
    with progress_bar(err, "queries", queries, unit="queries") as update:
        report = run_celery_bench(
            settings,
            dataset=dataset,
            n_queries=queries,
            depth=depth,
            out_dir=out_dir,
            start_worker=start_worker,
            progress=update,
        )
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k != "samples_ms"}, indent=2))
        return
    table = Table(
        title=f"rerank {depth} candidates x {queries} queries: {report['model']} ({report['machine']})"
    )
    for column in ("path", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(column)
    for label, key in (("in-process", "in_process_ms"), ("Celery + Redis", "celery_ms")):
        row = report[key]
        table.add_row(label, f"{row['p50']:.1f}", f"{row['p95']:.1f}", f"{row['mean']:.1f}")
    overhead, ratio = report["overhead_ms"], report["ratio"]
    table.add_row(
        "overhead",
        f"{overhead['p50']:+.1f} (x{ratio['p50']:.2f})",
        f"{overhead['p95']:+.1f} (x{ratio['p95']:.2f})",
        f"{overhead['mean']:+.1f} (x{ratio['mean']:.2f})",
    )
    paired = report["paired_overhead_ms"]
    table.add_row(
        "per-query overhead",
        f"{paired['p50']:+.1f}",
        f"{paired['p95']:+.1f}",
        f"{paired['mean']:+.1f}",
    )
    out.print(table)
    out.print(f"report: {out_dir / 'bench-celery.json'}, chart: {out_dir / 'bench-celery.png'}")


@bench_app.command("rerank")
def bench_rerank(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (test split) for queries and candidates")],
    model: Annotated[
        str | None, typer.Option(help="cross-encoder with torch weights (default RERANK_MODEL)")
    ] = None,
    queries: Annotated[int, typer.Option(min=1, help="test queries measured")] = 20,
    full: Annotated[bool, typer.Option("--full", help="every test query")] = False,
    depth: Annotated[int, typer.Option(min=1, help="candidates scored per query")] = 100,
    quality_depth: Annotated[int, typer.Option(min=1, help="candidates reranked for nDCG@10")] = 30,
    max_length: Annotated[int, typer.Option(min=16, help="window of the baseline and the variants")] = 256,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Rerank pairs/s, per-query latency, peak RSS and nDCG@10: the sentence-transformers baseline against our
    scorer in each backend (torch fp32, bf16, ONNX, ONNX int8) and the default configuration, one run."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_rerank import (
        default_runner,
        default_variants,
        plot_rerank_bench,
        run_rerank_bench,
        torch_model_for_bench,
    )
    from hybrid_rerank.workers.runtime.runners import bf16_available

    settings = load()
    say = lambda m: err.print(m, highlight=False)  # noqa: E731
    chosen, trained = torch_model_for_bench(settings, model, say)
    variants = default_variants(
        max_length, default_runner(settings), settings.rerank_max_length, bf16=bf16_available()
    )
    report = run_rerank_bench(
        settings,
        dataset,
        chosen,
        n_queries=None if full else queries,
        depth=depth,
        quality_depth=quality_depth,
        variants=variants,
        log=say,
    )
    report["trained_model"] = trained
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-rerank.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_rerank_bench(report, out_dir / "bench-rerank.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"rerank: {report['pairs']} pairs ({report['queries']} queries x {depth}), {report['machine']}"
    )
    for column in (
        "variant",
        "pairs/s",
        "vs baseline",
        "p50 ms",
        "p95 ms",
        "peak RSS MiB",
        "nDCG@10",
        "interp.",
    ):
        table.add_column(column)
    for row in report["results"]:
        table.add_row(
            row["name"],
            f"{row['pairs_per_s']:.1f}",
            f"x{row['speedup']:.2f}",
            f"{row['latency_ms']['p50']:.0f}",
            f"{row['latency_ms']['p95']:.0f}",
            f"{row['peak_rss_mib']:.0f}",
            f"{row['ndcg@10']['rerank']:.4f} ({row['ndcg_delta']:+.4f})",
            f"{row['ndcg@10']['interpolated']:.4f}",
        )
    out.print(table)
    out.print(f"report: {out_dir / 'bench-rerank.json'}, chart: {out_dir / 'bench-rerank.png'}")


@bench_app.command("embed")
def bench_embed(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder whose corpus is embedded")],
    docs: Annotated[int, typer.Option(min=1, help="documents embedded")] = 400,
    full: Annotated[
        bool, typer.Option("--full", help="the whole corpus, and each variant's dense nDCG@10")
    ] = False,
    backends: Annotated[
        str | None, typer.Option(help="comma-separated subset of torch,torch-bf16,onnx,onnx-int8")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Index-time embedding docs/s: plain SentenceTransformer.encode against our embedder's backends."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_embed import plot_embed_bench, run_embed_bench

    settings = load()
    report = run_embed_bench(
        settings,
        dataset,
        n_docs=docs,
        full=full,
        backends=backends.split(",") if backends else None,
        log=lambda m: err.print(m, highlight=False),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-embed.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_embed_bench(report, out_dir / "bench-embed.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"embedding {report['documents']} documents ({report['model']}), {report['machine']}")
    for column in ("variant", "docs/s", "vs baseline", "peak RSS MiB", "cosine to baseline", "dense nDCG@10"):
        table.add_column(column)
    for row in report["results"]:
        cosine = row["cosine_to_baseline"]
        table.add_row(
            row["name"],
            f"{row['docs_per_s']:.1f}",
            f"x{row['speedup']:.2f}",
            f"{row['peak_rss_mib']:.0f}",
            f"mean {cosine['mean']:.4f}, min {cosine['min']:.4f}",
            f"{row['dense_ndcg@10']:.4f}" if "dense_ndcg@10" in row else "--full",
        )
    out.print(table)
    out.print(f"report: {out_dir / 'bench-embed.json'}, chart: {out_dir / 'bench-embed.png'}")


@bench_app.command("search")
def bench_search(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (test split)")],
    queries: Annotated[int, typer.Option(min=1, help="test queries measured")] = 100,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """First-stage per-stage p50/p95 on the embedded backend and (with OPENSEARCH_URL) on OpenSearch, hybrid
    recall against BM25-only on the same index."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_stack import plot_search_bench, run_search_bench

    report = run_search_bench(load(), dataset, n_queries=queries, log=lambda m: err.print(m, highlight=False))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-search.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_search_bench(report, out_dir / "bench-search.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"first stage per stage, ms ({report['machine']})")
    for column in ("backend", "stage", "p50", "p95"):
        table.add_column(column)
    for backend, stages in report["backends"].items():
        for stage in ("embed_query", "bm25_only", "bm25", "knn", "fusion", "hybrid_recall"):
            if stage in stages:
                table.add_row(backend, stage, f"{stages[stage]['p50']:.2f}", f"{stages[stage]['p95']:.2f}")
        ratio = stages["hybrid_vs_bm25_only"]
        table.add_row(backend, "hybrid / BM25-only", f"x{ratio['p50']:.2f}", f"x{ratio['p95']:.2f}")
    out.print(table)


@bench_app.command("index")
def bench_index(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder whose corpus is written")],
    docs: Annotated[int | None, typer.Option(min=1, help="documents written (default: all)")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds; the best of each side counts")] = 2,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """OpenSearch bulk docs/s, our backend against raw opensearch-py streaming_bulk (embedding excluded)."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_stack import plot_index_bench, run_index_bench

    report = run_index_bench(
        load(), dataset, n_docs=docs, rounds=rounds, log=lambda m: err.print(m, highlight=False)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-index.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_index_bench(report, out_dir / "bench-index.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    out.print(
        f"{report['documents']} documents: ours {report['ours_docs_per_s']:.0f} docs/s, raw streaming_bulk "
        f"{report['raw_streaming_bulk_docs_per_s']:.0f} docs/s (ours x{report['ratio']:.2f})",
        highlight=False,
    )


@bench_app.command("tradeoff")
def bench_tradeoff(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (test split)")],
    model: Annotated[str | None, typer.Option(help="cross-encoder (default RERANK_MODEL)")] = None,
    queries: Annotated[int, typer.Option(min=1)] = 50,
    full: Annotated[bool, typer.Option("--full", help="every test query")] = False,
    depths: Annotated[str, typer.Option(help="rerank depths, comma-separated")] = "10,30,50,100",
    max_lengths: Annotated[str, typer.Option(help="windows, comma-separated")] = "128,256",
    backend: Annotated[str | None, typer.Option(help="runner (default RERANK_BACKEND)")] = None,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """nDCG@10 against rerank milliseconds per query for each rerank depth and max_length, plotted."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_rerank import plot_tradeoff, run_tradeoff

    settings = load()
    report = run_tradeoff(
        settings,
        dataset,
        model or settings.rerank_model or "",
        n_queries=None if full else queries,
        depths=[int(d) for d in depths.split(",")],
        max_lengths=[int(m) for m in max_lengths.split(",")],
        backend=backend or settings.rerank_backend,
        log=lambda m: err.print(m, highlight=False),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench-tradeoff.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_tradeoff(report, out_dir / "bench-tradeoff.png")
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(
        title=f"rerank trade-off, {report['queries']} queries, {report['backend']}, {report['machine']}"
    )
    for column in ("max_length", "depth", "ms/query", "p95 ms", "nDCG@10 rerank", "nDCG@10 interpolated"):
        table.add_column(column)
    for p in report["points"]:
        table.add_row(
            str(p["max_length"]),
            str(p["depth"]),
            f"{p['ms_per_query']:.0f}",
            f"{p['p95_ms']:.0f}",
            f"{p['ndcg@10']['rerank']:.4f}",
            f"{p['ndcg@10']['interpolated']:.4f}",
        )
    out.print(table)
    out.print(
        f"first stage nDCG@10 {report['first_stage_ndcg@10']:.4f}; chart: {out_dir / 'bench-tradeoff.png'}"
    )

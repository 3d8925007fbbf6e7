"""The `hybrid-rerank` command line: tables for people, JSON (`--json`) for programs."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from connector.backends.base import Filters, FilterValue, parse_filter
from connector.documents import load_documents
from connector.errors import ConnectorError
from connector.progress import progress_bar
from connector.settings import Settings, load_settings

if TYPE_CHECKING:
    from connector.pipeline import SearchResult

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
out = Console(soft_wrap=True)  # long messages stay one line, so logs can be grepped
err = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    return load_settings()


@app.command()
def index(
    path: Annotated[Path, typer.Argument(help="a .jsonl or .csv file, or a BEIR folder (corpus.jsonl)")],
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, csv or beir")] = "auto",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="index the valid records and report each bad one")
    ] = False,
    recreate: Annotated[
        bool,
        typer.Option("--recreate", help="replace the index; the old one serves until the new is written"),
    ] = False,
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
) -> None:
    """Load, validate, embed and index documents."""
    from connector.factory import make_embedder, open_backend
    from connector.indexing import index_documents

    settings = _settings()
    if fmt not in {"auto", "jsonl", "csv", "beir"}:
        raise typer.BadParameter(f"--format must be auto, jsonl, csv or beir, not {fmt!r}")
    loaded = load_documents(
        path,
        fmt=fmt,  # type: ignore[arg-type]
        skip_invalid=skip_invalid,
        max_record_bytes=settings.max_record_bytes,
    )
    for problem in loaded.errors:
        err.print(f"[yellow]skipped[/] {problem}", highlight=False)
    if not loaded.documents:
        raise ConnectorError(f"no valid documents in {loaded.source}; nothing was indexed")
    backend = open_backend(settings, index_name)
    embedder = make_embedder(settings)
    err.print(f"embedding with {embedder.model_name} from {embedder.source.origin}", highlight=False)
    with progress_bar(err, "embedding", len(loaded.documents)) as update:
        report = index_documents(backend, embedder, loaded.documents, recreate=recreate, progress=update)
    for failure in report.bulk.failures:
        err.print(f"[red]failed[/] {failure.doc_id}: {failure.reason}", highlight=False)
    rate = report.documents / report.embed_seconds if report.embed_seconds > 0 else float("inf")
    out.print(
        f"indexed {report.bulk.written} of {len(loaded.documents)} documents into {backend.name} index "
        f"{index_name or settings.index_name!r} (embedding {report.embed_seconds:.1f}s, {rate:.1f} docs/s; "
        f"write {report.write_seconds:.1f}s); {len(loaded.errors)} skipped, "
        f"{len(report.bulk.failures)} failed",
        highlight=False,
    )
    if report.bulk.failures:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="the query text")],
    k: Annotated[int | None, typer.Option("-k", "--top-k", help="hits to return (default TOP_K)")] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="field=value, field=a,b (any of) or field=lo..hi; repeatable"),
    ] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="first-stage (fused) order only")] = False,
    page: Annotated[
        int, typer.Option("--page", min=1, help="page of k hits over the same recall window")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
) -> None:
    """Hybrid recall, fusion and cross-encoder reranking for one query."""
    from connector.factory import make_pipeline, open_backend

    settings = _settings()
    parsed: dict[str, FilterValue] = {}
    for expression in filters or []:
        try:
            name, value = parse_filter(expression)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--filter") from exc
        parsed[name] = value
    pipeline = make_pipeline(settings, backend=open_backend(settings, index_name))
    size = k or settings.top_k
    result = pipeline.search(
        query, k=size, filters=parsed or None, rerank=not no_rerank, offset=(page - 1) * size
    )
    if as_json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        return
    _print_result(result, parsed)


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
    from connector.bench import run_celery_bench

    settings = _settings()
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
    from connector.bench_rerank import (
        default_runner,
        default_variants,
        plot_rerank_bench,
        run_rerank_bench,
        torch_model_for_bench,
    )
    from workers.inference import bf16_available

    settings = _settings()
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
    from connector.bench_embed import plot_embed_bench, run_embed_bench

    settings = _settings()
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
    from connector.bench_stack import plot_search_bench, run_search_bench

    report = run_search_bench(
        _settings(), dataset, n_queries=queries, log=lambda m: err.print(m, highlight=False)
    )
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
    from connector.bench_stack import plot_index_bench, run_index_bench

    report = run_index_bench(
        _settings(), dataset, n_docs=docs, rounds=rounds, log=lambda m: err.print(m, highlight=False)
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
    from connector.bench_rerank import plot_tradeoff, run_tradeoff

    settings = _settings()
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


def _print_result(result: SearchResult, filters: Filters) -> None:
    table = Table(title=f"{result.query!r}" + (f"  filters {dict(filters)}" if filters else ""))
    for column in ("#", "id", "title / text", "bm25", "vector", "fused", "rerank"):
        table.add_column(column, overflow="fold" if column == "title / text" else "ellipsis")
    for hit in result.hits:
        label = hit.document.title or hit.document.text
        table.add_row(
            str(hit.rank),
            hit.id,
            label[:70] + ("…" if len(label) > 70 else ""),
            _score(hit.bm25_score, hit.bm25_rank),
            _score(hit.vector_score, hit.vector_rank),
            _score(hit.fused_score, hit.fused_rank),
            "-" if hit.rerank_score is None else f"{hit.rerank_score:.3f}",
        )
    out.print(table)
    timings = "  ".join(f"{name} {ms:.1f} ms" for name, ms in result.timings_ms.items())
    out.print(f"{len(result.hits)} hits from {result.candidates} candidates; {timings}", highlight=False)
    if not result.reranked:
        out.print(f"[yellow]not reranked:[/] {result.rerank_note}", highlight=False)


def _score(score: float | None, rank: int | None) -> str:
    return "-" if score is None else f"{score:.3f} (#{rank})"


@app.command("batch-search")
def batch_search(
    queries_path: Annotated[
        Path, typer.Argument(help="queries: JSONL with _id/id and text, or one per line")
    ],
    out_path: Annotated[Path, typer.Option("--out", help="results, one JSON object per query")],
    k: Annotated[int | None, typer.Option("-k", "--top-k", help="hits per query (default TOP_K)")] = None,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="first stage only")] = False,
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
) -> None:
    """Search many queries for an offline job; with REDIS_URL the workers rerank them as one batch."""
    from connector.factory import make_pipeline, open_backend

    settings = _settings()
    queries = read_queries(queries_path)
    pipeline = make_pipeline(settings, backend=open_backend(settings, index_name))
    with progress_bar(err, "reranking", len(queries), unit="queries") as update:
        results = pipeline.search_many(list(queries.values()), k=k, rerank=not no_rerank, progress=update)
    with out_path.open("w", encoding="utf-8") as handle:
        for query_id, result in zip(queries, results, strict=True):
            handle.write(json.dumps({"query_id": query_id, **result.to_json()}, ensure_ascii=False) + "\n")
    reranked = sum(r.reranked for r in results)
    out.print(f"{len(results)} queries searched, {reranked} reranked; results in {out_path}", highlight=False)
    for query_id, result in zip(queries, results, strict=True):
        if not result.reranked and not no_rerank:
            err.print(f"[yellow]not reranked[/] {query_id}: {result.rerank_note}", highlight=False)


def read_queries(path: Path) -> dict[str, str]:
    """Query id -> text from a JSONL file (BEIR queries.jsonl; metadata is never read) or a text file."""
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if path.suffix.lower() in {".jsonl", ".json", ".ndjson"}:
                try:
                    record = json.loads(line)
                    query_id, text = str(record.get("_id", record.get("id", line_no))), record["text"]
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    raise ConnectorError(
                        f"{path}, line {line_no}: not a query object with 'text' ({exc})"
                    ) from exc
            else:
                query_id, text = str(line_no), line.strip()
            if not isinstance(text, str) or not text.strip():
                raise ConnectorError(f"{path}, line {line_no}: empty query text")
            queries[query_id] = text
    if not queries:
        raise ConnectorError(f"no queries in {path}")
    return queries


@contextlib.contextmanager
def staged_progress() -> Iterator[Callable[[str, int, int], None]]:
    """`progress(stage, done, total)`: one progress bar per named stage of a long command."""
    with contextlib.ExitStack() as stack:
        bars: dict[str, Callable[[int, int], None]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                unit = "docs" if stage == "embedding corpus" else "queries"
                bars[stage] = stack.enter_context(progress_bar(err, stage, total, unit=unit))
            bars[stage](done, total)

        yield progress


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
    from connector.evaluation import plot_report, run_eval

    settings = _settings()
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


@app.command()
def demo(
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="skip the cross-encoder")] = False,
) -> None:
    """Index a small built-in corpus and show first-stage vs reranked results per query (offline)."""
    from connector.demo import run_demo

    run_demo(_settings(), out, rerank=not no_rerank)


@app.command()
def info() -> None:
    """The configuration in effect (secrets hidden) and the index, if it exists."""
    from connector.factory import open_backend

    settings = _settings()
    for name, value in settings.describe().items():
        out.print(f"{name:20} {value}", highlight=False)
    index_info = open_backend(settings).index_info()
    if index_info is None:
        out.print(f"{'index status':20} missing (run `hybrid-rerank index PATH`)", highlight=False)
    else:
        out.print(
            f"{'index status':20} {index_info.count} documents, {index_info.embedding_model} "
            f"({index_info.dimension} dims)",
            highlight=False,
        )


def main() -> None:
    try:
        app()
    except ConnectorError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


@app.command("train-reranker")
def train_reranker_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder with a training qrels split")],
    output: Annotated[Path, typer.Option("--out", help="the model folder to write")] = Path(
        "models/reranker"
    ),
    base_model: Annotated[str, typer.Option(help="local folder or packaged model name")] = "all-MiniLM-L6-v2",
    split: Annotated[str, typer.Option(help="qrels split to train on (never test)")] = "train",
    dev_queries: Annotated[int, typer.Option(min=0, help="training queries held out as dev")] = 100,
    max_train_queries: Annotated[int | None, typer.Option(min=1, help="use only N training queries")] = None,
    title_queries: Annotated[int, typer.Option(help="title pseudo-queries (-1: all titled docs)")] = -1,
    sentence_queries: Annotated[int, typer.Option(min=0, help="sentence pseudo-queries")] = 2000,
    negatives: Annotated[int, typer.Option(min=1, help="hard negatives per example")] = 4,
    real_repeats: Annotated[int, typer.Option(min=1, help="times each qrels pair is seen per epoch")] = 2,
    epochs: Annotated[float, typer.Option(min=0.0)] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 3e-5,
    max_length: Annotated[int, typer.Option(min=16)] = 128,
    eval_steps: Annotated[int, typer.Option(min=1, help="score the dev split every N steps")] = 200,
    seed: Annotated[int, typer.Option()] = 13,
) -> None:
    """Fine-tune a cross-encoder: qrels positives, hard negatives from our hybrid recall, pseudo-queries."""
    from connector.training import train_reranker
    from connector.training_data import TrainingConfig

    if split == "test":
        raise typer.BadParameter("training on the test split would make every test figure meaningless")
    config = TrainingConfig(
        base_model=base_model,
        split=split,
        dev_queries=dev_queries,
        max_train_queries=max_train_queries,
        title_queries=title_queries,
        sentence_queries=sentence_queries,
        negatives=negatives,
        real_repeats=real_repeats,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        eval_steps=eval_steps,
        seed=seed,
    )
    settings = _settings()
    with staged_progress() as progress:
        report = train_reranker(
            settings, dataset, output, config, progress=progress, log=lambda m: err.print(m, highlight=False)
        )
    out.print(
        f"model written to {output}: dev nDCG@10 first stage {report['dev']['first_stage_ndcg@10']:.4f}, "
        f"rerank {report['dev']['rerank_ndcg@10']:.4f}, "
        f"interpolated {report['dev']['interpolated_ndcg@10']:.4f} "
        f"(rerank weight {report['interpolation_weight']}); trained in {report['train_seconds']:.0f} s",
        highlight=False,
    )


@app.command("tune-reranker")
def tune_reranker_command(
    model_dir: Annotated[Path, typer.Argument(help="a model folder train-reranker wrote (or its export)")],
    dataset: Annotated[Path, typer.Argument(help="the BEIR folder it was trained on")],
    split: Annotated[str, typer.Option(help="the training split")] = "train",
    dev_queries: Annotated[int, typer.Option(min=1, help="as in train-reranker")] = 100,
    seed: Annotated[int, typer.Option()] = 13,
) -> None:
    """Tune the rerank/first-stage interpolation weight again for the current RERANK_* settings, on the
    training split's held-out dev queries (never test), and store it in the model folder."""
    from connector.training import retune_interpolation

    if split == "test":
        raise typer.BadParameter("tuning on the test split would make every test figure meaningless")
    with staged_progress() as progress:
        result = retune_interpolation(
            _settings(),
            dataset,
            model_dir,
            split=split,
            dev_queries=dev_queries,
            seed=seed,
            progress=progress,
        )
    curve = result["curve"]
    best = result["interpolation_weight"]
    out.print(
        f"rerank weight {best} (dev nDCG@10 {curve[best]:.4f}; first stage {curve[0.0]:.4f}, "
        f"rerank only {curve[1.0]:.4f}) written to {model_dir / 'hybrid_rerank.json'}",
        highlight=False,
    )
    unseen = result["unseen_curve"]
    out.print(
        f"the {result['unseen']} dev queries whose relevant documents no training query cites: first stage "
        f"{unseen[0.0]:.4f}, at weight {best} {unseen[best]:.4f}, rerank only {unseen[1.0]:.4f}",
        highlight=False,
    )


@app.command("export-reranker")
def export_reranker_command(
    model_dir: Annotated[Path, typer.Argument(help="a cross-encoder folder with torch weights")],
    output: Annotated[Path, typer.Option("--out", help="the ONNX folder to write")],
    int8: Annotated[bool, typer.Option("--int8/--fp32", help="dynamic int8 quantization")] = True,
    layers: Annotated[
        int | None, typer.Option(min=1, help="keep only the first N transformer layers (measure before use)")
    ] = None,
) -> None:
    """Export a cross-encoder to a self-contained ONNX folder (int8 by default) that runs without torch
    weights; RERANK_MODEL can point at it."""
    from workers.inference import export_folder

    onnx_file = export_folder(
        model_dir, output, int8=int8, layers=layers, trust_remote_code=_settings().trust_remote_code
    )
    card = model_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        note = (
            f"\n## This folder\n\n`{onnx_file.name}`: {'dynamic int8' if int8 else 'fp32'} ONNX export of "
            f"`{model_dir.name}` made by "
            f"`hybrid-rerank export-reranker {model_dir.name} --out {output.name}`, "
            "run with onnxruntime; no torch weights.\n"
        )
        (output / "README.md").write_text(text + note, encoding="utf-8")
    size = sum(f.stat().st_size for f in output.iterdir() if f.is_file())
    out.print(f"wrote {output}: {onnx_file.name}, {size / 1e6:.1f} MB in all", highlight=False)

"""The `hybrid-rerank` command line: tables for people, JSON (`--json`) for programs."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
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
    with contextlib.ExitStack() as stack:
        bars: dict[str, Callable[[int, int], None]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                unit = "docs" if stage == "embedding corpus" else "queries"
                bars[stage] = stack.enter_context(progress_bar(err, stage, total, unit=unit))
            bars[stage](done, total)

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

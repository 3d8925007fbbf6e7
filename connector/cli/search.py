"""`hybrid-rerank search`, `batch-search` and `info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from hybrid_rerank.connector.backends.base import Filters, FilterValue, parse_filter
from hybrid_rerank.connector.cli.common import app, err, flag, load, out
from hybrid_rerank.connector.errors import ConnectorError
from hybrid_rerank.connector.progress import progress_bar

if TYPE_CHECKING:
    from hybrid_rerank.connector.pipeline import SearchResult


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
    from hybrid_rerank.connector.factory import make_pipeline, open_backend

    settings = load()
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


def _print_result(result: SearchResult, filters: Filters) -> None:
    title = f"{result.query!r}" + (f"  filters {dict(filters)}" if filters else "")
    table = Table(title=Text(title))  # user text, never markup
    # Only the text wraps on a narrow console; ids and scores stay whole (an id cut to `doc-1…` is useless).
    widest_id = max((cell_len(hit.id) for hit in result.hits), default=2)
    for column in ("#", "id", "title / text", "bm25", "vector", "fused", "rerank"):
        if column == "title / text":
            table.add_column(column, overflow="fold", min_width=20)
        else:
            table.add_column(column, no_wrap=True, min_width=widest_id if column == "id" else None)
    for hit in result.hits:
        label = hit.document.title or hit.document.text
        table.add_row(
            str(hit.rank),
            Text(hit.id),
            Text(label[:70] + ("…" if len(label) > 70 else "")),
            _score(hit.bm25_score, hit.bm25_rank),
            _score(hit.vector_score, hit.vector_rank),
            _score(hit.fused_score, hit.fused_rank),
            "-" if hit.rerank_score is None else f"{hit.rerank_score:.3f}",
        )
    out.print(table)
    timings = "  ".join(f"{name} {ms:.1f} ms" for name, ms in result.timings_ms.items())
    out.print(f"{len(result.hits)} hits from {result.candidates} candidates; {timings}", highlight=False)
    if not result.reranked:
        flag(out, "not reranked:", "yellow", result.rerank_note)


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
    from hybrid_rerank.connector.factory import make_pipeline, open_backend

    settings = load()
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
            flag(err, "not reranked", "yellow", f"{query_id}: {result.rerank_note}")


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


@app.command()
def info() -> None:
    """The configuration in effect (secrets hidden) and the index, if it exists."""
    from hybrid_rerank.connector.factory import open_backend

    settings = load()
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

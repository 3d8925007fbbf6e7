"""`hybrid-rerank index`: load, validate, embed and write documents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, err, flag, load, out
from hybrid_rerank.connector.documents import load_documents
from hybrid_rerank.connector.errors import ConnectorError
from hybrid_rerank.connector.progress import progress_bar


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
    from hybrid_rerank.connector.factory import make_embedder, open_backend
    from hybrid_rerank.connector.indexing import index_documents

    settings = load()
    if fmt not in {"auto", "jsonl", "csv", "beir"}:
        raise typer.BadParameter(f"--format must be auto, jsonl, csv or beir, not {fmt!r}")
    loaded = load_documents(
        path,
        fmt=fmt,  # type: ignore[arg-type]
        skip_invalid=skip_invalid,
        max_record_bytes=settings.max_record_bytes,
    )
    for problem in loaded.errors:
        flag(err, "skipped", "yellow", problem)
    if not loaded.documents:
        raise ConnectorError(f"no valid documents in {loaded.source}; nothing was indexed")
    backend = open_backend(settings, index_name)
    embedder = make_embedder(settings)
    err.print(f"embedding with {embedder.model_name} from {embedder.source.origin}", highlight=False)
    with progress_bar(err, "embedding", len(loaded.documents)) as update:
        report = index_documents(backend, embedder, loaded.documents, recreate=recreate, progress=update)
    for failure in report.bulk.failures:
        flag(err, "failed", "red", f"{failure.doc_id}: {failure.reason}")
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

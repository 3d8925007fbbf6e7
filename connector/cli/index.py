"""`hybrid-rerank index`: stream, validate, embed and write documents in batches; `delete` lives beside it."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from hybrid_rerank.connector.cli.common import app, err, flag, load, out
from hybrid_rerank.connector.documents import INPUT_FORMATS
from hybrid_rerank.connector.errors import ConnectorError, RecordError
from hybrid_rerank.connector.indexing import DEFAULT_BATCH_SIZE
from hybrid_rerank.connector.progress import progress_bar

if TYPE_CHECKING:
    from hybrid_rerank.connector.chunking import PassageSplitter
    from hybrid_rerank.connector.remote_embedder import RemoteEmbedder
    from hybrid_rerank.connector.settings import Settings


@app.command()
def index(
    path: Annotated[Path, typer.Argument(help="a .jsonl, .json (one array) or .csv file, or a BEIR folder")],
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, json, csv or beir")] = "auto",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="index the valid records and report each bad one")
    ] = False,
    recreate: Annotated[
        bool,
        typer.Option("--recreate", help="replace the index; the old one serves until the new is written"),
    ] = False,
    sync: Annotated[
        bool, typer.Option("--sync", help="also delete indexed documents that are no longer in the source")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="documents embedded and written per batch")
    ] = DEFAULT_BATCH_SIZE,
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
    workers: Annotated[
        bool,
        typer.Option(
            "--workers",
            help="embed on the Celery embedding workers serving EMBEDDING_MODEL (needs REDIS_URL; workers "
            "started with EMBED_MODEL set to it); this process never loads the model",
        ),
    ] = False,
    passages: Annotated[
        bool,
        typer.Option(
            "--passages",
            help="cut documents longer than --passage-tokens bi-encoder tokens into overlapping passages, "
            "one vector each; search scores a document by its best passage and says which matched",
        ),
    ] = False,
    passage_tokens: Annotated[
        int, typer.Option("--passage-tokens", min=1, help="passage size, in the bi-encoder's tokens")
    ] = 200,
    passage_overlap: Annotated[
        int, typer.Option("--passage-overlap", min=0, help="tokens consecutive passages share")
    ] = 50,
) -> None:
    """Index documents in batches. A rerun skips documents the index holds unchanged (by content hash) and
    re-embeds changed ones, so an interrupted run resumes where it stopped."""
    from hybrid_rerank.connector.embedder import Embedder
    from hybrid_rerank.connector.factory import make_embedder, open_backend
    from hybrid_rerank.connector.indexing import index_documents, sync_deletions
    from hybrid_rerank.connector.ingest import DocumentStream
    from hybrid_rerank.connector.remote_embedder import describe

    settings = load()
    if fmt not in INPUT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(INPUT_FORMATS)}, not {fmt!r}")
    stream = DocumentStream(path, fmt=fmt, max_record_bytes=settings.max_record_bytes)
    # Strict: a first pass refuses a bad source before anything is written (and counts it).
    total = stream.validate() if not skip_invalid else stream.estimated_total()
    documents = iter(stream)
    first = next(documents, None)
    if first is None:
        _print_problems(stream.errors, stream.warnings)
        raise ConnectorError(f"no valid documents in {stream.source}; nothing was indexed")

    embedder = remote_embedder(settings) if workers else make_embedder(settings)
    # The workers are found (or refused) before the backend is opened: a missing fleet writes nothing.
    err.print(f"embedding with {embedder.model_name} from {describe(embedder)}", highlight=False)
    backend = open_backend(settings, index_name)
    splitter = passage_splitter(settings, passage_tokens, passage_overlap) if passages else None
    with progress_bar(err, "indexing", total) as update:
        report = index_documents(
            backend,
            cast(Embedder, embedder),  # the same interface (a Protocol in indexing.py would say so)
            chain([first], documents),
            recreate=recreate,
            incremental=True,
            batch_size=batch_size,
            total=total,
            progress=update,
            passages=splitter,
        )
    deleted = 0
    if sync and recreate:
        err.print("--sync does nothing with --recreate: the new index holds the source only", highlight=False)
    elif sync:
        deleted = sync_deletions(backend, _Keep(stream.ids, stream.bad_ids), batch_size)
    _print_problems(stream.errors, stream.warnings)
    if resent := getattr(embedder, "resent", 0):  # --workers: tasks sent again after a failure or timeout
        err.print(f"embedding tasks sent again: {resent}", highlight=False)
    for failure in report.bulk.failures:
        flag(err, "failed", "red", f"{failure.doc_id}: {failure.reason}")
    rate = report.embedded / report.embed_seconds if report.embed_seconds > 0 else 0.0
    out.print(
        f"indexed {report.bulk.written} of {report.documents} documents into {backend.name} index "
        f"{index_name or settings.index_name!r} (embedded {report.embedded}, unchanged {report.unchanged}, "
        f"deleted {deleted}; embedding {report.embed_seconds:.1f}s, {rate:.1f} docs/s; write "
        f"{report.write_seconds:.1f}s); {len(stream.errors)} skipped, {len(stream.warnings)} type "
        f"warnings, {len(report.bulk.failures)} failed",
        highlight=False,
    )
    if splitter is not None:
        out.print(f"{report.passages} passage vectors ({splitter.label})", highlight=False)
    if report.bulk.failures:
        raise typer.Exit(1)


def passage_splitter(settings: Settings, tokens: int, overlap: int) -> PassageSplitter:
    """`--passages`: counted in the tokenizer of EMBEDDING_MODEL's folder (also with --workers)."""
    from hybrid_rerank.connector.chunking import PassageOptions, model_splitter
    from hybrid_rerank.workers.runtime.models import resolve_model

    location = resolve_model(settings.embedding_model).location
    return model_splitter(
        location, PassageOptions(tokens, overlap), trust_remote_code=settings.trust_remote_code
    )


def remote_embedder(settings: Settings) -> RemoteEmbedder:
    """`--workers`: the Celery embedding workers of EMBEDDING_MODEL, with the EMBED_* dispatch settings."""
    from hybrid_rerank.connector.remote_embedder import RemoteEmbedder
    from hybrid_rerank.workers.celery_app import make_app

    if settings.redis_url is None:
        raise ConnectorError(
            "--workers needs REDIS_URL, the Celery broker the embedding workers listen on; or index "
            "without --workers to embed in this process"
        )
    # The sending side's app: the queue is named per task, EMBED_MODEL only lets make_app build it.
    app = make_app(settings.model_copy(update={"embed_model": settings.embedding_model}), fail_fast=True)
    return RemoteEmbedder(
        app,
        settings.embedding_model,
        passage_prompt=settings.embedding_passage_prompt,
        task_texts=settings.embed_task_texts,
        in_flight=settings.embed_in_flight,
        task_timeout_s=settings.embed_task_timeout_s,
        retries=settings.embed_retries,
    )


class _Keep:
    """The ids `--sync` keeps: the source's valid ids and those of its skipped records (a bad new version
    of a document leaves the indexed one in place rather than deleting it)."""

    def __init__(self, valid: dict[str, int], skipped: set[str]) -> None:
        self.valid, self.skipped = valid, skipped

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.valid or doc_id in self.skipped


def _print_problems(errors: Sequence[RecordError], warnings: Sequence[RecordError]) -> None:
    for problem in errors:
        flag(err, "skipped", "yellow", problem)
    for warning in warnings:
        flag(err, "warning", "yellow", warning)

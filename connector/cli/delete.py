"""`hybrid-rerank delete`: remove documents by id, named on the command line or listed in a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, load, out
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.indexing import DEFAULT_BATCH_SIZE


def ids_in_file(path: Path) -> Iterator[str]:
    """One id per line, surrounding spaces and blank lines ignored; read lazily."""
    if not path.is_file():
        raise ConfigurationError(f"ids file not found: {path}")
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if doc_id := line.strip():
                yield doc_id


@app.command()
def delete(
    ids: Annotated[list[str] | None, typer.Argument(help="document ids to delete")] = None,
    ids_file: Annotated[
        Path | None, typer.Option("--ids-file", help="a file with one document id per line")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="ids per delete request")] = (
        DEFAULT_BATCH_SIZE
    ),
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
) -> None:
    """Delete documents by id from the index."""
    from itertools import chain

    from hybrid_rerank.connector.factory import open_backend
    from hybrid_rerank.connector.indexing import batched

    if not ids and ids_file is None:
        raise typer.BadParameter("name document ids, or pass --ids-file FILE")
    settings = load()
    backend = open_backend(settings, index_name)
    if backend.index_info() is None:
        raise ConfigurationError(
            f"index {index_name or settings.index_name!r} does not exist in the {backend.name} backend"
        )
    asked = deleted = 0
    for batch in batched(chain(ids or [], ids_in_file(ids_file) if ids_file else []), batch_size):
        asked += len(batch)
        deleted += backend.delete(batch)
    backend.commit()
    out.print(
        f"deleted {deleted} of {asked} ids from {backend.name} index {index_name or settings.index_name!r}"
        f" ({asked - deleted} not found)",
        highlight=False,
    )

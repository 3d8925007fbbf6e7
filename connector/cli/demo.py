"""`hybrid-rerank demo`: the built-in corpus, first stage beside reranked (lab extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, load, out, require_lab


@app.command()
def demo(
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="skip the cross-encoder")] = False,
) -> None:
    """Index a small built-in corpus and show first-stage vs reranked results per query (offline)."""
    require_lab()
    from hybrid_rerank.connector.lab.demo import run_demo

    run_demo(load(), out, rerank=not no_rerank)

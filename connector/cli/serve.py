"""`hybrid-rerank serve`: the HTTP service on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, load, out


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8000,
    index_name: Annotated[str | None, typer.Option("--index", help="overrides INDEX_NAME")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """Serve search, rerank (TEI, Cohere and Jina shapes), jobs, probes, metrics and the search page."""
    import uvicorn

    from hybrid_rerank.connector.factory import make_service
    from hybrid_rerank.connector.service.app import create_app

    settings = load()
    application = create_app(make_service(settings, index_name))
    for name, value in settings.describe().items():
        out.print(f"{name:20} {value}", highlight=False)
    out.print(f"serving on http://{host}:{port} (API docs at /docs)", highlight=False)
    # One process: scale out with more replicas behind a load balancer (jobs live in Redis then).
    uvicorn.run(application, host=host, port=port, log_level=log_level, access_log=False)

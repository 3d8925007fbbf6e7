"""`hybrid-rerank opensearch install-rerank`: make OpenSearch call our service to rerank its hits
(docs/opensearch-rerank.md)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hybrid_rerank.connector.cli.common import app, load, out
from hybrid_rerank.connector.errors import ConfigurationError

opensearch_app = typer.Typer(
    no_args_is_help=True, help="Set up an OpenSearch cluster (OPENSEARCH_URL) to work with this service."
)
app.add_typer(opensearch_app, name="opensearch")


@opensearch_app.command("install-rerank")
def install_rerank(
    service_url: Annotated[
        str,
        typer.Option(
            "--service-url",
            help="our service's base URL as the OpenSearch nodes reach it (…/v1/rerank is called)",
        ),
    ],
    pipeline: Annotated[str, typer.Option("--pipeline", help="search pipeline name")] = "hybrid-rerank",
    fusion: Annotated[
        str, typer.Option("--fusion", help="minmax or rrf (the pipeline's first stage)")
    ] = "minmax",
    bm25_weight: Annotated[
        float | None,
        typer.Option("--bm25-weight", min=0.0, max=1.0, help="minmax weight (default BM25_WEIGHT)"),
    ] = None,
    document_fields: Annotated[
        list[str] | None,
        typer.Option("--document-field", help="field sent to the reranker, repeatable (default title, text)"),
    ] = None,
    read_timeout: Annotated[
        int, typer.Option("--read-timeout", min=1, help="seconds OpenSearch waits for our answer")
    ] = 10,
    post_process: Annotated[
        str,
        typer.Option(
            "--post-process",
            help="painless (reads any score formatting) or builtin (connector.post_process.cohere.rerank)",
        ),
    ] = "painless",
    cluster_settings: Annotated[
        bool,
        typer.Option(
            "--cluster-settings/--no-cluster-settings",
            help="set the ml-commons cluster settings the connector needs (else only check them)",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create (or update) the ml-commons connector to our /v1/rerank, its remote model and a search pipeline
    (hybrid normalization, then the rerank processor). Re-running reuses or updates them by name. API_KEY,
    when set, goes to the connector as a credential (never printed)."""
    from hybrid_rerank.connector.backends.opensearch_ml import InstallOptions, RerankInstaller
    from hybrid_rerank.connector.factory import opensearch_client
    from hybrid_rerank.mappings import rerank_pipeline as bodies

    settings = load()
    if settings.opensearch_url is None:
        raise ConfigurationError("OPENSEARCH_URL is not set: point it at the cluster to install into")
    if fusion not in ("minmax", "rrf"):
        raise typer.BadParameter(f"--fusion must be minmax or rrf, not {fusion!r}")
    if post_process not in ("painless", "builtin"):
        raise typer.BadParameter(f"--post-process must be painless or builtin, not {post_process!r}")
    try:
        bodies.service_base(service_url)
    except bodies.InvalidServiceUrl as exc:
        raise typer.BadParameter(str(exc)) from exc
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    options = InstallOptions(
        service_url=service_url,
        pipeline=pipeline,
        api_key=api_key or None,
        fusion=fusion,  # type: ignore[arg-type]
        bm25_weight=settings.bm25_weight if bm25_weight is None else bm25_weight,
        rrf_k=settings.rrf_k,
        document_fields=tuple(document_fields or bodies.DEFAULT_DOCUMENT_FIELDS),
        read_timeout_s=read_timeout,
        post_process=post_process,  # type: ignore[arg-type]
        change_cluster_settings=cluster_settings,
    )
    say = (lambda _: None) if as_json else (lambda line: out.print(line, highlight=False, markup=False))
    installer = RerankInstaller(opensearch_client(settings), url=settings.opensearch_url, say=say)
    report = installer.install(options)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model_id": report.model_id,
                    "pipeline": report.pipeline,
                    "connector_id": report.connector_id,
                    "model_group_id": report.model_group_id,
                    "cluster_settings_changed": report.settings_changed,
                    "steps": report.steps,
                }
            )
        )
        return
    out.print(f"model id: {report.model_id}", highlight=False)
    out.print(f"pipeline: {report.pipeline}", highlight=False)
    example = {"query": {"hybrid": {"queries": ["..."]}}, "ext": bodies.rerank_ext("your query")}
    out.print(
        f"search with: POST INDEX/_search?search_pipeline={report.pipeline} {json.dumps(example)}",
        highlight=False,
        markup=False,
    )

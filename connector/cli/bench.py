"""`hybrid-rerank bench ...`: baseline and ours side by side in one run, with ratios (lab extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    from hybrid_rerank.connector.lab.bench_celery import run_celery_bench
    from hybrid_rerank.connector.lab.reports import write_report

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
    write_report(report, out_dir, "bench-celery", out, as_json)


@bench_app.command("batching")
def bench_batching(
    dataset: Annotated[Path | None, typer.Option(help="BEIR folder (default: demo)")] = None,
    depth: Annotated[int, typer.Option(min=1, help="candidates reranked per search")] = 30,
    window_ms: Annotated[float, typer.Option(min=0.1, help="the batching worker's window")] = 5.0,
    seconds: Annotated[float, typer.Option(min=1, help="seconds per concurrency level")] = 15.0,
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds")] = 2,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Cross-request batching (RERANK_BATCH_WINDOW_MS): a default worker against a batching one at 1, 4 and 8
    searches at once, throughput and p95 with ratios."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_batching import run_batching_bench
    from hybrid_rerank.connector.lab.reports import write_report

    report = run_batching_bench(
        load(),
        dataset=dataset,
        depth=depth,
        out_dir=out_dir,
        window_ms=window_ms,
        seconds=seconds,
        rounds=rounds,
    )
    write_report(report, out_dir, "bench-celery-batching", out, as_json)


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
    rounds: Annotated[
        int, typer.Option(min=1, help="alternating rounds, a fresh process each; a variant's fastest counts")
    ] = 1,
    skip: Annotated[
        str, typer.Option(help="our backends to leave out, comma-separated (e.g. torch-bf16,torch)")
    ] = "",
) -> None:
    """Rerank pairs/s, per-query latency, peak RSS and nDCG@10: the sentence-transformers baseline against our
    scorer in each backend (torch fp32, bf16, ONNX, ONNX int8) and the default configuration, one run."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_rerank import (
        default_runner,
        default_variants,
        run_rerank_bench,
        torch_model_for_bench,
    )
    from hybrid_rerank.connector.lab.reports import write_report
    from hybrid_rerank.workers.runtime.runners import bf16_available

    settings = load()
    say = lambda m: err.print(m, highlight=False)  # noqa: E731
    chosen, trained = torch_model_for_bench(settings, model, say)
    variants = default_variants(
        max_length, default_runner(settings), settings.rerank_max_length, bf16=bf16_available()
    )
    skipped = {name.strip() for name in skip.split(",") if name.strip()}
    variants = [
        v for i, v in enumerate(variants) if i == 0 or v.backend not in skipped or "default" in v.name
    ]
    report = run_rerank_bench(
        settings,
        dataset,
        chosen,
        trained_model=trained,
        n_queries=None if full else queries,
        depth=depth,
        quality_depth=quality_depth,
        variants=variants,
        rounds=rounds,
        log=say,
    )
    write_report(report, out_dir, "bench-rerank", out, as_json)


@bench_app.command("peer")
def bench_peer(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (test split) for queries and candidates")],
    model: Annotated[
        str | None, typer.Option(help="cross-encoder with torch weights (default RERANK_MODEL)")
    ] = None,
    queries: Annotated[int, typer.Option(min=1, help="test queries measured")] = 20,
    depth: Annotated[int, typer.Option(min=1, help="candidates scored per query")] = 100,
    max_lengths: Annotated[str, typer.Option(help="windows, comma-separated")] = "128,256",
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds; medians are reported")] = 3,
    ours: Annotated[
        str, typer.Option(help="our runners, comma-separated of onnx-int8,onnx,torch,torch-bf16")
    ] = "onnx-int8",
    peer_engines: Annotated[
        str, typer.Option(help="Infinity's engines, comma-separated of torch,optimum,http")
    ] = "torch,optimum",
    peer_batch_size: Annotated[int, typer.Option(min=1, help="Infinity's batch size")] = 32,
    port: Annotated[int, typer.Option(help="Infinity's HTTP server port on 127.0.0.1")] = 8721,
    peer_dir: Annotated[Path, typer.Option(help="Infinity's environment and model folders")] = Path(
        ".work/peer-infinity"
    ),
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Ours beside Infinity (infinity-emb, installed into its own environment by scripts/peer-infinity on
    first use): the same cross-encoder folder, pairs and window, fresh processes in alternating rounds,
    pairs/s and the ratio to the sentence-transformers baseline."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_peer import PeerPlan, parse_engines, run_peer_bench
    from hybrid_rerank.connector.lab.bench_rerank import torch_model_for_bench
    from hybrid_rerank.connector.lab.reports import Report as BenchReport
    from hybrid_rerank.connector.lab.reports import write_report

    try:
        engines = parse_engines(ours, peer_engines)
        lengths = [int(m) for m in max_lengths.split(",") if m.strip()]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    settings = load()
    say = lambda m: err.print(m, highlight=False)  # noqa: E731
    chosen, _ = torch_model_for_bench(settings, model, say)
    plan = PeerPlan(
        max_lengths=lengths, rounds=rounds, batch_size=peer_batch_size, port=port, work_dir=peer_dir
    )

    def write_rounds_so_far(partial: BenchReport) -> None:  # a run cut short still leaves its rounds
        write_report(partial, out_dir, "bench-peer", err, as_json=False)

    report = run_peer_bench(
        settings,
        dataset,
        chosen,
        engines,
        plan,
        n_queries=queries,
        depth=depth,
        log=say,
        on_round=write_rounds_so_far,
    )
    write_report(report, out_dir, "bench-peer", out, as_json)


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
    queries: Annotated[
        int,
        typer.Option(min=0, help="query embeddings timed per query path (0: none; --full: every test query)"),
    ] = 300,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Index-time embedding docs/s against SentenceTransformer.encode, and one query's embedding p50 by
    today's document path against the one-query ONNX runners."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_embed import run_embed_bench
    from hybrid_rerank.connector.lab.reports import write_report

    report = run_embed_bench(
        load(),
        dataset,
        n_docs=docs,
        full=full,
        backends=backends.split(",") if backends else None,
        queries=queries,
        log=lambda m: err.print(m, highlight=False),
    )
    write_report(report, out_dir, "bench-embed", out, as_json)


@bench_app.command("search")
def bench_search(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (test split)")],
    queries: Annotated[int, typer.Option(min=1, help="test queries measured")] = 100,
    index: Annotated[
        str | None, typer.Option(help="index name on the engine (default: the bench's own)")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """First-stage per-stage p50/p95 on the embedded backend and (with OPENSEARCH_URL) on OpenSearch, hybrid
    recall against BM25-only on the same index."""
    require_lab()
    from hybrid_rerank.connector.lab.bench_stack import run_search_bench
    from hybrid_rerank.connector.lab.reports import write_report

    log = lambda m: err.print(m, highlight=False)  # noqa: E731
    report = run_search_bench(load(), dataset, n_queries=queries, index_name=index, log=log)
    write_report(report, out_dir, "bench-search", out, as_json)


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
    from hybrid_rerank.connector.lab.bench_stack import run_index_bench
    from hybrid_rerank.connector.lab.reports import write_report

    report = run_index_bench(
        load(), dataset, n_docs=docs, rounds=rounds, log=lambda m: err.print(m, highlight=False)
    )
    write_report(report, out_dir, "bench-index", out, as_json)


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
    from hybrid_rerank.connector.lab.bench_tradeoff import run_tradeoff
    from hybrid_rerank.connector.lab.reports import write_report

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
    write_report(report, out_dir, "bench-tradeoff", out, as_json)


@bench_app.command("serve")
def bench_serve(
    dataset: Annotated[
        Path | None, typer.Argument(help="BEIR folder whose queries.jsonl the clients send (default: demo)")
    ] = None,
    url: Annotated[
        str, typer.Option(help="the service's base URL (loopback only)")
    ] = "http://127.0.0.1:8000",
    clients: Annotated[
        str, typer.Option(help="concurrent clients, one load level per count, e.g. 1,5,20,50 (max 200)")
    ] = "1,5,20",
    seconds: Annotated[float, typer.Option(help="seconds per load level (max 600)")] = 30.0,
    mix: Annotated[
        str, typer.Option(help="route weights: search, rerank, v1-rerank")
    ] = "search=6,rerank=2,v1-rerank=2",
    queries: Annotated[int, typer.Option(min=1, help="distinct queries the clients draw from")] = 100,
    depth: Annotated[
        int, typer.Option(min=1, max=100, help="candidates per /rerank and /v1/rerank request")
    ] = 30,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds before a request counts as lost")] = 30.0,
    added_latency_queries: Annotated[
        int, typer.Option(min=0, help="queries timed in-process and through POST /search (0: skip)")
    ] = 50,
    index: Annotated[
        str | None, typer.Option(help="the index the service serves (default INDEX_NAME)")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="API_KEY", help="sent as a Bearer token")] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow a non-loopback target (only one that is yours)")
    ] = False,
    seed: Annotated[int, typer.Option(help="seeds the query order and each client's draws")] = 13,
    out_dir: Annotated[Path, typer.Option("--out")] = Path("bench-results"),
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON report")] = False,
) -> None:
    """Load test of `hybrid-rerank serve`: N clients for T seconds per level over /search, /rerank and
    /v1/rerank (throughput, p50/p95/p99, errors, lost requests, rerank fallbacks), then the latency the
    service adds over the same pipeline in-process. Run it under the service's environment."""
    require_lab()
    from hybrid_rerank.connector.factory import make_pipeline
    from hybrid_rerank.connector.lab.bench_serve import run_serve_bench
    from hybrid_rerank.connector.lab.bench_serve_plan import (
        ServeBenchPlan,
        check_target,
        parse_clients,
        parse_mix,
    )
    from hybrid_rerank.connector.lab.demo import demo_data_dir
    from hybrid_rerank.connector.lab.reports import write_report

    settings = load()
    if index:
        settings = settings.model_copy(update={"index_name": index})
    plan = ServeBenchPlan(
        base_url=check_target(url, allow_remote=allow_remote),
        dataset=dataset or demo_data_dir(),
        clients=parse_clients(clients),
        seconds=seconds,
        mix=parse_mix(mix),
        queries=queries,
        depth=depth,
        timeout_s=timeout,
        added_latency_queries=added_latency_queries,
        headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        seed=seed,
    )
    stack = {
        **settings.describe(),
        "embedding_query_cache": str(settings.embedding_query_cache),
        "rerank_cache_ttl_s": str(settings.rerank_cache_ttl_s),
        "rerank_deadline_ms": str(settings.rerank_deadline_ms),
    }
    notes = []
    if settings.embedding_query_cache or (settings.uses_celery and settings.rerank_cache_ttl_s):
        notes.append(
            "caches on (EMBEDDING_QUERY_CACHE, RERANK_CACHE_TTL_S): repeated queries may skip the models"
        )
    path = (
        "off" if settings.rerank_model is None else "Celery workers" if settings.uses_celery else "in-process"
    )
    report = run_serve_bench(
        plan,
        stack=stack,
        make_pipeline=lambda: make_pipeline(settings),
        rerank_path=path,
        notes=notes,
        say=lambda m: err.print(m, highlight=False),
    )
    write_report(report, out_dir, "bench-serve", out, as_json)

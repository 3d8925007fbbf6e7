"""The `hybrid-rerank` command line, one module per command group: `index`, `delete`, `search` (with
`batch-search` and `info`), `serve`, `evaluate`, `bench`, `reranker` (train, tune, export) and `demo`. The
lab's commands need the lab extra and say so when it is missing."""

# isort: skip_file
# Importing a module registers its commands; `--help` lists them in this order.
from hybrid_rerank.connector.cli import index, delete, search, serve, evaluate, bench, reranker, demo
from hybrid_rerank.connector.cli import opensearch_ml  # noqa: F401  (registers `opensearch`)
from hybrid_rerank.connector.cli.common import app, main

__all__ = ["app", "bench", "delete", "demo", "evaluate", "index", "main", "reranker", "search", "serve"]

"""`python -m hybrid_rerank.connector.cli`: the same command line as the `hybrid-rerank` script."""

from hybrid_rerank.connector.cli.common import main

main()

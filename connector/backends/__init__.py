"""Stores behind the `Backend` protocol: `embedded` (in-process) and, with OPENSEARCH_URL, OpenSearch."""

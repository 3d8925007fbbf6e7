"""Rerank workers: a pure cross-encoder reranking core, with a thin Celery task layer over it.

Importing this package is cheap: torch and sentence-transformers load only when a scorer is first used.
"""

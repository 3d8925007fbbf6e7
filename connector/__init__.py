"""Hybrid (BM25 + dense) first-stage recall with cross-encoder reranking.

Importing the package is cheap: models, torch and clients load only when used.
"""

__version__ = "0.1.0"

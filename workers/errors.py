"""The errors the rerank subsystem raises on purpose, and the root of the project's error tree (the
connector's errors derive from it too, since the connector may import the workers but never the reverse).
Messages say what happened and what to do."""

from __future__ import annotations


def describe_exception(exc: BaseException) -> str:
    """`Type: first line of the message`: enough to act on, without a library's multi-line essay."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0].rstrip('.')}" if lines else type(exc).__name__


class HybridRerankError(Exception):
    """Base class of every error hybrid-rerank raises on purpose: catch this to handle any of them."""


class ConfigurationError(HybridRerankError):
    """A setting is missing, malformed or inconsistent with another."""


class ModelLoadError(HybridRerankError):
    """A bi-encoder or cross-encoder could not be loaded from the configured path or id."""


class RerankInputError(HybridRerankError, ValueError):
    """A rerank request or reply that does not have the documented shape."""

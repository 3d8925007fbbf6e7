"""Every error the connector raises on purpose. Messages say what happened and what to do.

The tree's root, `HybridRerankError`, and the errors both sides raise (`ConfigurationError`,
`ModelLoadError`) live in `hybrid_rerank.workers.errors`, since the workers never import the connector; they
are re-exported here so connector code names one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybrid_rerank.workers.errors import (
    ConfigurationError,
    HybridRerankError,
    ModelLoadError,
    describe_exception,
)

__all__ = [
    "BackendUnavailableError",
    "BulkIndexError",
    "ConfigurationError",
    "ConnectorError",
    "DocumentFailure",
    "HybridRerankError",
    "IndexMismatchError",
    "IndexMissingError",
    "InvalidDocumentsError",
    "InvalidQueryError",
    "ModelLoadError",
    "RecordError",
    "describe_exception",
]


class ConnectorError(HybridRerankError):
    """Base class of the connector's own errors (search, indexing, input records)."""


class IndexMissingError(ConnectorError):
    """The index to search or update does not exist yet."""


class IndexMismatchError(ConnectorError):
    """The index was built with another embedding model or vector dimension than the one configured."""


class InvalidQueryError(ConnectorError):
    """A query that cannot be searched (e.g. empty)."""


class BackendUnavailableError(ConnectorError):
    """The search backend (OpenSearch node) cannot be reached."""


@dataclass(frozen=True)
class RecordError:
    """One bad input record: where it is and what is wrong with it."""

    source: str
    line: int
    message: str
    record_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}, line {self.line}"
        ident = f" (id {self.record_id!r})" if self.record_id is not None else ""
        return f"{where}{ident}: {self.message}"


class InvalidDocumentsError(ConnectorError):
    """Input records failed validation; nothing was indexed."""

    MAX_LISTED = 20

    def __init__(self, errors: Sequence[RecordError]) -> None:
        self.errors = list(errors)
        listed = "\n".join(f"  {e}" for e in self.errors[: self.MAX_LISTED])
        more = len(self.errors) - self.MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.errors)} invalid record(s); nothing was indexed:\n{listed}{tail}\n"
            "Fix the records, or pass --skip-invalid to index the valid ones and report the rest."
        )


@dataclass(frozen=True)
class DocumentFailure:
    """One document the backend refused during a bulk write."""

    doc_id: str
    reason: str


class BulkIndexError(ConnectorError):
    """Some documents of a bulk write failed; the others were written."""

    def __init__(self, failures: Sequence[DocumentFailure], written: int) -> None:
        self.failures = list(failures)
        self.written = written
        listed = "\n".join(f"  {f.doc_id}: {f.reason}" for f in self.failures[:20])
        super().__init__(f"{len(self.failures)} document(s) failed, {written} written:\n{listed}")

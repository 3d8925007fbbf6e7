"""Streaming validation: the valid documents of a source, one at a time, with every bad record reported.

`DocumentStream` reads a file lazily (see `records`), validates each record, refuses duplicate ids and notes
metadata fields whose type changes between records. What it keeps grows with the ids (for duplicates and
`--sync`) and with the problems found, never with the texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from hybrid_rerank.connector.documents import (
    BadRecord,
    Document,
    InputFormat,
    MetadataValue,
    document_from_mapping,
)
from hybrid_rerank.connector.errors import InvalidDocumentsError, RecordError
from hybrid_rerank.connector.records import Position, count_lines, read_records, resolve


class DocumentStream:
    """The documents of one file or BEIR folder. Each iteration re-reads the source; after one, `errors`
    lists every skipped record, `warnings` every type change, `ids` every valid id (with its line)."""

    def __init__(self, path: str | Path, *, fmt: InputFormat = "auto", max_record_bytes: int = 1_000_000):
        self.path, self.kind = resolve(path, fmt)
        self.source = str(self.path)
        self.max_record_bytes = max_record_bytes
        self.errors: list[RecordError] = []
        self.warnings: list[RecordError] = []
        self.ids: dict[str, int] = {}
        self.bad_ids: set[str] = set()  # ids of records that were skipped: `--sync` keeps their old version

    def validate(self) -> int:
        """Read the whole source without keeping documents; raise `InvalidDocumentsError` listing every bad
        record, so a strict run indexes nothing from a bad source. Returns the number of documents."""
        count = sum(1 for _ in self)
        if self.errors:
            raise InvalidDocumentsError(self.errors)
        return count

    def estimated_total(self) -> int:
        """About how many records there are: a line count (no parsing); a JSON array is parsed (no
        validation beyond that), since its lines say nothing."""
        if self.kind == "json":
            return sum(1 for _ in read_records(self.path, self.kind, self.max_record_bytes))
        lines = count_lines(self.path)
        return max(lines - 1, 0) if self.kind == "csv" else lines

    def __iter__(self) -> Iterator[Document]:
        self.errors, self.warnings, self.ids, self.bad_ids = [], [], {}, set()
        types = FieldTypes()
        for position, parsed in read_records(self.path, self.kind, self.max_record_bytes):
            try:
                if isinstance(parsed, BadRecord):
                    raise parsed
                doc = document_from_mapping(parsed)
                if doc.id in self.ids:
                    raise BadRecord(f"duplicate id, first seen at line {self.ids[doc.id]}", doc.id)
            except BadRecord as bad:
                self.errors.append(self._problem(position, str(bad), bad.record_id))
                if bad.record_id is not None:
                    self.bad_ids.add(bad.record_id)
                continue
            self.ids[doc.id] = position.line
            for message in types.observe(doc.metadata, position.line):
                self.warnings.append(self._problem(position, message, doc.id))
            yield doc

    def _problem(self, position: Position, message: str, record_id: str | None) -> RecordError:
        return RecordError(position.source(self.source), position.line, message, record_id)


def value_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


class FieldTypes:
    """The first type seen for each metadata field (and `an object` for each dotted prefix), to report a
    record whose field has another: an engine maps a field by the first value it sees and may refuse
    the document then, so the record is named before it is sent (it is still indexed)."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[str, int]] = {}  # field -> (kind, line first seen)

    def observe(self, metadata: Mapping[str, MetadataValue], line: int) -> list[str]:
        messages: list[str] = []
        for key, value in metadata.items():
            parts = key.split(".")
            seen = [(".".join(parts[:i]), "an object") for i in range(1, len(parts))]
            values = value if isinstance(value, list) else [] if value is None else [value]
            seen += [(key, kind) for kind in sorted({value_kind(v) for v in values})]
            for name, kind in seen:
                first_kind, first_line = self.first.setdefault(name, (kind, line))
                if first_kind != kind:
                    message = (
                        f"field {name!r} is {kind} here but was {first_kind} at line {first_line}; an engine "
                        "that mapped the first may refuse this document"
                    )
                    if message not in messages:
                        messages.append(message)
        return messages

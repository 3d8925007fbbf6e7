"""The document model and the loaders for JSONL, CSV and BEIR folders.

Loading validates every record before anything is indexed. In strict mode (the default) any bad record
raises `InvalidDocumentsError` listing every problem with file and line; with `skip_invalid=True` the bad
records are returned as `RecordError`s beside the valid documents, so the caller can report each one.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hybrid_rerank.connector.errors import ConfigurationError, InvalidDocumentsError, RecordError

Scalar = str | int | float | bool
MetadataValue = Scalar | list[Scalar] | None
InputFormat = Literal["auto", "jsonl", "csv", "beir"]

ID_FIELDS = ("_id", "id")
CORE_FIELDS = {"_id", "id", "title", "text", "metadata"}


@dataclass(frozen=True)
class Document:
    """A unit of retrieval. `metadata` holds scalar (or list-of-scalar) fields usable in filters."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """What the bi-encoder and the cross-encoder read: the title, then the body."""
        return f"{self.title}. {self.text}" if self.title else self.text

    def to_json(self) -> dict[str, Any]:
        return {"_id": self.id, "title": self.title, "text": self.text, "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class LoadResult:
    documents: list[Document]
    errors: list[RecordError]
    source: str


class _BadRecord(Exception):
    def __init__(self, message: str, record_id: str | None = None) -> None:
        super().__init__(message)
        self.record_id = record_id


def load_documents(
    path: str | Path,
    *,
    fmt: InputFormat = "auto",
    skip_invalid: bool = False,
    max_record_bytes: int = 1_000_000,
) -> LoadResult:
    """Load and validate every record of a JSONL file, a CSV file or a BEIR folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigurationError(f"input not found: {path}")
    kind = _detect_format(path) if fmt == "auto" else fmt
    if kind == "beir":
        path = path / "corpus.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise ConfigurationError(f"a BEIR folder needs a corpus.jsonl file: {path} not found")
        kind = "jsonl"
    records = (
        _jsonl_records(path, max_record_bytes) if kind == "jsonl" else _csv_records(path, max_record_bytes)
    )

    documents: list[Document] = []
    errors: list[RecordError] = []
    first_line_of: dict[str, int] = {}
    for line, parsed in records:
        try:
            if isinstance(parsed, _BadRecord):
                raise parsed
            doc = document_from_mapping(parsed)
            if doc.id in first_line_of:
                raise _BadRecord(f"duplicate id, first seen at line {first_line_of[doc.id]}", doc.id)
        except _BadRecord as bad:
            errors.append(RecordError(str(path), line, str(bad), bad.record_id))
            continue
        first_line_of[doc.id] = line
        documents.append(doc)

    if errors and not skip_invalid:
        raise InvalidDocumentsError(errors)
    return LoadResult(documents, errors, str(path))


def _detect_format(path: Path) -> InputFormat:
    if path.is_dir():
        return "beir"
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    raise ConfigurationError(
        f"cannot tell the format of {path}: use a .jsonl or .csv file, a BEIR folder, or pass --format"
    )


_Parsed = Mapping[str, Any] | _BadRecord


def _jsonl_records(path: Path, max_record_bytes: int) -> Iterator[tuple[int, _Parsed]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if len(raw) > max_record_bytes:
                yield (
                    line_no,
                    _BadRecord(
                        f"record is {len(raw):,} bytes, "
                        f"over the limit of {max_record_bytes:,} (MAX_RECORD_BYTES)"
                    ),
                )
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, _BadRecord(f"invalid UTF-8 at byte {exc.start} of the line")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, _BadRecord(f"malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield line_no, _BadRecord(f"expected a JSON object, got {_type_name(obj)}")
                continue
            yield line_no, obj


def _csv_records(path: Path, max_record_bytes: int) -> Iterator[tuple[int, _Parsed]]:
    raw_lines = path.read_bytes().splitlines(keepends=True)
    bad_utf8: dict[int, int] = {}  # line number -> byte offset of the first bad byte
    lines: list[str] = []
    for line_no, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad_utf8[line_no] = exc.start
            lines.append(raw.decode("utf-8", errors="replace"))
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InvalidDocumentsError([RecordError(str(path), 1, f"unreadable CSV header: {exc}")]) from exc
    header = [name.strip() for name in header]
    if not any(name in header for name in ID_FIELDS) or "text" not in header:
        raise InvalidDocumentsError(
            [
                RecordError(
                    str(path), 1, f"CSV header needs 'id' (or '_id') and 'text' columns; found {header}"
                )
            ]
        )
    if 1 in bad_utf8:
        raise InvalidDocumentsError([RecordError(str(path), 1, "invalid UTF-8 in the CSV header")])

    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, _BadRecord(f"malformed CSV: {exc}")
            start = reader.line_num + 1
            continue
        end = reader.line_num
        line_no, start = start, end + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        size = sum(len(raw_lines[i - 1]) for i in range(line_no, end + 1))
        broken = [i for i in range(line_no, end + 1) if i in bad_utf8]
        if size > max_record_bytes:
            yield (
                line_no,
                _BadRecord(
                    f"record is {size:,} bytes, over the limit of {max_record_bytes:,} (MAX_RECORD_BYTES)"
                ),
            )
        elif broken:
            yield line_no, _BadRecord(f"invalid UTF-8 at byte {bad_utf8[broken[0]]} of line {broken[0]}")
        elif len(row) != len(header):
            yield line_no, _BadRecord(f"row has {len(row)} fields, the header has {len(header)}")
        else:
            yield line_no, _csv_row_to_mapping(header, row)


def _csv_row_to_mapping(header: list[str], row: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=True):
        if name in CORE_FIELDS:
            record[name] = cell
        elif cell != "":  # an empty cell is an absent value
            metadata[name] = cell
    record["metadata"] = metadata
    return record


def document_from_mapping(record: Mapping[str, Any]) -> Document:
    """Validate one parsed record; unknown top-level fields become metadata."""
    doc_id = _parse_id(record)
    text = record.get("text")
    if text is None:
        raise _BadRecord("missing 'text'", doc_id)
    if not isinstance(text, str):
        raise _BadRecord(f"'text' must be a string, got {_type_name(text)}", doc_id)
    if not text.strip():
        raise _BadRecord("empty text", doc_id)
    title = record.get("title")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise _BadRecord(f"'title' must be a string, got {_type_name(title)}", doc_id)

    raw_meta = record.get("metadata")
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, dict):
        raise _BadRecord(f"'metadata' must be an object, got {_type_name(raw_meta)}", doc_id)
    metadata = dict(raw_meta)
    for key, value in record.items():
        if key in CORE_FIELDS:
            continue
        if key in metadata:
            raise _BadRecord(f"field {key!r} is both top-level and in 'metadata'", doc_id)
        metadata[key] = value
    for key, value in metadata.items():
        if not _valid_metadata_value(value):
            raise _BadRecord(
                f"metadata field {key!r} must be a string, number, boolean or a list of those, "
                f"got {_type_name(value)}",
                doc_id,
            )
    return Document(id=doc_id, text=text, title=title, metadata=metadata)


def _parse_id(record: Mapping[str, Any]) -> str:
    for name in ID_FIELDS:
        if name in record:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise _BadRecord(f"{name!r} must be a string or an integer, got {_type_name(value)}")
            doc_id = str(value)
            if not doc_id.strip():
                raise _BadRecord(f"empty {name!r}")
            return doc_id
    raise _BadRecord("missing id (expected a '_id' or 'id' field)")


def _valid_metadata_value(value: object) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    return isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)


def _type_name(value: object) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)

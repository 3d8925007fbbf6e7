"""The document model and the validation of one parsed record.

A record is a mapping (a JSON object or a CSV row) with an id, a text, an optional title and metadata. Nested
objects in metadata are flattened to dotted keys (`author.name`); an array of objects becomes list-valued
dotted keys (`authors.name: [..]`), as the engines index an array of objects. Reading files lives in
`records` and streaming validation in `ingest`; `load_documents` here loads a whole (small) file at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from hybrid_rerank.connector.errors import RecordError

Scalar = str | int | float | bool
MetadataValue = Scalar | list[Scalar] | None
InputFormat = Literal["auto", "jsonl", "json", "csv", "beir"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("auto", "jsonl", "json", "csv", "beir")

ID_FIELDS = ("_id", "id")
CORE_FIELDS = {"_id", "id", "title", "text", "metadata"}
CONTENT_HASH_CHARS = 32


@dataclass(frozen=True)
class Document:
    """A unit of retrieval. `metadata` holds scalar (or list-of-scalar) fields usable in filters.

    `content_hash` is what the index stored for the document (empty when not computed or never stored); it
    is derived data, so two documents with the same content compare equal whatever their hash field holds."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    content_hash: str = field(default="", compare=False)

    @property
    def full_text(self) -> str:
        """What the bi-encoder and the cross-encoder read: the title, then the body."""
        return f"{self.title}. {self.text}" if self.title else self.text

    def to_json(self) -> dict[str, Any]:
        record = {"_id": self.id, "title": self.title, "text": self.text, "metadata": dict(self.metadata)}
        if self.content_hash:
            record["content_hash"] = self.content_hash
        return record

    def hashed(self) -> Document:
        """This document with `content_hash` set to the hash of its content."""
        return replace(self, content_hash=content_hash(self))


def content_hash(document: Document) -> str:
    """sha256 (first 32 hex digits) of the canonical JSON of what is embedded and indexed: id, title, text,
    metadata. A re-run compares it with the stored one to skip unchanged documents."""
    canonical = json.dumps(
        {
            "id": document.id,
            "title": document.title,
            "text": document.text,
            "metadata": dict(document.metadata),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:CONTENT_HASH_CHARS]


@dataclass(frozen=True)
class LoadResult:
    documents: list[Document]
    errors: list[RecordError]
    source: str


class BadRecord(Exception):
    """A record that cannot be indexed; `record_id` when the id itself was readable."""

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
    """Load and validate every record of a JSONL file, a JSON array, a CSV file or a BEIR folder, into
    memory. In strict mode any bad record raises `InvalidDocumentsError` listing every problem; with
    `skip_invalid=True` the bad records come back as `RecordError`s beside the valid documents. Large
    inputs are better streamed with `ingest.DocumentStream`."""
    from hybrid_rerank.connector.ingest import DocumentStream  # it imports this module

    stream = DocumentStream(path, fmt=fmt, max_record_bytes=max_record_bytes)
    if not skip_invalid:
        stream.validate()
    documents = list(stream)
    return LoadResult(documents, stream.errors, stream.source)


def document_from_mapping(record: Mapping[str, Any]) -> Document:
    """Validate one parsed record; unknown top-level fields become metadata, nested objects dotted keys."""
    doc_id = _parse_id(record)
    text = record.get("text")
    if text is None:
        raise BadRecord("missing 'text'", doc_id)
    if not isinstance(text, str):
        raise BadRecord(f"'text' must be a string, got {type_name(text)}", doc_id)
    if not text.strip():
        raise BadRecord("empty text", doc_id)
    title = record.get("title")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise BadRecord(f"'title' must be a string, got {type_name(title)}", doc_id)

    raw_meta = record.get("metadata")
    if raw_meta is None:
        raw_meta = {}
    if not isinstance(raw_meta, dict):
        raise BadRecord(f"'metadata' must be an object, got {type_name(raw_meta)}", doc_id)
    merged = dict(raw_meta)
    for key, value in record.items():
        if key in CORE_FIELDS:
            continue
        if key in merged:
            raise BadRecord(f"field {key!r} is both top-level and in 'metadata'", doc_id)
        merged[key] = value
    try:
        metadata = flatten_metadata(merged)
    except BadRecord as bad:
        raise BadRecord(str(bad), doc_id) from None
    return Document(id=doc_id, text=text, title=title, metadata=metadata)


def flatten_metadata(raw: Mapping[str, Any]) -> dict[str, MetadataValue]:
    """Nested objects become dotted keys (`{"author": {"name": "A"}}` -> `author.name: "A"`). An array of
    objects becomes one list-valued dotted key per field, collecting every object's values in order
    (`{"authors": [{"name": "A"}, {"name": "B"}]}` -> `authors.name: ["A", "B"]`), as OpenSearch and
    Elasticsearch index an array of objects; which value came from which object is not kept. Nulls inside
    objects are absent values; an empty object adds nothing."""
    flat: dict[str, MetadataValue] = {}
    for key, value in raw.items():
        _flatten_into(flat, str(key), value)
    return flat


def _flatten_into(flat: dict[str, MetadataValue], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, inner in value.items():
            if inner is not None:
                _flatten_into(flat, f"{key}.{sub}", inner)
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        collected: dict[str, list[Scalar]] = {}
        for item in value:
            if isinstance(item, dict):
                for sub, inner in flatten_metadata(item).items():
                    values = collected.setdefault(f"{key}.{sub}", [])
                    if isinstance(inner, list):
                        values.extend(inner)
                    elif inner is not None:
                        values.append(inner)
            elif isinstance(item, str | int | float | bool):
                collected.setdefault(key, []).append(item)
            else:
                raise BadRecord(f"metadata field {key!r} mixes objects with {type_name(item)}")
        for name, values in collected.items():
            _put(flat, name, values)
    elif _valid_metadata_value(value):
        _put(flat, key, value)
    else:
        raise BadRecord(
            f"metadata field {key!r} must be a string, number, boolean, an object or a list of those, "
            f"got {type_name(value)}"
        )


def _put(flat: dict[str, MetadataValue], key: str, value: MetadataValue) -> None:
    if key in flat:
        raise BadRecord(f"metadata field {key!r} is given twice (as a dotted key and inside an object)")
    flat[key] = value


def _parse_id(record: Mapping[str, Any]) -> str:
    for name in ID_FIELDS:
        if name in record:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise BadRecord(f"{name!r} must be a string or an integer, got {type_name(value)}")
            doc_id = str(value)
            if not doc_id.strip():
                raise BadRecord(f"empty {name!r}")
            return doc_id
    raise BadRecord("missing id (expected a '_id' or 'id' field)")


def _valid_metadata_value(value: object) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    return isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value)


def type_name(value: object) -> str:
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)

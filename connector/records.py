"""Reading raw records from files, lazily: JSON Lines, one JSON array of objects, CSV/TSV, a BEIR folder.

Each reader yields `(position, record)` where the position is the line the record starts on (and, in a JSON
array, its index) and the record is a mapping or the `BadRecord` saying why it cannot be read. Memory holds
one record (one chunk of the file for a JSON array) at a time. A UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_rerank.connector.documents import ID_FIELDS, BadRecord, InputFormat, type_name
from hybrid_rerank.connector.errors import ConfigurationError, InvalidDocumentsError, RecordError

BOM = b"\xef\xbb\xbf"
CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class Position:
    """Where a record starts: its line, and its index when the file is one JSON array."""

    line: int
    index: int | None = None

    def source(self, path: str) -> str:
        return path if self.index is None else f"{path}[{self.index}]"


Parsed = Mapping[str, Any] | BadRecord


def resolve(path: str | Path, fmt: InputFormat) -> tuple[Path, InputFormat]:
    """The file to read and its concrete format (jsonl, json or csv); a BEIR folder means its corpus.jsonl.
    A .json/.jsonl file holding an array (first character `[`) is read as one JSON array."""
    path = Path(path)
    if not path.exists():
        raise ConfigurationError(f"input not found: {path}")
    kind: InputFormat = _format_of_name(path) if fmt == "auto" else fmt
    if kind == "beir":
        path = path / "corpus.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise ConfigurationError(f"a BEIR folder needs a corpus.jsonl file: {path} not found")
        kind = "jsonl"
    if kind in {"jsonl", "json"} and fmt in {"auto", "beir"}:
        kind = "json" if _first_character(path) == "[" else "jsonl"
    return path, kind


def read_records(path: Path, kind: InputFormat, max_record_bytes: int) -> Iterator[tuple[Position, Parsed]]:
    if kind == "json":
        return _json_array_records(path, max_record_bytes)
    if kind == "csv":
        return _csv_records(path, max_record_bytes)
    return _jsonl_records(path, max_record_bytes)


def count_lines(path: Path) -> int:
    """Lines, counted in chunks without parsing: about the records of a JSONL or CSV file, for an ETA."""
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_CHARS):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def _format_of_name(path: Path) -> InputFormat:
    if path.is_dir():
        return "beir"
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    raise ConfigurationError(
        f"cannot tell the format of {path}: use a .jsonl, .json or .csv file, a BEIR folder, or pass --format"
    )


def _first_character(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(BOM)
    stripped = head.lstrip()
    return chr(stripped[0]) if stripped else ""


def _too_big(size: int, limit: int) -> BadRecord:
    return BadRecord(f"record is {size:,} bytes, over the limit of {limit:,} (MAX_RECORD_BYTES)")


def _as_record(obj: object) -> Parsed:
    if not isinstance(obj, dict):
        return BadRecord(f"expected a JSON object, got {type_name(obj)}")
    return obj


def _jsonl_records(path: Path, max_record_bytes: int) -> Iterator[tuple[Position, Parsed]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            if len(raw) > max_record_bytes:
                yield Position(line_no), _too_big(len(raw), max_record_bytes)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Position(line_no), BadRecord(f"invalid UTF-8 at byte {exc.start} of the line")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Position(line_no), BadRecord(f"malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            yield Position(line_no), _as_record(obj)


class _ArrayReader:
    """Decodes one JSON array element at a time with `json.JSONDecoder.raw_decode` over a growing buffer of
    text chunks; the consumed prefix is dropped, so memory holds about one chunk plus one record."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path, self.handle = path, handle
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buffer, self.pos, self.eof = "", 0, False
        self.line_base = 1  # the line the buffer starts on
        self.json = json.JSONDecoder()

    def more(self) -> bool:
        if self.eof:
            return False
        raw = self.handle.read(CHUNK_CHARS)
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            self.fail(f"invalid UTF-8 near byte {exc.start} of a chunk; the array cannot be read on")
        self.eof = not raw
        self.line_base += self.buffer.count("\n", 0, self.pos)
        self.buffer, self.pos = self.buffer[self.pos :] + text, 0
        return True

    def line(self) -> int:
        return self.line_base + self.buffer.count("\n", 0, self.pos)

    def skip_space(self) -> str:
        """The next non-space character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.more():
                return ""

    def value(self) -> tuple[object, int]:
        """The next JSON value and its length in characters; more text is read until it is complete (a
        value that ends at the end of the buffer may go on in the next chunk)."""
        while True:
            try:
                obj, end = self.json.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self.more():
                    continue
                self.fail(f"malformed JSON: {exc.msg}; the array cannot be read on")
            if end == len(self.buffer) and self.more():
                continue
            start, self.pos = self.pos, end
            return obj, end - start

    def fail(self, message: str) -> None:
        raise InvalidDocumentsError([RecordError(str(self.path), self.line(), message)])


def _json_array_records(path: Path, max_record_bytes: int) -> Iterator[tuple[Position, Parsed]]:
    with path.open("rb") as handle:
        reader = _ArrayReader(path, handle)
        if reader.skip_space() != "[":
            reader.fail("expected a JSON array of objects")
        reader.pos += 1
        index = 0
        if reader.skip_space() == "]":
            return
        while True:
            position = Position(reader.line(), index)
            obj, chars = reader.value()
            if chars > max_record_bytes // 4 and len(json.dumps(obj).encode("utf-8")) > max_record_bytes:
                yield position, _too_big(len(json.dumps(obj).encode("utf-8")), max_record_bytes)
            else:
                yield position, _as_record(obj)
            index += 1
            following = reader.skip_space()
            reader.pos += 1
            if following == "]":
                return
            if following != ",":
                reader.pos -= 1
                reader.fail(f"expected ',' or ']' after array element {index - 1}")
            reader.skip_space()


def _csv_records(path: Path, max_record_bytes: int) -> Iterator[tuple[Position, Parsed]]:
    sizes: dict[int, int] = {}  # line number -> bytes, for the lines of the record being read
    bad_utf8: dict[int, int] = {}  # line number -> byte offset of the first bad byte

    def decoded_lines(handle: Any) -> Iterator[str]:
        for line_no, raw in enumerate(handle, start=1):
            sizes[line_no] = len(raw)
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_utf8[line_no] = exc.start
                yield raw.decode("utf-8", errors="replace")

    with path.open("rb") as handle:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(decoded_lines(handle), delimiter=delimiter, strict=True)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            return
        except csv.Error as exc:
            raise InvalidDocumentsError([RecordError(str(path), 1, f"unreadable CSV header: {exc}")]) from exc
        if not any(name in header for name in ID_FIELDS) or "text" not in header:
            message = f"CSV header needs 'id' (or '_id') and 'text' columns; found {header}"
            raise InvalidDocumentsError([RecordError(str(path), 1, message)])
        if 1 in bad_utf8:
            raise InvalidDocumentsError([RecordError(str(path), 1, "invalid UTF-8 in the CSV header")])
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Position(start), BadRecord(f"malformed CSV: {exc}")
                for i in range(start, reader.line_num + 1):
                    sizes.pop(i, None)
                    bad_utf8.pop(i, None)
                start = reader.line_num + 1
                continue
            end = reader.line_num
            line_no, start = start, end + 1
            lines = range(line_no, end + 1)
            size = sum(sizes.pop(i, 0) for i in lines)
            first_bad = next(((i, bad_utf8[i]) for i in lines if i in bad_utf8), None)
            for i in lines:
                bad_utf8.pop(i, None)
            if not row or all(not cell.strip() for cell in row):
                continue
            if size > max_record_bytes:
                yield Position(line_no), _too_big(size, max_record_bytes)
            elif first_bad is not None:
                bad_line, offset = first_bad
                yield Position(line_no), BadRecord(f"invalid UTF-8 at byte {offset} of line {bad_line}")
            elif len(row) != len(header):
                yield Position(line_no), BadRecord(f"row has {len(row)} fields, the header has {len(header)}")
            else:
                yield Position(line_no), _csv_row_to_mapping(header, row)


def _csv_row_to_mapping(header: list[str], row: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for name, cell in zip(header, row, strict=True):
        if name in {"_id", "id", "title", "text", "metadata"}:
            record[name] = cell
        elif cell != "":  # an empty cell is an absent value
            metadata[name] = cell
    record["metadata"] = metadata
    return record

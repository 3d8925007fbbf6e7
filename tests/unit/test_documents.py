from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector.documents import Document, load_documents
from hybrid_rerank.connector.errors import ConfigurationError, InvalidDocumentsError


def write_jsonl(path: Path, lines: list[str | bytes]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else line.encode("utf-8"))
            handle.write(b"\n")
    return path


def good(doc_id: str, text: str = "some text", **extra: object) -> str:
    return json.dumps({"_id": doc_id, "title": f"title {doc_id}", "text": text, **extra})


def only_error(path: Path) -> str:
    with pytest.raises(InvalidDocumentsError) as info:
        load_documents(path)
    assert len(info.value.errors) == 1
    return str(info.value.errors[0])


def test_valid_jsonl_loads_every_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [good("a", metadata={"topic": "x", "year": 2020}), "", json.dumps({"id": 7, "text": "seven"})],
    )
    result = load_documents(path)
    assert result.errors == []
    assert result.documents == [
        Document("a", "some text", "title a", {"topic": "x", "year": 2020}),
        Document("7", "seven", "", {}),
    ]


def test_unknown_top_level_fields_become_metadata(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps({"_id": "a", "text": "t", "lang": "en"})])
    assert load_documents(path).documents[0].metadata == {"lang": "en"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "a", "text": ', "line 2: malformed JSON"),
        ('["a", "b"]', "line 2: expected a JSON object, got a list"),
        ('{"text": "no id here"}', "line 2: missing id"),
        ('{"_id": "  ", "text": "t"}', "line 2: empty '_id'"),
        ('{"_id": 1.5, "text": "t"}', "line 2: '_id' must be a string or an integer, got float"),
        ('{"_id": true, "text": "t"}', "line 2: '_id' must be a string or an integer, got bool"),
        ('{"_id": "b", "text": "   "}', "line 2 (id 'b'): empty text"),
        ('{"_id": "b"}', "line 2 (id 'b'): missing 'text'"),
        ('{"_id": "b", "text": 42}', "line 2 (id 'b'): 'text' must be a string, got int"),
        ('{"_id": "b", "text": "t", "title": ["x"]}', "'title' must be a string, got a list"),
        ('{"_id": "b", "text": "t", "metadata": "x"}', "'metadata' must be an object, got str"),
        (
            '{"_id": "b", "text": "t", "metadata": {"k": [{"deep": 1}, [2]]}}',
            "metadata field 'k' mixes objects with a list",
        ),
        (
            '{"_id": "b", "text": "t", "metadata": {"k.deep": 1, "k": {"deep": 2}}}',
            "metadata field 'k.deep' is given twice",
        ),
        ('{"_id": "b", "text": "t", "metadata": {"k": [[1, 2]]}}', "metadata field 'k' must be a string"),
        ('{"_id": "b", "text": "t", "metadata": {"k": [1, null]}}', "metadata field 'k' must be a string"),
        ('{"_id": "a", "text": "again"}', "line 2 (id 'a'): duplicate id, first seen at line 1"),
    ],
)
def test_each_bad_record_is_named_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), line, good("c")])
    error = only_error(path)
    assert error.startswith(str(path))
    assert message in error


def test_invalid_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), b'{"_id": "b", "text": "caf\xe9"}'])
    assert "line 2: invalid UTF-8 at byte 25" in only_error(path)


def test_record_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), good("big", "x" * 5000)])
    with pytest.raises(InvalidDocumentsError) as info:
        load_documents(path, max_record_bytes=1000)
    assert "line 2: record is 5,049 bytes, over the limit of 1,000" in str(info.value.errors[0])


def test_strict_mode_lists_every_error_and_returns_nothing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), "{", good("c"), '{"_id": "d"}'])
    with pytest.raises(InvalidDocumentsError) as info:
        load_documents(path)
    assert [e.line for e in info.value.errors] == [2, 4]
    assert "--skip-invalid" in str(info.value)


def test_skip_invalid_keeps_every_valid_record_and_reports_each_bad_one(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), "{", good("c"), good("a", "dup"), good("e")])
    result = load_documents(path, skip_invalid=True)
    assert [d.id for d in result.documents] == ["a", "c", "e"]
    assert result.documents[0].text == "some text"  # the first of a duplicate pair is kept
    assert [(e.line, e.record_id) for e in result.errors] == [(2, None), (4, "a")]


def test_csv_with_metadata_columns(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text('id,title,text,topic,year\n1,One,"first, with comma",a,2020\n2,Two,"multi\nline",b,\n')
    docs = load_documents(path).documents
    assert docs == [
        Document("1", "first, with comma", "One", {"topic": "a", "year": "2020"}),
        Document("2", "multi\nline", "Two", {"topic": "b"}),
    ]


def test_csv_errors_name_the_line_where_the_record_starts(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_bytes(b'id,text\n1,"spans\ntwo lines"\n2,\n3,too,many\n1,dup\n4,caf\xe9\n')
    with pytest.raises(InvalidDocumentsError) as info:
        load_documents(path)
    assert [(e.line, e.message) for e in info.value.errors] == [
        (4, "empty text"),
        (5, "row has 3 fields, the header has 2"),
        (6, "duplicate id, first seen at line 2"),
        (7, "invalid UTF-8 at byte 5 of line 7"),
    ]


def test_csv_without_required_columns_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("name,body\nx,y\n")
    with pytest.raises(InvalidDocumentsError, match="needs 'id'"):
        load_documents(path, skip_invalid=True)


def test_beir_folder_reads_corpus_jsonl(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "corpus.jsonl", [good("a"), good("b")])
    assert [d.id for d in load_documents(tmp_path).documents] == ["a", "b"]


def test_missing_or_unknown_inputs_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_documents(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ConfigurationError, match="cannot tell the format"):
        load_documents(tmp_path / "x.txt")
    with pytest.raises(ConfigurationError, match=r"corpus\.jsonl"):
        load_documents(tmp_path)


def test_full_text_puts_the_title_first() -> None:
    assert Document("a", "body", "Title").full_text == "Title. body"
    assert Document("a", "body").full_text == "body"


@pytest.mark.parametrize(
    ("line", "record_id", "message"),
    [
        ('{"_id": {"x": 1}, "text": "t"}', None, "'_id' must be a string or an integer, got an object"),
        ('{"id": null, "text": "t"}', None, "'id' must be a string or an integer, got null"),
        ('{"_id": "b", "text": null}', "b", "missing 'text'"),
        ('{"_id": "b", "text": ["t"]}', "b", "'text' must be a string, got a list"),
        ('{"_id": "b", "text": "t", "title": 5}', "b", "'title' must be a string, got int"),
        ('{"_id": "b", "text": "t", "metadata": ["x"]}', "b", "'metadata' must be an object, got a list"),
        (
            '{"_id": "b", "text": "t", "lang": "en", "metadata": {"lang": "fr"}}',
            "b",
            "field 'lang' is both top-level and in 'metadata'",
        ),
        (
            '{"_id": "b", "text": "t", "metadata": {"k": {"deep": [null]}}}',
            "b",
            "metadata field 'k.deep' must be a string, number, boolean, an object or a list of those, "
            "got a list",
        ),
        (
            '{"_id": "b", "text": "t", "k": [[1]]}',
            "b",
            "metadata field 'k' must be a string, number, boolean, an object or a list of those, got a list",
        ),
    ],
)
def test_each_validation_error_names_the_record_and_says_exactly_why(
    tmp_path: Path, line: str, record_id: str | None, message: str
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [good("a"), line])
    result = load_documents(path, skip_invalid=True)
    assert [d.id for d in result.documents] == ["a"]
    assert [(e.line, e.record_id, e.message) for e in result.errors] == [(2, record_id, message)]


def test_null_title_and_metadata_mean_absent_and_scalars_lists_and_null_are_metadata(tmp_path: Path) -> None:
    record = {"_id": 5, "text": "t", "title": None, "metadata": None, "n": None, "tags": ["a", 1, 2.5, True]}
    path = write_jsonl(tmp_path / "docs.jsonl", [json.dumps(record)])
    assert load_documents(path).documents == [
        Document("5", "t", "", {"n": None, "tags": ["a", 1, 2.5, True]})
    ]


def test_a_document_as_json_has_every_field() -> None:
    document = Document("d1", "body", "Title", {"k": ["v", 1]})
    assert document.to_json() == {"_id": "d1", "title": "Title", "text": "body", "metadata": {"k": ["v", 1]}}
    assert document.to_json()["metadata"] is not document.metadata  # a copy

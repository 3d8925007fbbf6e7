"""Real-world records, read lazily: a BOM, one JSON array read in chunks, nested metadata flattened to dotted
keys, a field whose type changes between records named per document, and a line count for the ETA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybrid_rerank.connector import records
from hybrid_rerank.connector.backends.base import matches_filters
from hybrid_rerank.connector.documents import Document, content_hash, flatten_metadata, load_documents
from hybrid_rerank.connector.errors import InvalidDocumentsError
from hybrid_rerank.connector.ingest import DocumentStream


def doc(doc_id: str, **extra: object) -> dict[str, object]:
    return {"_id": doc_id, "text": f"text of {doc_id}", **extra}


def test_a_utf8_byte_order_mark_is_accepted_in_jsonl_json_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(records.BOM + (json.dumps(doc("a")) + "\n" + json.dumps(doc("b"))).encode())
    array = tmp_path / "a.json"
    array.write_bytes(records.BOM + json.dumps([doc("a"), doc("b")]).encode())
    csv = tmp_path / "a.csv"
    csv.write_bytes(records.BOM + b"id,text\na,text of a\nb,text of b\n")
    for path in (jsonl, array, csv):
        assert [d.id for d in load_documents(path).documents] == ["a", "b"], path


def test_a_json_array_is_streamed_across_chunk_boundaries_with_positions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "CHUNK_CHARS", 7)  # every record spans several chunks
    body = [doc("a", year=2020), doc("b", note="é ✓ 月"), {"_id": "c"}, 12345678, doc("e")]
    path = tmp_path / "docs.json"
    path.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in body) + "\n]\n")
    result = load_documents(path, skip_invalid=True)
    assert [d.id for d in result.documents] == ["a", "b", "e"]
    assert result.documents[1].metadata == {"note": "é ✓ 月"}
    assert [(e.source, e.line, e.message) for e in result.errors] == [
        (f"{path}[2]", 4, "missing 'text'"),
        (f"{path}[3]", 5, "expected a JSON object, got int"),
    ]


def test_a_json_file_of_objects_is_read_as_json_lines_and_an_empty_array_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(doc("a")) + "\n" + json.dumps(doc("b")) + "\n")
    assert [d.id for d in load_documents(path).documents] == ["a", "b"]
    path.write_text(" [ ] ")
    assert load_documents(path).documents == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"_id": "a", "text": "t"} {"_id": "b"}]', "line 1: expected ',' or ']' after array element 0"),
        ('[{"_id": "a", "text": "t"},\n {"_id": "b", "te', "line 2: malformed JSON"),
    ],
)
def test_a_broken_array_stops_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "docs.json"
    path.write_text(text)
    with pytest.raises(InvalidDocumentsError) as info:
        load_documents(path, skip_invalid=True)
    assert message in str(info.value.errors[0])


def test_nested_objects_flatten_to_dotted_keys_and_arrays_of_objects_to_lists() -> None:
    flat = flatten_metadata(
        {
            "author": {"name": "Ada", "address": {"city": "London"}, "nick": None, "empty": {}},
            "refs": [{"doi": "10/1", "year": 2001}, {"doi": "10/2", "tags": ["x", "y"]}, {"year": 2003}],
            "plain": ["a", "b"],
            "mixed": ["loose", {"k": 1}],
        }
    )
    assert flat == {
        "author.name": "Ada",
        "author.address.city": "London",
        "refs.doi": ["10/1", "10/2"],
        "refs.year": [2001, 2003],
        "refs.tags": ["x", "y"],
        "plain": ["a", "b"],
        "mixed": ["loose"],
        "mixed.k": [1],
    }
    assert matches_filters(flat, {"author.address.city": "London", "refs.year": "2003"})
    assert not matches_filters(flat, {"refs.doi": "10/3"})


def test_top_level_nested_fields_become_dotted_metadata(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps(doc("a", author={"name": "Ada"}, metadata={"lang": "en"})) + "\n")
    assert load_documents(path).documents[0].metadata == {"lang": "en", "author.name": "Ada"}


def test_a_type_change_between_records_is_named_per_document_and_not_fatal(tmp_path: Path) -> None:
    lines = [
        doc("a", year=2020, author={"name": "Ada"}),
        doc("b", year="unknown"),
        doc("c", year=[2021, 2022], author="Bob"),
        doc("d", year=2023, flag=True),
        doc("e", flag="yes"),
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    stream = DocumentStream(path)
    assert stream.validate() == 5  # warnings are not errors
    assert [d.id for d in stream] == ["a", "b", "c", "d", "e"]
    assert [(w.line, w.record_id, w.message.split(" here")[0]) for w in stream.warnings] == [
        (2, "b", "field 'year' is a string"),
        (3, "c", "field 'author' is a string"),
        (5, "e", "field 'flag' is a string"),
    ]
    assert "was a number at line 1" in stream.warnings[0].message


def test_the_stream_keeps_ids_and_the_ids_of_skipped_records(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "\n".join([json.dumps(doc("a")), '{"_id": "b", "text": ""}', json.dumps(doc("c"))]) + "\n"
    )
    stream = DocumentStream(path)
    assert [d.id for d in stream] == ["a", "c"]
    assert stream.ids == {"a": 1, "c": 3} and stream.bad_ids == {"b"}
    assert stream.estimated_total() == 3


def test_the_total_of_a_json_array_counts_its_elements_and_of_a_csv_its_rows(tmp_path: Path) -> None:
    array = tmp_path / "docs.json"
    array.write_text(json.dumps([doc("a"), doc("b"), {"_id": "bad"}], indent=2))
    assert DocumentStream(array).estimated_total() == 3
    csv = tmp_path / "docs.csv"
    csv.write_text("id,text\na,x\nb,y\n")
    assert DocumentStream(csv).estimated_total() == 2


def test_line_count_is_cheap_and_counts_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("a\nb\nc")
    assert records.count_lines(path) == 3
    path.write_text("a\nb\n")
    assert records.count_lines(path) == 2


def test_content_hash_covers_id_title_text_and_metadata_and_nothing_else() -> None:
    base = Document("a", "text", "title", {"k": 1, "j": "x"})
    assert content_hash(base) == content_hash(Document("a", "text", "title", {"j": "x", "k": 1}))
    assert len(content_hash(base)) == 32 and int(content_hash(base), 16) >= 0
    changed = [
        Document("b", "text", "title", {"k": 1, "j": "x"}),
        Document("a", "text!", "title", {"k": 1, "j": "x"}),
        Document("a", "text", "title!", {"k": 1, "j": "x"}),
        Document("a", "text", "title", {"k": 2, "j": "x"}),
    ]
    assert len({content_hash(d) for d in [base, *changed]}) == 5
    hashed = base.hashed()
    assert hashed.content_hash == content_hash(base) and hashed == base  # the hash is not compared
    assert hashed.to_json()["content_hash"] == hashed.content_hash and "content_hash" not in base.to_json()

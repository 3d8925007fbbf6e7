"""The lab's long-document benchmark: abstracts concatenated, relevant when any member is."""

from __future__ import annotations

import json
from pathlib import Path

from hybrid_rerank.connector.lab.long_docs import build, read_qrels


def write_source(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(20):
            handle.write(
                json.dumps({"_id": f"a{i}", "title": f"T{i}", "text": f"abstract number {i}"}) + "\n"
            )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n" for q in ("1", "2", "3"))
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\ta3\t1\n1\ta4\t1\n2\ta17\t1\n3\ta9\t1\n"
    )


def test_long_documents_hold_four_to_six_abstracts_and_inherit_their_relevance(tmp_path: Path) -> None:
    write_source(tmp_path / "src")
    counts = build(tmp_path / "src", tmp_path / "out", queries=2, documents=3)
    records = [json.loads(line) for line in (tmp_path / "out" / "corpus.jsonl").open()]
    assert counts["documents"] == len(records) == 3 and counts["queries"] == 2
    assert all(4 <= len(r["metadata"]["members"]) <= 6 for r in records)
    members = [m for r in records for m in r["metadata"]["members"]]
    assert len(members) == len(set(members)) and {"a3", "a4", "a17"} <= set(members)  # relevant ones kept
    for record in records:
        assert record["text"].split("\n\n") == [
            f"T{m[1:]}. abstract number {m[1:]}" for m in record["metadata"]["members"]
        ]
    owner = {m: r["_id"] for r in records for m in r["metadata"]["members"]}
    qrels = read_qrels(tmp_path / "out" / "qrels" / "test.tsv")
    assert qrels == {"1": {owner["a3"]: 1, owner["a4"]: 1}, "2": {owner["a17"]: 1}}  # query 3 not chosen
    with (tmp_path / "out" / "queries.jsonl").open() as handle:
        assert [json.loads(line)["_id"] for line in handle] == ["1", "2"]
    header = (tmp_path / "out" / "qrels" / "test.tsv").read_text().splitlines()[0]
    assert header == "query-id\tcorpus-id\tscore"

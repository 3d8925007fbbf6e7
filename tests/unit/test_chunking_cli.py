"""`index --passages` then `search --json` in-process: the hit says which passage matched, and an index
built with passages is not silently extended without them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_rerank.connector.cli import app
from hybrid_rerank.connector.errors import IndexMismatchError

runner = CliRunner()
FILLER = " ".join(f"Section {i} lists inventory codes and shipping dates." for i in range(40))
ANSWER = "Photosynthesis in chloroplasts converts sunlight into sugar."


def test_index_with_passages_then_search_names_the_matched_passage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RERANK_MODEL", "off")
    monkeypatch.setenv("LANGUAGE_GUARD", "false")
    source = tmp_path / "docs.jsonl"
    records = [
        {"_id": "long", "text": f"{FILLER} {ANSWER} {FILLER}"},
        {"_id": "short", "text": "Grilled steak rests before slicing."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["index", str(source), "--index", "idx", "--passages", "--passage-tokens", "64"]
    result = runner.invoke(app, [*args, "--passage-overlap", "16"])
    assert result.exit_code == 0, result.output
    assert "passage vectors (64/16 tokens)" in result.output

    result = runner.invoke(app, ["search", "how do plants turn light into sugar", "--index", "idx", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)["hits"]
    assert [h["id"] for h in hits].count("long") == 1
    best = next(h for h in hits if h["id"] == "long")
    start, end = best["passage"]["start"], best["passage"]["end"]
    assert ANSWER in best["text"][start:end] and end - start < len(best["text"]) / 3

    result = runner.invoke(app, ["index", str(source), "--index", "idx"])
    assert isinstance(result.exception, IndexMismatchError)
    assert "one vector per document" in str(result.exception)

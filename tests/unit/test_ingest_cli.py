"""`hybrid-rerank delete` and the index command's refusals, in-process (no model is loaded for these)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.cli import app
from hybrid_rerank.connector.cli.delete import ids_in_file
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import ConfigurationError, InvalidDocumentsError

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    store = EmbeddedBackend(tmp_path / "data", "idx")
    store.create_index("m", 4)
    docs = [Document(f"d{i}", f"text {i}") for i in range(4)]
    store.bulk_index(docs, np.eye(4, dtype=np.float32))
    return tmp_path / "data"


def test_delete_takes_ids_and_an_ids_file_and_says_how_many_existed(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_bytes(b"\xef\xbb\xbfd1\n\n  d2 \nmissing\n")
    result = runner.invoke(
        app, ["delete", "d0", "--ids-file", "ids.txt", "--index", "idx", "--batch-size", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "deleted 3 of 4 ids from embedded index 'idx' (1 not found)" in result.output
    assert list(EmbeddedBackend(data_dir, "idx").all_ids()) == ["d3"]


def test_delete_needs_ids_and_an_existing_index_and_ids_file(data_dir: Path) -> None:
    assert runner.invoke(app, ["delete", "--index", "idx"]).exit_code == 2
    result = runner.invoke(app, ["delete", "d1", "--index", "absent"])
    assert isinstance(result.exception, ConfigurationError) and "does not exist" in str(result.exception)
    with pytest.raises(ConfigurationError, match="ids file not found"):
        list(ids_in_file(data_dir / "nope.txt"))


def test_a_strict_index_run_refuses_a_bad_array_element_before_writing(
    data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"_id": "n1", "text": "new"}, {"_id": "n2", "text": ""}]))
    result = runner.invoke(app, ["index", str(path), "--index", "idx"])
    assert isinstance(result.exception, InvalidDocumentsError)
    assert f"{path}[1], line 1 (id 'n2'): empty text" in str(result.exception)
    assert sorted(EmbeddedBackend(data_dir, "idx").all_ids()) == ["d0", "d1", "d2", "d3"]
    result = runner.invoke(app, ["index", str(path), "--format", "xml"])
    assert result.exit_code == 2 and "--format must be one of" in result.output

"""The command line, in-process through typer's runner, and once through the installed console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_rerank.connector.cli import app
from hybrid_rerank.connector.errors import IndexMissingError, InvalidDocumentsError

runner = CliRunner()

RECORDS = [
    {
        "_id": "moon",
        "title": "Lunar phases",
        "text": "The moon shows phases as sunlight hits it.",
        "metadata": {"topic": "astronomy", "year": 2020},
    },
    {
        "_id": "steak",
        "title": "Resting meat",
        "text": "Rest a grilled steak for five minutes.",
        "metadata": {"topic": "cooking", "year": 2021},
    },
    {
        "_id": "bread",
        "title": "Baking",
        "text": "Bread dough rises as yeast ferments.",
        "metadata": {"topic": "cooking", "year": 2019},
    },
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cross_encoder_dir: Path) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RERANK_MODEL", str(tiny_cross_encoder_dir))
    monkeypatch.setenv("RERANK_MAX_LENGTH", "64")
    monkeypatch.setenv("RERANK_DEPTH", "2")
    for name in ("OPENSEARCH_URL", "REDIS_URL", "INDEX_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def corpus(folder: Path, lines: list[str] | None = None) -> Path:
    path = folder / "docs.jsonl"
    path.write_text("\n".join(lines or [json.dumps(r) for r in RECORDS]) + "\n", encoding="utf-8")
    return path


def test_index_then_search_as_json(env: Path) -> None:
    indexed = runner.invoke(app, ["index", str(corpus(env))])
    assert indexed.exit_code == 0, indexed.output
    assert "indexed 3 of 3 documents" in indexed.output

    found = runner.invoke(app, ["search", "how long to rest a steak", "--json", "-k", "2"])
    assert found.exit_code == 0, found.output
    result = json.loads(found.stdout)
    assert result["reranked"] is True
    assert len(result["hits"]) == 2
    assert set(result["hits"][0]["scores"]) == {"bm25", "vector", "fused", "rerank"}
    assert {"bm25", "knn", "fusion", "rerank", "total"} <= set(result["timings_ms"])


def test_search_filters_and_no_rerank(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    found = runner.invoke(
        app,
        [
            "search",
            "food",
            "--json",
            "--filter",
            "topic=cooking",
            "--filter",
            "year=2020..2021",
            "--no-rerank",
        ],
    )
    result = json.loads(found.stdout)
    assert [h["id"] for h in result["hits"]] == ["steak"]
    assert result["reranked"] is False and result["hits"][0]["scores"]["rerank"] is None


def test_search_table_for_people(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    shown = runner.invoke(app, ["search", "moon"])
    assert shown.exit_code == 0
    assert "Lunar phases" in shown.output and "rerank" in shown.output and "total" in shown.output


def test_bad_record_aborts_and_nothing_is_indexed(env: Path) -> None:
    lines = [json.dumps(RECORDS[0]), '{"_id": "broken", "text": ', json.dumps(RECORDS[1])]
    failed = runner.invoke(app, ["index", str(corpus(env, lines))])
    assert isinstance(failed.exception, InvalidDocumentsError)
    assert "line 2" in str(failed.exception)
    missing = runner.invoke(app, ["search", "moon"])
    assert isinstance(missing.exception, IndexMissingError)


def test_skip_invalid_reports_each_bad_record(env: Path) -> None:
    lines = [json.dumps(RECORDS[0]), '{"_id": "broken", "text": ', json.dumps(RECORDS[1]), '{"_id": "x"}']
    done = runner.invoke(app, ["index", str(corpus(env, lines)), "--skip-invalid"])
    assert done.exit_code == 0, done.output
    assert "line 2" in done.output and "line 4" in done.output
    assert "indexed 2 of 2 documents" in done.output and "2 skipped" in done.output


def test_bad_filter_is_a_usage_error(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    bad = runner.invoke(app, ["search", "moon", "--filter", "novalue"])
    assert bad.exit_code == 2
    assert "field=value" in bad.output


def test_info_hides_secrets(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:topsecret@127.0.0.1:6379/0")
    shown = runner.invoke(app, ["info"])
    assert shown.exit_code == 0
    assert "topsecret" not in shown.output and "***" in shown.output and "missing" in shown.output


def test_console_script_turns_errors_into_a_message_and_exit_code_2(env: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-c", "from hybrid_rerank.connector.cli import main; main()", "search", "moon"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
        check=False,
    )
    assert process.returncode == 2
    assert "error:" in process.stderr and "hybrid-rerank index" in process.stderr
    assert "Traceback" not in process.stderr


def test_pages_continue_where_the_last_one_ended(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    pages = [
        json.loads(runner.invoke(app, ["search", "food", "--json", "-k", "1", "--page", str(p)]).stdout)
        for p in (1, 2, 3)
    ]
    ids = [page["hits"][0]["id"] for page in pages]
    assert len(set(ids)) == 3
    assert [page["hits"][0]["rank"] for page in pages] == [1, 2, 3]


def test_batch_search_writes_one_result_per_query(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    queries = env / "queries.jsonl"
    queries.write_text(
        '{"_id": "q1", "text": "rest a steak"}\n{"_id": "q2", "text": "moon", "metadata": {}}\n'
    )
    done = runner.invoke(app, ["batch-search", str(queries), "--out", str(env / "out.jsonl"), "-k", "2"])
    assert done.exit_code == 0, done.output
    results = [json.loads(line) for line in (env / "out.jsonl").read_text().splitlines()]
    assert [r["query_id"] for r in results] == ["q1", "q2"]
    assert all(r["reranked"] and len(r["hits"]) == 2 for r in results)
    assert results[0]["hits"][0]["id"] == "steak"


def test_batch_search_names_a_bad_query_line(env: Path) -> None:
    runner.invoke(app, ["index", str(corpus(env))])
    queries = env / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "moon"}\n{"_id": "q2"}\n')
    failed = runner.invoke(app, ["batch-search", str(queries), "--out", str(env / "out.jsonl")])
    assert failed.exception is not None and "line 2" in str(failed.exception)


def test_eval_prints_a_json_report_and_writes_a_chart(env: Path) -> None:
    from hybrid_rerank.connector.lab.demo import demo_data_dir

    done = runner.invoke(
        app,
        [
            "eval",
            str(demo_data_dir()),
            "--json",
            "--max-queries",
            "5",
            "--rerank-depth",
            "3",
            "--out",
            str(env / "eval"),
        ],
    )
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["queries"] == 5 and "hybrid-zscore+rerank@3" in report["systems"]
    assert (env / "eval" / "eval-demo_data-test.png").stat().st_size > 0
    assert (env / "eval" / "eval-demo_data-test.json").is_file()


def test_eval_table_through_a_pipe_keeps_each_system_name_on_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hybrid_rerank.connector.lab.demo import demo_data_dir

    monkeypatch.setenv("RERANK_INTERPOLATION", "0.4")  # adds the longest name: "... interpolated w=0.4"
    script = Path(sys.executable).with_name("hybrid-rerank")
    assert script.is_file(), f"the console script is not installed beside {sys.executable}"
    process = subprocess.run(
        [str(script), "eval", str(demo_data_dir()), "--max-queries", "4", "--rerank-depth", "3"],
        capture_output=True,  # stdout and stderr are pipes, as in a log or CI
        text=True,
        env={**os.environ},
        timeout=600,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    lines = process.stdout.splitlines()
    long_name = "hybrid-zscore+rerank@3 interpolated w=0.4"
    row = next((line for line in lines if long_name in line), None)
    assert row is not None, process.stdout
    assert len(re.findall(r"│ +[01]\.\d{4} ", row)) == 5 and "…" not in process.stdout  # 5 whole metrics
    assert any(line.startswith("│ hybrid-zscore+rerank@3 ") for line in lines)
    assert "report: eval-results/eval-demo_data-test.json" in process.stdout
    assert (env / "eval-results" / "eval-demo_data-test.png").stat().st_size > 0
    # Progress lines in the log carry a rate and an ETA.
    assert "ETA" in process.stderr and "first stage: 4/4 queries" in process.stderr


def test_bench_rerank_writes_its_report_and_a_whole_table(env: Path, tiny_cross_encoder_dir: Path) -> None:
    from hybrid_rerank.connector.lab.demo import demo_data_dir

    done = runner.invoke(
        app,
        [
            "bench",
            "rerank",
            str(demo_data_dir()),
            "--queries",
            "2",
            "--depth",
            "3",
            "--quality-depth",
            "2",
            "--max-length",
            "32",
            "--out",
            str(env / "bench"),
        ],
    )
    assert done.exit_code == 0, done.output
    report = json.loads((env / "bench" / "bench-rerank.json").read_text(encoding="utf-8"))
    assert report["benchmark"] == "rerank" and report["trained_model"] is True and report["pairs"] == 6
    names = [row["name"] for row in report["results"]]
    assert names[0] == "baseline CrossEncoder.predict fp32" and "ours onnx int8" in names
    assert (env / "bench" / "bench-rerank.png").stat().st_size > 0
    for name in names:  # each variant on its own table line, whole
        assert any(line.startswith(f"│ {name} ") for line in done.stdout.splitlines()), done.stdout


def test_brackets_in_documents_and_errors_are_printed_as_text(tmp_path: Path) -> None:
    """Rich would read `[1]` or `[bold]` in a document or an error as markup and drop it (or fail)."""
    path = tmp_path / "docs.jsonl"
    record = {"_id": "cite", "title": "[bold]Moon[/bold] phases [1]", "text": "The moon [2] shows phases."}
    path.write_text(json.dumps(record) + "\n" + '{"_id": "[x]", "text": ""}\n', encoding="utf-8")
    env = {"DATA_DIR": str(tmp_path / "data"), "RERANK_MODEL": "none"}
    indexed = runner.invoke(app, ["index", str(path), "--skip-invalid"], env=env)
    assert indexed.exit_code == 0, indexed.output
    assert "(id '[x]'): empty text" in indexed.output
    searched = runner.invoke(app, ["search", "moon [phases]", "-k", "1"], env=env)
    assert searched.exit_code == 0, searched.output
    assert "[bold]Moon[/bold] phases [1]" in searched.output and "'moon [phases]'" in searched.output

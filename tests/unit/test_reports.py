"""Reports: one helper writes the JSON, the chart and the table; tables keep names whole on any width."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from hybrid_rerank.connector.lab.bench_celery import CeleryBenchReport
from hybrid_rerank.connector.lab.bench_rerank import RerankBenchReport, RerankRow, Variant
from hybrid_rerank.connector.lab.bench_stack import IndexBenchReport
from hybrid_rerank.connector.lab.evaluation import EvalReport
from hybrid_rerank.connector.lab.reports import Report, write_report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
LONG = "hybrid-zscore+rerank@30 interpolated w=0.4"
METRICS = {"ndcg@10": 0.5, "mrr@10": 0.6, "recall@100": 0.9, "hit@1": 0.4, "hit@10": 0.8}


def eval_report() -> EvalReport:
    return EvalReport(
        dataset="/data/scifact",
        split="test",
        queries=300,
        documents=5183,
        backend="embedded",
        embedding_model="all-MiniLM-L6-v2",
        rerank_model="scifact-minilm-l6-reranker-int8",
        reranker="onnx int8",
        rerank_depth=30,
        rerank_weight=0.4,
        recall_depth=100,
        rerank_failures=("q7: timed out",),
        rerank_skipped=None,
        language_guarded=0,
        embedding_cache_hit=True,
        index_built=False,
        seconds=12.5,
        systems={"bm25": METRICS, "hybrid-zscore+rerank@30": METRICS, LONG: METRICS},
    )


def rerank_report() -> RerankBenchReport:
    def row(name: str, backend: str, speedup: float) -> RerankRow:
        return RerankRow(
            variant=Variant(name, backend, 256),
            description=f"{backend} runner",
            pairs_per_s=100.0 * speedup,
            latency_ms={"p50": 10.0, "p95": 12.0, "mean": 10.5, "n": 20.0},
            peak_rss_mib=512.0,
            ndcg={"rerank": 0.6, "interpolated": 0.65, "first_stage": 0.55},
            max_score_diff=0.0,
            score_correlation=1.0,
            speedup=speedup,
            ndcg_delta=0.0,
        )

    return RerankBenchReport(
        machine="x86_64, 2 cores, Python 3.11.9",
        model="/models/reranker",
        dataset="/data/scifact",
        queries=20,
        candidates_per_query=100,
        pairs=2000,
        quality_depth=30,
        interpolation_weight=0.4,
        results=(
            row("baseline CrossEncoder.predict fp32", "baseline", 1.0),
            row("ours default (onnx-int8, 256)", "onnx-int8", 3.2),
        ),
        trained_model=True,
    )


def rendered(table_owner: Report, width: int) -> list[str]:
    stream = io.StringIO()
    # As write_report prints it: a table wider than the console runs past the edge, never loses columns.
    Console(file=stream, width=width, force_terminal=False).print(table_owner.table(), crop=False)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 200])
def test_eval_table_keeps_long_system_names_on_one_line(width: int) -> None:
    lines = rendered(eval_report(), width)
    assert any(LONG in line and line.count("0.") == 6 for line in lines), "\n".join(lines)  # w=0.4, 5 figures
    assert any("bm25" in line and "0.5000" in line and "0.8000" in line for line in lines)


@pytest.mark.parametrize("width", [80, 200])
def test_rerank_bench_table_never_cuts_variant_names(width: int) -> None:
    lines = rendered(rerank_report(), width)
    text = "\n".join(lines)
    assert "…" not in text, text
    for name in ("baseline CrossEncoder.predict fp32", "ours default (onnx-int8, 256)"):
        assert any(name in line for line in lines), text
    # Figures are whole too, on their variant's line.
    assert any(
        line.startswith("│ ours default") and "x3.20" in line and "0.6000 (+0.0000)" in line for line in lines
    )


def test_write_report_writes_json_and_chart_and_prints_the_table(tmp_path: Path) -> None:
    stream = io.StringIO()
    report = eval_report()
    json_path, png_path = write_report(
        report, tmp_path / "out", "eval-scifact-test", Console(file=stream, width=200), as_json=False
    )
    assert json_path == tmp_path / "out" / "eval-scifact-test.json"
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written == report.to_json()
    assert written["rerank_failures"] == ["q7: timed out"] and written["rerank_weight"] == 0.4
    assert written["systems"][LONG] == METRICS
    assert png_path.read_bytes().startswith(b"\x89PNG")
    shown = stream.getvalue()
    assert LONG in shown and "12s; corpus embeddings cached" in shown and str(json_path) in shown


def test_write_report_prints_only_json_with_json(tmp_path: Path) -> None:
    stream = io.StringIO()
    report = rerank_report()
    write_report(report, tmp_path, "bench-rerank", Console(file=stream, width=200), as_json=True)
    printed = json.loads(stream.getvalue())  # nothing but the JSON
    assert printed == json.loads((tmp_path / "bench-rerank.json").read_text(encoding="utf-8"))
    assert printed["trained_model"] is True
    assert printed["results"][1]["name"] == "ours default (onnx-int8, 256)"
    assert printed["results"][1]["ndcg@10"]["interpolated"] == 0.65


def test_celery_report_keeps_samples_in_the_file_not_on_stdout(tmp_path: Path) -> None:
    report = CeleryBenchReport(
        machine="m",
        model="reranker",
        queue="rerank.reranker",
        dataset="demo",
        queries=3,
        candidates_per_query=30,
        max_length=256,
        in_process_ms={"p50": 10.0, "p95": 12.0, "mean": 10.0, "n": 3.0},
        celery_ms={"p50": 13.0, "p95": 18.0, "mean": 14.0, "n": 3.0},
        samples_in_process_ms=(9.0, 10.0, 11.0),
        samples_celery_ms=(12.0, 13.0, 17.0),
    )
    stream = io.StringIO()
    write_report(report, tmp_path, "bench-celery", Console(file=stream, width=200), as_json=True)
    printed = json.loads(stream.getvalue())
    written = json.loads((tmp_path / "bench-celery.json").read_text(encoding="utf-8"))
    assert "samples_ms" not in printed
    assert written["samples_ms"] == {"in_process": [9.0, 10.0, 11.0], "celery": [12.0, 13.0, 17.0]}
    assert written["overhead_ms"] == {"p50": 3.0, "p95": 6.0, "mean": 4.0}
    assert written["paired_overhead_ms"]["p50"] == 3.0  # median of 3, 3, 6
    assert written["ratio"]["p50"] == pytest.approx(1.3)


def test_index_report_takes_the_best_round_of_each_side(tmp_path: Path) -> None:
    report = IndexBenchReport(
        machine="m",
        dataset="/data/scifact",
        documents=1000,
        rounds=2,
        ours_seconds=(2.0, 1.0),
        raw_seconds=(1.5, 2.5),
    )
    written = report.to_json()
    published = json.loads((RESULTS / "bench-index.json").read_text(encoding="utf-8"))
    assert list(written) == list(published)
    assert written["ours_docs_per_s"] == 1000.0 and written["raw_streaming_bulk_docs_per_s"] == 1000 / 1.5
    assert written["ratio"] == 1.5 and written["ours_seconds"] == [2.0, 1.0]
    lines = rendered(report, 60)
    assert any(line.startswith("│ ours (bulk_index + commit) ") and "x1.50" in line for line in lines)
    report.plot(tmp_path / "index.png")
    assert (tmp_path / "index.png").stat().st_size > 0

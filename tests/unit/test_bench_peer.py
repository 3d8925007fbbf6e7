"""`bench peer`'s own logic: engine choice, round order, per-round ratios, the margin, the documents cut to
the window, the peer's model folders and its setup script's message when the package index is unreachable.
The bench itself (Infinity's install and its engines) is not run here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from hybrid_rerank.connector.lab.bench_peer import (
    Engine,
    EngineResult,
    PeerBenchReport,
    engine_results,
    margin,
    parse_engines,
    round_order,
    round_ratios,
    score_agreement,
)
from hybrid_rerank.connector.lab.peer_infinity import SETUP_SCRIPT, cut_to_window, run_peer, with_max_length


def test_engines_put_the_baseline_first_then_ours_then_the_peer_and_reject_unknown_names() -> None:
    engines = parse_engines("onnx-int8, torch", "torch,optimum,http")
    assert [(e.side, e.kind) for e in engines] == [
        ("baseline", "baseline"),
        ("ours", "onnx-int8"),
        ("ours", "torch"),
        ("peer", "torch"),
        ("peer", "optimum"),
        ("peer", "http"),
    ]
    assert len({e.name for e in engines}) == len(engines)
    with pytest.raises(ValueError, match="onnx-int8, onnx, torch, torch-bf16"):
        parse_engines("onnx-int4", "torch")
    with pytest.raises(ValueError, match="torch, optimum, http"):
        parse_engines("onnx-int8", "ctranslate2")
    with pytest.raises(ValueError, match="at least one"):
        parse_engines("onnx-int8", "")
    with pytest.raises(ValueError, match="twice"):
        parse_engines("torch,torch", "torch")


def test_rounds_rotate_so_each_engine_takes_each_place_once() -> None:
    engines = parse_engines("onnx-int8", "torch,optimum")
    orders = [round_order(engines, r) for r in range(len(engines))]
    assert orders[0] == engines
    for order in orders:
        assert sorted(e.name for e in order) == sorted(e.name for e in engines)
    for place in range(len(engines)):
        assert {order[place].name for order in orders} == {e.name for e in engines}


def test_ratios_pair_each_round_with_the_baseline_of_the_same_round() -> None:
    ratios = round_ratios({"base": [10.0, 5.0], "ours": [40.0, 10.0]}, "base")
    assert ratios == {"base": [1.0, 1.0], "ours": [4.0, 2.0]}
    with pytest.raises(ValueError, match="rounds"):
        round_ratios({"base": [10.0, 5.0], "ours": [40.0]}, "base")


def result(engine: Engine, length: int, pairs: list[float], ratios: list[float]) -> EngineResult:
    return EngineResult(engine, length, engine.kind, pairs, ratios, 100.0, 0.0, 1.0)


def test_the_margin_is_ours_best_over_the_peers_best_by_median_ratio(tmp_path: Path) -> None:
    base, ours, peer_torch, peer_int8 = parse_engines("onnx-int8", "torch,optimum")
    results = (
        result(base, 128, [10.0, 12.0, 11.0], [1.0, 1.0, 1.0]),
        result(ours, 128, [60.0, 50.0, 55.0], [6.0, 4.0, 5.0]),
        result(peer_torch, 128, [11.0, 12.0, 11.0], [1.1, 1.0, 1.0]),
        result(peer_int8, 128, [30.0, 24.0, 33.0], [3.0, 2.0, 3.0]),
        result(base, 256, [5.0, 5.0, 5.0], [1.0, 1.0, 1.0]),
        result(ours, 256, [9.0, 9.0, 9.0], [1.8, 1.8, 1.8]),
        result(peer_int8, 256, [10.0, 10.0, 10.0], [2.0, 2.0, 2.0]),
    )
    assert results[1].median_pairs_per_s == 55.0 and results[1].median_ratio == 5.0
    at_128 = margin(results, 128)
    assert at_128 is not None
    assert (at_128["ours"], at_128["peer"]) == (ours.name, peer_int8.name)
    assert at_128["ours_over_peer"] == pytest.approx(5.0 / 3.0)
    at_256 = margin(results, 256)
    assert at_256 is not None and at_256["ours_over_peer"] == pytest.approx(0.9)  # behind is reported too
    assert margin(results, 512) is None

    report = PeerBenchReport("x86_64, 2 cores", {}, "model", "scifact", 3, 100, 300, 3, results)
    saved = report.to_json()
    assert [m["max_length"] for m in saved["margins"]] == [128, 256]
    assert saved["results"][1]["vs_baseline_rounds"] == [6.0, 4.0, 5.0]
    assert saved["results"][1]["vs_baseline"] == 5.0
    assert "x1.67 infinity optimum int8" in str(report.table().caption)
    report.plot(tmp_path / "peer.png")
    assert (tmp_path / "peer.png").stat().st_size > 0


def test_score_agreement_compares_the_same_pairs() -> None:
    diff, correlation = score_agreement([[1.0, 2.0], [3.0]], [[1.0, 2.5], [3.0]])
    assert diff == pytest.approx(0.5) and 0.9 < correlation <= 1.0
    with pytest.raises(ValueError, match="scores"):
        score_agreement([[1.0, 2.0]], [[1.0, 2.0], [3.0]])


def test_documents_are_cut_to_the_window_at_a_whole_word() -> None:
    from transformers import AutoTokenizer

    from hybrid_rerank.workers.runtime.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2").location)
    query = "does vitamin d prevent fractures"
    short = "Vitamin D and bone health."
    words = ["antidisestablishmentarianism", "electroencephalographically", "bone", "fractures"] * 40
    long = " ".join(words)
    cut_short, cut_long = cut_to_window(tokenizer, query, [short, long], 32)
    assert cut_short == short
    assert long.startswith(cut_long) and len(cut_long) < len(long)
    assert cut_long.split()[-1] in words  # no word is left half
    fitted = tokenizer(query, cut_long)["input_ids"]
    truncated = tokenizer(query, long, truncation="longest_first", max_length=32)["input_ids"]
    assert len(fitted) <= 32
    assert fitted[:-1] == truncated[: len(fitted) - 1]  # the same tokens the window would keep, up to [SEP]


def test_each_window_gets_a_folder_copy_whose_tokenizer_stops_there(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    settings = {"model_max_length": 512, "do_lower_case": True}
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    (source / "config.json").write_text("{}")
    copy = with_max_length(source, tmp_path / "model-128", 128)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    assert config == {"model_max_length": 128, "do_lower_case": True}
    assert json.loads((source / "tokenizer_config.json").read_text())["model_max_length"] == 512
    assert (copy / "config.json").is_file()
    (copy / "config.json").write_text('{"kept": true}')
    assert with_max_length(source, tmp_path / "model-128", 128) == copy  # made once, then reused
    assert json.loads((copy / "config.json").read_text()) == {"kept": True}


def test_an_unknown_peer_engine_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="torch, optimum, http"):
        run_peer(tmp_path / "python", "tensorrt", tmp_path, [], [], batch_size=8, port=1, timeout_s=1)


def test_the_setup_script_says_so_when_the_package_index_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PEER_INFINITY_DIR": str(tmp_path / "peer"),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": f"http://127.0.0.1:{port}/simple",
    }
    done = subprocess.run([str(SETUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "package index" in done.stderr and "unreachable" in done.stderr
    assert not (tmp_path / "peer" / "venv").exists()  # nothing half-made to trip the next run


def test_a_report_after_some_rounds_counts_only_the_rounds_every_engine_finished() -> None:
    base, ours, peer = parse_engines("onnx-int8", "optimum")

    def run(pairs_per_s: float, scores: list[list[float]]) -> dict[str, object]:
        return {"pairs_per_s": pairs_per_s, "scores": scores, "description": "d", "peak_rss_mib": 1.0}

    scores = [[0.5, 1.5]]
    measured = {
        (base.name, 128): [run(10.0, scores), run(20.0, scores)],
        (ours.name, 128): [run(50.0, scores), run(60.0, scores)],
        (peer.name, 128): [run(30.0, [[0.5, 1.0]]), run(20.0, scores), run(99.0, scores)],  # a round ahead
    }
    results = engine_results([base, ours, peer], [128], measured, rounds_done=2)
    assert [r.ratios for r in results] == [[1.0, 1.0], [5.0, 3.0], [3.0, 1.0]]
    assert results[2].pairs_per_s == [30.0, 20.0]
    assert results[2].max_score_diff == pytest.approx(0.5)  # the first round's scores against the baseline's

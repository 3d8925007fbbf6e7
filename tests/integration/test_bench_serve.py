"""`hybrid-rerank bench serve` end to end: a real `hybrid-rerank serve` process on loopback (embedded backend,
the tiny cross-encoder in-process), the real command line, 2 clients x 3 s. The bench's counts are checked
against the service's own request counters from /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hybrid_rerank.connector.lab.bench_serve_report import ALL, ROUTES
from hybrid_rerank.connector.lab.demo import demo_data_dir
from tests.service_process import start_service

pytestmark = pytest.mark.integration

QUERIES, ADDED = 10, 6


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "hybrid_rerank.connector.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def served_counts(url: str) -> dict[str, int]:
    """POST requests the service answered per route, from its Prometheus counters."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, int] = {}
    pattern = r"^hybrid_rerank_http_requests_total\{([^}]*)\} ([0-9.e+]+)$"
    for labels, value in re.findall(pattern, text, flags=re.MULTILINE):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("method") == "POST":
            counts[fields["route"]] = counts.get(fields["route"], 0) + int(float(value))
    return counts


def test_bench_serve_against_a_real_service(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    unset = {"OPENSEARCH_URL", "REDIS_URL", "PYTHONPATH", "API_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "INDEX_NAME": "bench-serve",
            "RERANK_MODEL": str(tiny_cross_encoder_dir),
            "RERANK_MAX_LENGTH": "64",
            "EMBEDDING_QUERY_CACHE": "0",
            "HF_HUB_OFFLINE": "1",
        }
    )
    indexed = cli(env, tmp_path, "index", str(demo_data_dir() / "corpus.jsonl"))
    assert indexed.returncode == 0, indexed.stderr
    with start_service(env, cwd=tmp_path) as service:
        out = tmp_path / "out"
        ran = cli(
            env,
            tmp_path,
            "bench",
            "serve",
            "--url",
            service.url,
            "--clients",
            "1,2",
            "--seconds",
            "3",
            "--queries",
            str(QUERIES),
            "--depth",
            "10",
            "--added-latency-queries",
            str(ADDED),
            "--out",
            str(out),
        )
        assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{service.log()[-3000:]}"
        served = served_counts(service.url)

    report = json.loads((out / "bench-serve.json").read_text(encoding="utf-8"))
    assert (out / "bench-serve.png").read_bytes().startswith(b"\x89PNG")
    assert report["target"] == service.url and report["queries"] == QUERIES
    assert [level["clients"] for level in report["levels"]] == [1, 2]
    sent_per_route = dict.fromkeys(ROUTES, 0)
    for level in report["levels"]:
        assert 3.0 <= level["elapsed_s"] < 3.0 + 30.0
        routes = level["routes"]
        assert list(routes)[-1] == ALL and set(routes) <= {*ROUTES, ALL}
        for name, stats in routes.items():
            errors = sum(stats["errors"].values())
            assert stats["sent"] == stats["ok"] + errors + stats["lost_total"], (level["clients"], name)
            assert stats["lost_total"] == 0 and stats["server_errors_5xx"] == 0 and errors == 0, stats
            assert stats["ok"] > 0 and stats["latency_ms"]["n"] == stats["ok"]
            assert stats["latency_ms"]["p50"] <= stats["latency_ms"]["p95"] <= stats["latency_ms"]["p99"]
            assert stats["throughput_rps"] == pytest.approx(stats["ok"] / level["elapsed_s"])
        assert routes[ALL]["sent"] == sum(stats["sent"] for name, stats in routes.items() if name != ALL)
        assert routes["/search"]["fallbacks"] == {}  # the in-process tiny model reranks every search
        assert routes[ALL]["reranked"] == routes[ALL]["ok"]
        for route in ROUTES:
            sent_per_route[route] += routes[route]["sent"] if route in routes else 0
    assert all(sent_per_route.values()), sent_per_route  # the default mix sent every route

    # The service saw exactly what the bench says it sent, plus the bench's own preparation: one search per
    # query for its candidates, 2 warm-up requests per route, and the added-latency phase (2 warm-up + 6).
    assert served["/rerank"] == sent_per_route["/rerank"] + 2
    assert served["/v1/rerank"] == sent_per_route["/v1/rerank"] + 2
    assert served["/search"] == sent_per_route["/search"] + QUERIES + 2 + 2 + ADDED

    added = report["added_latency"]
    assert added["queries"] == ADDED and added["rerank_path"] == "in-process"
    assert added["reranked"] == {"in_process": ADDED, "service": ADDED}
    for side in ("in_process_ms", "service_ms", "in_process_pipeline_ms", "service_pipeline_ms"):
        assert added[side]["n"] == ADDED and added[side]["p50"] > 0
    assert added["difference_ms"]["p50"] == pytest.approx(
        added["service_ms"]["p50"] - added["in_process_ms"]["p50"]
    )
    assert added["outside_pipeline_ms"]["p50"] > 0  # the wall time holds the pipeline's own total
    assert "added latency, 1 client, 6 queries" in " ".join(ran.stdout.split())
    assert "clients 2 (level 2/2)" in ran.stderr and "ETA" in ran.stderr  # progress with a rate and an ETA

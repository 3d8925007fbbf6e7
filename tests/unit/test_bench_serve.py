"""`bench serve`'s pure parts (percentiles, reading replies, aggregation, the report, the plan's checks), and
one load level against a small real HTTP server on loopback that answers slowly, drops connections and fails
on purpose, so lost requests are counted honestly and the level ends by itself."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench_serve import ProgressLines, Tick, Workload, read_reply, run_level
from hybrid_rerank.connector.lab.bench_serve_plan import (
    ServeBenchPlan,
    check_target,
    parse_clients,
    parse_mix,
    read_queries,
)
from hybrid_rerank.connector.lab.bench_serve_report import (
    ALL,
    AddedLatency,
    Outcome,
    ServeBenchReport,
    aggregate,
    percentiles,
)
from hybrid_rerank.connector.lab.demo import demo_data_dir
from hybrid_rerank.connector.lab.reports import write_report

SEARCH_OK = json.dumps({"hits": [{"id": "a"}], "reranked": True, "rerank_note": None}).encode()
SEARCH_FALLBACK = json.dumps(
    {"hits": [], "reranked": False, "rerank_note": "rerank deadline passed"}
).encode()


def test_percentiles_by_hand() -> None:
    # sorted 10 20 30 40: p95 at 0.95 * 3 = 2.85 -> 30 + 0.85 * 10; p99 at 2.97 -> 30 + 0.97 * 10
    assert percentiles([40.0, 10.0, 30.0, 20.0]) == pytest.approx(
        {"p50": 25.0, "p95": 38.5, "p99": 39.7, "mean": 25.0, "max": 40.0, "n": 4.0}
    )
    assert percentiles([]) is None


def test_read_reply_judges_each_route_by_what_it_promises() -> None:
    assert read_reply("/search", 200, SEARCH_OK, 5.0) == Outcome("/search", 5.0, 200)
    fallback = read_reply("/search", 200, SEARCH_FALLBACK, 5.0)
    assert fallback.ok and fallback.fallback == "rerank deadline passed"
    silent = read_reply("/search", 200, b'{"hits": [], "reranked": false}', 1.0)
    assert silent.ok and silent.fallback == "reranked: false without a note"
    server_error = read_reply("/search", 503, b'{"error": "engine down"}', 1.0)
    assert server_error.detail == '{"error": "engine down"}'
    assert not server_error.ok and server_error.fallback is None  # an error on /search, not a fallback
    assert read_reply("/rerank", 429, b"{}", 1.0).fallback == "HTTP 429"
    assert read_reply("/v1/rerank", 500, b"{}", 1.0).fallback == "HTTP 500"
    assert read_reply("/v1/rerank", 422, b"{}", 1.0).fallback is None
    assert read_reply("/rerank", 200, b'[{"index": 0, "score": 0.5}]', 1.0).ok
    assert read_reply("/v1/rerank", 200, b'{"results": [{"index": 0}]}', 1.0).ok
    assert read_reply("/v1/rerank", 200, b'{"results": []}', 1.0).invalid == "no scores"
    assert read_reply("/rerank", 200, b"<html>", 1.0).invalid == "not JSON"
    assert read_reply("/search", 200, b'{"query": "x"}', 1.0).invalid == "no hits list"


def outcomes_by_hand() -> list[Outcome]:
    return [
        Outcome("/search", 10.0, 200),
        Outcome("/search", 20.0, 200, fallback="rerank deadline passed"),
        Outcome("/search", 9000.0, 503, detail="engine down"),  # its latency never enters the percentiles
        Outcome("/search", 30000.0, None, lost="timeout"),
        Outcome("/rerank", 40.0, 200),
        Outcome("/rerank", 2.0, 429, fallback="HTTP 429"),
        Outcome("/rerank", 1.0, None, lost="connection (ReadError)"),
        Outcome("/v1/rerank", 50.0, 200, invalid="no scores"),
    ]


def test_aggregate_counts_add_up_per_route_and_in_all() -> None:
    level = aggregate(4, 2.0, 2.5, outcomes_by_hand())
    assert list(level.routes) == ["/search", "/rerank", "/v1/rerank", ALL]
    search, rerank, v1, total = (level.routes[name] for name in level.routes)
    assert (search.sent, search.ok, search.errors, search.lost) == (4, 2, {"503": 1}, {"timeout": 1})
    assert search.fallbacks == {"rerank deadline passed": 1} and search.server_errors == 1
    assert search.error_examples == {"503": "engine down"}
    assert (
        search.latency_ms is not None and search.latency_ms["p50"] == 15.0 and search.latency_ms["max"] == 20
    )
    assert search.throughput_rps == pytest.approx(2 / 2.5)  # ok replies over the wall time with the drain
    assert search.reranked == 1 and search.reranked_rps == pytest.approx(1 / 2.5)  # the fallback is not
    assert (rerank.ok, rerank.errors, rerank.lost, rerank.fallbacks) == (
        1,
        {"429": 1},
        {"connection (ReadError)": 1},
        {"HTTP 429": 1},
    )
    assert (v1.ok, v1.errors, v1.latency_ms) == (0, {"invalid reply: no scores": 1}, None)
    for stats in level.routes.values():
        assert stats.sent == stats.ok + sum(stats.errors.values()) + sum(stats.lost.values()), stats.route
        assert stats.answered == stats.sent - sum(stats.lost.values())
    assert (total.sent, total.ok, total.reranked, total.server_errors) == (8, 3, 2, 1)
    assert rerank.reranked == rerank.ok == 1 and v1.reranked == 0
    assert total.lost == {"connection (ReadError)": 1, "timeout": 1}
    assert total.fallbacks == {"rerank deadline passed": 1, "HTTP 429": 1}


def added_latency() -> AddedLatency:
    return AddedLatency(
        "Celery workers",
        in_process_ms=(100.0, 110.0, 120.0, 130.0),
        service_ms=(104.0, 113.0, 125.0, 200.0),
        reranked_in_process=4,
        reranked_service=4,
        service_errors={},
        in_process_pipeline_ms=(99.0, 109.0, 119.0, 129.0),
        service_pipeline_ms=(101.0, 110.0, 120.0, 190.0),
    )


def test_added_latency_is_service_minus_in_process_of_each_quantile_and_per_query() -> None:
    summary = added_latency().summary()
    local, served = percentiles([100.0, 110.0, 120.0, 130.0]), percentiles([104.0, 113.0, 125.0, 200.0])
    assert local is not None and served is not None
    assert summary["difference_ms"] == pytest.approx(
        {"p50": served["p50"] - local["p50"], "p95": served["p95"] - local["p95"]}
    )
    assert summary["paired_difference_ms"]["p50"] == pytest.approx(4.5)  # of 4, 3, 5, 70
    assert summary["paired_difference_ms"]["max"] == 70.0
    # wall less the service's own pipeline total: 3, 3, 5, 10
    assert summary["outside_pipeline_ms"]["p50"] == pytest.approx(4.0)
    assert summary["service_pipeline_ms"]["max"] == 190.0 and summary["in_process_pipeline_ms"]["n"] == 4


def serve_report(added: AddedLatency | None) -> ServeBenchReport:
    one = aggregate(1, 2.0, 2.0, [Outcome("/search", 10.0, 200), Outcome("/rerank", 30.0, 200)])
    many = aggregate(20, 2.0, 2.4, outcomes_by_hand())
    return ServeBenchReport(
        machine="x86_64, 2 cores",
        target="http://127.0.0.1:9600",
        dataset="scifact",
        queries=100,
        candidates_per_rerank=30,
        mix={"/search": 6.0, "/rerank": 2.0, "/v1/rerank": 2.0},
        request_timeout_s=30.0,
        stack={"backend": "http://127.0.0.1:9200", "rerank": "redis://127.0.0.1:6379/0"},
        levels=(one, many),
        added_latency=added,
        notes=("caches off",),
    )


def test_report_json_table_and_chart(tmp_path: Path) -> None:
    report = serve_report(added_latency())
    stream = io.StringIO()
    json_path, png_path = write_report(
        report, tmp_path, "bench-serve", Console(file=stream, width=100), False
    )
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written == report.to_json()
    assert [level["clients"] for level in written["levels"]] == [1, 20]
    search = written["levels"][1]["routes"]["/search"]
    assert (search["sent"], search["ok"], search["lost_total"], search["server_errors_5xx"]) == (4, 2, 1, 1)
    assert (search["reranked"], search["reranked_rps"]) == (1, pytest.approx(1 / 2.4))
    assert written["added_latency"]["samples_ms"]["service"] == [104.0, 113.0, 125.0, 200.0]
    assert written["added_latency"]["reranked"] == {"in_process": 4, "service": 4}
    assert "samples_ms" not in report.printed_json()["added_latency"]
    assert png_path.read_bytes().startswith(b"\x89PNG")
    shown = stream.getvalue()
    lines = shown.splitlines()
    assert any("/search" in line and "503: 1" in line and "timeout: 1" in line for line in lines), shown
    assert any("rerank deadline passed: 1" in line for line in lines)  # whole, not cut, on a narrow console
    flat = " ".join(shown.split())
    assert "added latency, 1 client, 4 queries, rerank Celery workers" in flat
    assert "the service's pipeline p50 115.0 ms (in-process 114.0), outside it per query p50 4.0 ms" in flat


def test_report_without_added_latency_still_plots(tmp_path: Path) -> None:
    report = serve_report(None)
    report.plot(tmp_path / "serve.png")
    assert report.to_json()["added_latency"] is None and report.added_latency_line() is None
    assert (tmp_path / "serve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9600", "http://localhost:8000/", "http://[::1]:80", "http://127.3.2.1"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert check_target(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com", "https://192.168.1.2"])
def test_other_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"refusing to load .*--allow-remote"):
        check_target(url)
    assert check_target(url, allow_remote=True) == url


def test_plan_bounds() -> None:
    assert parse_clients("1,5,20,50") == (1, 5, 20, 50)
    for bad in ("0", "201", "5,x", ""):
        with pytest.raises(ConfigurationError, match="--clients"):
            parse_clients(bad)
    assert parse_mix("search=6,rerank=2,v1-rerank=0") == {"/search": 6.0, "/rerank": 2.0}
    for bad in ("search=0", "nope=1", "search=-1", "search"):
        with pytest.raises(ConfigurationError, match="--mix"):
            parse_mix(bad)
    with pytest.raises(ConfigurationError, match="--seconds"):
        ServeBenchPlan("http://127.0.0.1:1", Path("."), (1,), 601.0, {"/search": 1.0})
    with pytest.raises(ConfigurationError, match="--url"):
        check_target("127.0.0.1:8000")


def test_read_queries_are_distinct_seeded_and_cut() -> None:
    first = read_queries(demo_data_dir(), 10, seed=1)
    assert len(first) == len(set(first)) == 10
    assert first == read_queries(demo_data_dir(), 10, seed=1)
    assert first != read_queries(demo_data_dir(), 10, seed=2)
    assert len(read_queries(demo_data_dir(), 1000, seed=1)) == 32  # every demo query, once


def test_workload_bodies_and_mix() -> None:
    workload = Workload(("q0", "q1"), (("a", "b"), ("c",)), {"/search": 3.0, "/v1/rerank": 1.0}, top_n=5)
    assert workload.body("/search", 0) == {"query": "q0"}
    assert workload.body("/rerank", 1) == {"query": "q1", "texts": ["c"]}
    assert workload.body("/v1/rerank", 0) == {"query": "q0", "documents": ["a", "b"], "top_n": 5}
    rng = random.Random(0)
    drawn = Counter(workload.request(rng)[0] for _ in range(4000))
    assert set(drawn) == {"/search", "/v1/rerank"}  # /rerank has no weight
    assert drawn["/search"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_progress_lines_at_each_tenth_with_rate_and_eta() -> None:
    said: list[str] = []
    progress = ProgressLines([1, 20], 10.0, said.append)
    for second in range(1, 11):
        progress(Tick(0, 1, float(second), outcomes=second * 4, errors=0, lost=0))
    progress(Tick(1, 20, 5.0, outcomes=100, errors=2, lost=1))
    assert len(said) == 11
    assert said[4] == "clients 1 (level 1/2): 5/10 s, 20 requests done (4.0 req/s), 0 errors, 0 lost, ETA 15s"
    assert said[-1].endswith("100 requests done (20.0 req/s), 2 errors, 1 lost, ETA 5s")


class Misbehaving(BaseHTTPRequestHandler):
    """/search answers at once; /rerank answers after 2 s (past the bench's timeout); /v1/rerank drops the
    connection without a reply."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # the stdlib handler's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/rerank":
            self.close_connection = True
            self.connection.close()
            return
        if self.path == "/rerank":
            time.sleep(2.0)
        body = SEARCH_OK if self.path == "/search" else b'[{"index": 0, "score": 1.0}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(
            BrokenPipeError, ConnectionResetError
        ):  # /rerank's client gave up: the point
            self.wfile.write(body)


@pytest.fixture
def misbehaving_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_level_counts_timeouts_and_dropped_connections_as_lost_and_ends_by_itself(
    misbehaving_server: str,
) -> None:
    workload = Workload(("q",), (("a",),), {"/search": 1.0, "/rerank": 1.0, "/v1/rerank": 1.0})
    ticks: list[Tick] = []
    started = time.perf_counter()
    level = asyncio.run(
        run_level(
            misbehaving_server,
            workload,
            level=0,
            clients=3,
            seconds=1.5,
            timeout_s=0.5,
            headers={},
            seed=1,
            on_tick=ticks.append,
        )
    )
    took = time.perf_counter() - started
    assert took < 1.5 + 0.5 + 3.0  # the time, plus at most one request timeout, plus slack for a busy box
    assert level.elapsed_s >= 1.5 and ticks and ticks[-1].outcomes > 0
    search, rerank, v1 = (level.routes[r] for r in ("/search", "/rerank", "/v1/rerank"))
    assert search.ok == search.sent > 0 and not search.lost
    assert rerank.ok == 0 and rerank.lost == {"timeout": rerank.sent} and rerank.sent > 0
    assert v1.ok == 0 and v1.sent > 0 and sum(v1.lost.values()) == v1.sent
    assert all(kind.startswith("connection (") for kind in v1.lost), v1.lost
    total = level.routes[ALL]
    assert total.sent == search.sent + rerank.sent + v1.sent == total.ok + sum(total.lost.values())


def test_a_search_fallback_counts_by_its_code_when_the_reply_has_one() -> None:
    from hybrid_rerank.connector.lab.bench_serve import rerank_note_reason

    coded = {
        "reranked": False,
        "rerank_fallback": "deadline",
        "rerank_note": "rerank deadline of 3000 ms passed",
    }
    assert rerank_note_reason(coded) == "deadline"
    assert rerank_note_reason({"reranked": False, "rerank_note": " late "}) == "late"
    assert rerank_note_reason({"reranked": False}) == "reranked: false without a note"

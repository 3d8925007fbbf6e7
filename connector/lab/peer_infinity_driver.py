"""Scores a `bench peer` job with Infinity (infinity-emb) and writes the timings: run by the peer's own Python
(scripts/peer-infinity), never ours, so it imports only the standard library and Infinity.

Usage: python peer_infinity_driver.py JOB.json RESULT.json

JOB: {"engine": "torch" | "optimum" | "http", "folder": str, "batch_size": int, "port": int,
      "queries": [str], "documents": [[str]]}.
"http" serves the folder with `infinity_emb v2 --engine optimum` on 127.0.0.1:port and posts one /rerank
request per query. RESULT: {"description", "latency_ms", "scores", "peak_rss_mib"}: per query, the time of
the one call that scores its documents, after a warm-up on the first.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERVER_START_TIMEOUT_S = 300.0


def peak_rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def timed_calls(score: Any, queries: list[str], documents: list[list[str]]) -> tuple[list[float], list[Any]]:
    score(queries[0], documents[0])  # warm-up: lazy init, allocator, thread pools
    latencies, scores = [], []
    for query, docs in zip(queries, documents, strict=True):
        started = time.perf_counter()
        values = score(query, docs)
        latencies.append((time.perf_counter() - started) * 1000.0)
        scores.append(values)
    return latencies, scores


def versions() -> str:
    """The peer's stack, for the report: what its engines run on."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("infinity-emb", "torch", "onnxruntime", "optimum", "transformers", "sentence-transformers"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def in_process(job: dict[str, Any]) -> dict[str, Any]:
    """Infinity's Python engine, as `AsyncEmbeddingEngine` runs it: its own batching queue and thread."""
    infinity = importlib.import_module("infinity_emb")
    # Infinity's optimum engine finds the ONNX file only by a path relative to the model folder: start there.
    os.chdir(job["folder"])
    args = infinity.EngineArgs(
        model_name_or_path=".",
        engine=job["engine"],
        device="cpu",
        batch_size=job["batch_size"],
        model_warmup=False,
    )
    engine = infinity.AsyncEmbeddingEngine.from_args(args)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.astart())

    def score(query: str, docs: list[str]) -> list[float]:
        ranked, _ = loop.run_until_complete(engine.rerank(query=query, docs=docs, raw_scores=True))
        by_index = sorted(ranked, key=lambda r: r.index)
        return [float(r.relevance_score) for r in by_index]

    try:
        latencies, scores = timed_calls(score, job["queries"], job["documents"])
    finally:
        loop.run_until_complete(engine.astop())
    return {
        "description": f"AsyncEmbeddingEngine, engine={job['engine']}, batch {job['batch_size']} "
        f"({versions()})",
        "latency_ms": latencies,
        "scores": scores,
        "peak_rss_mib": peak_rss_mib(),
    }


def post_json(url: str, body: dict[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_until_ready(server: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"infinity_emb v2 exited with {server.returncode} before it answered /health")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"infinity_emb v2 did not answer {base}/health within {SERVER_START_TIMEOUT_S:.0f} s")


def over_http(job: dict[str, Any], log: Path) -> dict[str, Any]:
    """Infinity's HTTP server (its optimum engine) on loopback; the client is this process."""
    base = f"http://127.0.0.1:{job['port']}"
    command = [
        str(Path(sys.executable).with_name("infinity_emb")),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        "peer",
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--batch-size",
        str(job["batch_size"]),
        "--no-model-warmup",
        "--host",
        "127.0.0.1",
        "--port",
        str(job["port"]),
    ]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=job["folder"], stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(server, base)

        def score(query: str, docs: list[str]) -> list[float]:
            body = {"model": "peer", "query": query, "documents": docs, "raw_scores": True}
            ranked = post_json(f"{base}/rerank", body, timeout=600)["results"]
            return [float(r["relevance_score"]) for r in sorted(ranked, key=lambda r: r["index"])]

        latencies, scores = timed_calls(score, job["queries"], job["documents"])
        server_peak = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {
        "description": f"infinity_emb v2 HTTP server (engine=optimum, batch {job['batch_size']}), "
        f"one POST /rerank per query on loopback ({versions()})",
        "latency_ms": latencies,
        "scores": scores,
        "peak_rss_mib": server_peak,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    result_path = Path(argv[2]).resolve()
    if job["engine"] == "http":
        result = over_http(job, result_path.with_suffix(".server.log"))
    else:
        result = in_process(job)
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

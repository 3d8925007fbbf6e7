"""`hybrid-rerank bench serve`: a load test of the HTTP service, and the latency the service adds.

Load: for each client count, that many closed-loop clients (each sends its next request when the last one
is answered, no think time) for a fixed time, over a weighted mix of POST /search (real queries from a
dataset), POST /rerank and POST /v1/rerank (each query's first-stage candidates, fetched from the service
before the run). Clients are coroutines on one asyncio loop with one httpx.AsyncClient: hundreds of open
connections cost one thread, no GIL contention between client threads skews the clock, and the bench
takes little CPU from the service it measures on the same machine. Every request has a hard deadline
(`asyncio.timeout`), so a run ends by itself within seconds + the request timeout per level. A request
that times out or whose connection fails is "lost"; nothing is retried.

Added latency: the same queries one at a time, alternating which goes first, through an in-process
pipeline built from the same settings (`pipeline.search(query)`) and through POST /search.

Loopback only unless told otherwise: load on other machines' addresses is not ours to generate.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench import machine
from hybrid_rerank.connector.lab.bench_serve_plan import ServeBenchPlan, read_queries
from hybrid_rerank.connector.lab.bench_serve_report import (
    ALL,
    SEARCH,
    AddedLatency,
    LoadLevel,
    Outcome,
    ServeBenchReport,
    aggregate,
)
from hybrid_rerank.connector.pipeline import SearchPipeline
from hybrid_rerank.connector.progress import duration

TICK_S = 1.0


def rerank_note_reason(reply: dict[str, object]) -> str:
    """A /search fallback's count key: its code (`deadline`, ...), else its note."""
    for key in ("rerank_fallback", "rerank_note"):
        value = reply.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "reranked: false without a note"


def read_reply(route: str, status: int, body: bytes, latency_ms: float) -> Outcome:
    """Judge an answered request by what its route promises: /search JSON with `hits` and `reranked` (a
    `reranked: false` reply is a fallback, with its `rerank_note`), /rerank a list of scores, /v1/rerank an
    object with `results`. A 429 or 5xx from a rerank route is that route's fallback."""
    if not 200 <= status < 300:
        fallback = f"HTTP {status}" if route != SEARCH and (status == 429 or status >= 500) else None
        detail = body[:300].decode("utf-8", "replace")
        return Outcome(route, latency_ms, status, fallback=fallback, detail=detail)
    try:
        reply = json.loads(body)
    except ValueError:
        return Outcome(route, latency_ms, status, invalid="not JSON")
    if route == SEARCH:
        if not isinstance(reply, dict) or not isinstance(reply.get("hits"), list):
            return Outcome(route, latency_ms, status, invalid="no hits list")
        if reply.get("reranked") is False:
            return Outcome(route, latency_ms, status, fallback=rerank_note_reason(reply))
        return Outcome(route, latency_ms, status)
    results = reply if route == "/rerank" else (reply.get("results") if isinstance(reply, dict) else None)
    if not isinstance(results, list) or not results:
        return Outcome(route, latency_ms, status, invalid="no scores")
    return Outcome(route, latency_ms, status)


@dataclass(frozen=True)
class Workload:
    """The queries, each with the candidate texts that the rerank routes send, and the route weights."""

    queries: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...]  # per query: its first-stage top `depth`, as the model reads it
    mix: dict[str, float]
    top_n: int = 10

    def request(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        route = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        index = rng.randrange(len(self.queries))
        return route, self.body(route, index)

    def body(self, route: str, index: int) -> dict[str, Any]:
        query = self.queries[index]
        if route == SEARCH:
            return {"query": query}  # the service's defaults, as pipeline.search(query)
        texts = list(self.candidates[index])
        if route == "/rerank":
            return {"query": query, "texts": texts}
        return {"query": query, "documents": texts, "top_n": self.top_n}


def hit_text(hit: dict[str, Any]) -> str:
    """A hit as the cross-encoder reads a document: title, then body (Document.full_text)."""
    title, text = str(hit.get("title") or ""), str(hit.get("text") or "")
    return f"{title}. {text}" if title else text


def prepare_workload(
    http: httpx.Client, queries: Sequence[str], depth: int, mix: dict[str, float]
) -> Workload:
    """Each query's first-stage top `depth` from the service (POST /search, rerank off): what /search
    itself would send to the reranker. Queries with no hits are dropped."""
    kept: list[str] = []
    candidates: list[tuple[str, ...]] = []
    for query in queries:
        reply = http.post(SEARCH, json={"query": query, "k": depth, "rerank": False})
        if reply.status_code != 200:
            raise ConfigurationError(
                f"preparing the workload: POST /search answered {reply.status_code}: {reply.text[:500]}"
            )
        hits = reply.json()["hits"]
        if hits:
            kept.append(query)
            candidates.append(tuple(hit_text(hit) for hit in hits))
    if not kept:
        raise ConfigurationError("no query found any document: is the service's index empty?")
    return Workload(tuple(kept), tuple(candidates), mix)


def warm_up(http: httpx.Client, workload: Workload, per_route: int = 2) -> None:
    """A few requests per route, not measured; a route that does not answer 2xx stops the run here."""
    for route in workload.mix:
        for index in range(min(per_route, len(workload.queries))):
            reply = http.post(route, json=workload.body(route, index))
            if not 200 <= reply.status_code < 300:
                raise ConfigurationError(
                    f"warm-up: POST {route} answered {reply.status_code}: {reply.text[:500]} "
                    "(leave the route out with --mix ROUTE=0)"
                )


@dataclass(frozen=True)
class Tick:
    """Where a level is, once a second."""

    level: int  # 0-based
    clients: int
    elapsed_s: float
    outcomes: int
    errors: int
    lost: int


async def send(http: httpx.AsyncClient, route: str, body: dict[str, Any], timeout_s: float) -> Outcome:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):  # the whole request, however slowly bytes trickle in
            reply = await http.post(route, json=body)
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(route, (time.perf_counter() - started) * 1000.0, None, lost="timeout")
    except httpx.TransportError as exc:
        lost = f"connection ({type(exc).__name__})"
        return Outcome(route, (time.perf_counter() - started) * 1000.0, None, lost=lost)
    return read_reply(route, reply.status_code, reply.content, (time.perf_counter() - started) * 1000.0)


async def run_level(
    base_url: str,
    workload: Workload,
    *,
    level: int,
    clients: int,
    seconds: float,
    timeout_s: float,
    headers: dict[str, str],
    seed: int,
    on_tick: Callable[[Tick], None] | None = None,
) -> LoadLevel:
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=timeout_s, limits=limits
    ) as http:
        started = time.perf_counter()
        stop_at = started + seconds

        async def client(number: int) -> None:
            rng = random.Random(seed * 100_003 + level * 1_009 + number)
            while time.perf_counter() < stop_at:
                route, body = workload.request(rng)
                outcomes.append(await send(http, route, body, timeout_s))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(TICK_S)
                if on_tick is not None:
                    errors = sum(1 for o in outcomes if o.status is not None and not o.ok)
                    lost = sum(1 for o in outcomes if o.status is None)
                    elapsed = time.perf_counter() - started
                    on_tick(Tick(level, clients, elapsed, len(outcomes), errors, lost))

        ticking = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(client(n) for n in range(clients)))
        finally:
            ticking.cancel()
        elapsed = time.perf_counter() - started
    return aggregate(clients, seconds, elapsed, outcomes)


class ProgressLines:
    """`clients 20 (level 3/4): 30/60 s, 356 replies (11.9 req/s), 0 errors, 0 lost, ETA 3m10s`, at each
    tenth of a level. The ETA counts the load levels still to run."""

    def __init__(self, counts: Sequence[int], seconds: float, say: Callable[[str], None]) -> None:
        self.counts, self.seconds, self.say = counts, seconds, say
        self.next_tenth: dict[int, int] = {}

    def __call__(self, tick: Tick) -> None:
        tenths = min(int(tick.elapsed_s * 10 // self.seconds), 10)
        if tenths < self.next_tenth.get(tick.level, 1):
            return
        self.next_tenth[tick.level] = tenths + 1
        rate = tick.outcomes / tick.elapsed_s if tick.elapsed_s > 0 else 0.0
        left = max(self.seconds - tick.elapsed_s, 0.0) + self.seconds * (len(self.counts) - tick.level - 1)
        self.say(
            f"clients {tick.clients} (level {tick.level + 1}/{len(self.counts)}): "
            f"{min(tick.elapsed_s, self.seconds):.0f}/{self.seconds:.0f} s, {tick.outcomes} requests done "
            f"({rate:.1f} req/s), {tick.errors} errors, {tick.lost} lost, ETA {duration(left)}"
        )


def measure_added_latency(
    pipeline: SearchPipeline,
    http: httpx.Client,
    queries: Sequence[str],
    rerank_path: str,
    say: Callable[[str], None] = print,
) -> AddedLatency:
    """`pipeline.search(query)` against POST /search `{"query": query}`, one at a time, alternating which
    goes first; each timed by its caller's wall clock. A query the service answers with an error is left
    out of both sides and counted."""
    for query in queries[:2]:  # warm-up: models loaded, connection open
        pipeline.search(query)
        http.post(SEARCH, json={"query": query})
    local: list[float] = []
    served: list[float] = []
    reranked = {"local": 0, "service": 0}
    pipeline_ms: dict[str, list[float]] = {"local": [], "service": []}
    errors: dict[str, int] = {}
    for index, query in enumerate(queries):
        timings: dict[str, float] = {}
        totals: dict[str, float] = {}
        status = 200
        for side in ("local", "service") if index % 2 == 0 else ("service", "local"):
            started = time.perf_counter()
            if side == "local":
                result = pipeline.search(query)
                timings[side] = (time.perf_counter() - started) * 1000.0
                reranked[side] += result.reranked
                totals[side] = result.timings_ms["total"]
                continue
            reply = http.post(SEARCH, json={"query": query})
            timings[side] = (time.perf_counter() - started) * 1000.0
            status = reply.status_code
            if status == 200:
                answer = reply.json()
                reranked[side] += answer.get("reranked") is True
                totals[side] = float(answer["timings_ms"]["total"])
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
            continue
        local.append(timings["local"])
        served.append(timings["service"])
        for side, samples in pipeline_ms.items():
            samples.append(totals[side])
        if (index + 1) % max(len(queries) // 5, 1) == 0:
            say(f"added latency: {index + 1}/{len(queries)} queries")
    return AddedLatency(
        rerank_path,
        tuple(local),
        tuple(served),
        reranked["local"],
        reranked["service"],
        errors,
        in_process_pipeline_ms=tuple(pipeline_ms["local"]),
        service_pipeline_ms=tuple(pipeline_ms["service"]),
    )


def run_serve_bench(
    plan: ServeBenchPlan,
    *,
    stack: dict[str, str],
    make_pipeline: Callable[[], SearchPipeline] | None,
    rerank_path: str,
    notes: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> ServeBenchReport:
    """Prepare the workload from the service, warm it up, run each client count, then (with a pipeline
    factory) measure the added latency on an otherwise idle service."""
    headers = plan.headers or {}
    with httpx.Client(base_url=plan.base_url, headers=headers, timeout=plan.timeout_s) as http:
        health = http.get("/healthz")
        if health.status_code != 200:
            raise ConfigurationError(
                f"{plan.base_url}/healthz answered {health.status_code}: {health.text[:300]}"
            )
        queries = read_queries(plan.dataset, plan.queries, plan.seed)
        say(f"preparing: first-stage candidates of {len(queries)} queries from {plan.base_url}")
        workload = prepare_workload(http, queries, plan.depth, plan.mix)
        warm_up(http, workload)

    progress = ProgressLines(plan.clients, plan.seconds, say)
    levels: list[LoadLevel] = []
    for level, clients in enumerate(plan.clients):
        result = asyncio.run(
            run_level(
                plan.base_url,
                workload,
                level=level,
                clients=clients,
                seconds=plan.seconds,
                timeout_s=plan.timeout_s,
                headers=headers,
                seed=plan.seed,
                on_tick=progress,
            )
        )
        total = result.routes[ALL]
        say(
            f"clients {clients}: {total.sent} sent, {total.ok} ok ({total.throughput_rps:.1f}/s), "
            f"{total.server_errors} 5xx, {sum(total.lost.values())} lost"
        )
        levels.append(result)

    added = None
    if make_pipeline is not None and plan.added_latency_queries > 0:
        say(f"added latency: {plan.added_latency_queries} queries, in-process pipeline against POST /search")
        pipeline = make_pipeline()
        chosen = [workload.queries[i % len(workload.queries)] for i in range(plan.added_latency_queries)]
        with httpx.Client(base_url=plan.base_url, headers=headers, timeout=plan.timeout_s) as http:
            added = measure_added_latency(pipeline, http, chosen, rerank_path, say)

    return ServeBenchReport(
        machine=machine(),
        target=plan.base_url,
        dataset=str(plan.dataset),
        queries=len(workload.queries),
        candidates_per_rerank=plan.depth,
        mix=plan.mix,
        request_timeout_s=plan.timeout_s,
        stack=stack,
        levels=tuple(levels),
        added_latency=added,
        notes=tuple(notes),
    )

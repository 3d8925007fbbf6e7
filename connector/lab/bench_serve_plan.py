"""What `bench serve` is asked to do: the target (loopback only unless told otherwise), the client counts,
the route mix, the queries, each checked with a message that says what to pass instead."""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.lab.bench_serve_report import SEARCH

MAX_CLIENTS = 200
MAX_SECONDS = 600
ROUTE_NAMES = {"search": SEARCH, "rerank": "/rerank", "v1-rerank": "/v1/rerank"}
DEFAULT_MIX = "search=6,rerank=2,v1-rerank=2"


def check_target(url: str, *, allow_remote: bool = False) -> str:
    """The base URL without a trailing slash, if it is http(s) on a loopback address (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"--url must be http://HOST:PORT, got {url!r}")
    host = parts.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        raise ConfigurationError(
            f"refusing to load {host}: only loopback targets (127.0.0.0/8, ::1, localhost) unless "
            "--allow-remote says the target is yours to load"
        )
    return url.rstrip("/")


def parse_clients(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigurationError(
            f"--clients takes counts separated by commas, e.g. 1,5,20: {text!r}"
        ) from exc
    if not counts or any(not 1 <= n <= MAX_CLIENTS for n in counts):
        raise ConfigurationError(f"--clients: each count must be 1 to {MAX_CLIENTS}, got {text!r}")
    return counts


def parse_mix(text: str) -> dict[str, float]:
    """`search=6,rerank=2,v1-rerank=2` -> {"/search": 6.0, ...}; a weight of 0 leaves a route out."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        route = ROUTE_NAMES.get(name.strip())
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if route is None or value < 0:
            raise ConfigurationError(
                f"--mix takes ROUTE=WEIGHT pairs with routes {', '.join(ROUTE_NAMES)}, got {part!r}"
            )
        if value > 0:
            mix[route] = value
    if not mix:
        raise ConfigurationError("--mix leaves no route with a weight above 0")
    return mix


def read_queries(folder: Path, n_queries: int, seed: int) -> list[str]:
    """`n_queries` distinct query texts of a BEIR folder's queries.jsonl, in a seeded random order."""
    path = folder / "queries.jsonl"
    if not path.is_file():
        raise ConfigurationError(f"{path} not found: the dataset must be a BEIR folder with queries.jsonl")
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                text = str(json.loads(line)["text"]).strip()
                if text:
                    texts.append(text)
    unique = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(unique)
    return unique[:n_queries]


@dataclass(frozen=True)
class ServeBenchPlan:
    base_url: str
    dataset: Path
    clients: tuple[int, ...]
    seconds: float
    mix: dict[str, float]
    queries: int = 100
    depth: int = 30
    timeout_s: float = 30.0
    added_latency_queries: int = 50
    headers: dict[str, str] | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ConfigurationError(f"--seconds must be above 0 and at most {MAX_SECONDS}")

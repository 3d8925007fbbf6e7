"""A three-node OpenSearch cluster on loopback (scripts/opensearch-cluster) whose index has one replica loses
a node to SIGKILL: during a bulk index every document whose bulk item was acknowledged is there afterwards and
the others are each reported; during a stream of searches the searches keep answering, right, or fail only
with the retryable BackendUnavailableError; restarted on its data, the node rejoins and the index is green.

The cluster costs three JVMs and minutes of start-up, so these tests run only with
HYBRID_RERANK_CLUSTER_TESTS=1 (docs/cluster.md). Vectors are seeded random unit vectors, not model
embeddings: the tests are about where the documents are, and the vector leg is checked by querying with a
stored vector, whose own document must come back.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from opensearchpy import OpenSearch

from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend, make_client
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.errors import BackendUnavailableError
from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("HYBRID_RERANK_CLUSTER_TESTS") != "1",
        reason="the three-node cluster tests run only with HYBRID_RERANK_CLUSTER_TESTS=1 (docs/cluster.md)",
    ),
]

SCRIPT = str(REPO / "scripts" / "opensearch-cluster")
DIM = 384
BULK_DOCS = 2000
SEARCH_DOCS = 500
GREEN_TIMEOUT_S = 300  # a restarted node's JVM start and shard recovery, on a shared 2-core machine
WORDS = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "river", "stone", "cloud", "field"]


def cluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=900, check=False)


def figures(name: str, values: dict[str, Any]) -> None:
    """The measured figures, printed (pytest -s) and appended to .work/cluster-figures.jsonl."""
    line = json.dumps({"test": name, **values})
    print(f"cluster figures: {line}")
    path = REPO / ".work" / "cluster-figures.jsonl"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as fh:
        fh.write(line + "\n")


@pytest.fixture(scope="module")
def cluster_urls() -> Iterator[list[str]]:
    was_running = cluster("status").returncode == 0
    started = cluster("start")
    if started.returncode != 0:
        message = f"scripts/opensearch-cluster start failed:\n{started.stderr[-3000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield started.stdout.strip().splitlines()[-1].split(",")
    # Leave it as found: stop what this module started, else bring back a node a failed test left down.
    cluster("start" if was_running else "stop")


@pytest.fixture
def client(cluster_urls: list[str]) -> OpenSearch:
    """The application's client (its retry policy) with all three nodes as hosts: a dead host is marked
    dead and the request retried on the next one."""
    client = make_client(cluster_urls[0])
    client.transport.set_connections(
        [{"host": urlsplit(u).hostname, "port": urlsplit(u).port} for u in cluster_urls]
    )
    return client


def corpus(n: int, prefix: str) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(13)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        Document(
            id=f"{prefix}-{i:05d}",
            text=f"document {i} about {WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]}",
            metadata={"n": i},
        )
        for i in range(n)
    ]
    return docs, vectors


@pytest.fixture
def replicated(client: OpenSearch, cluster_urls: list[str]) -> Iterator[tuple[OpenSearchBackend, str]]:
    """A fresh index through the connector, green: a primary and the replica that the mapping's
    auto_expand_replicas gives it, on two of the three nodes."""
    alias = f"cluster-{uuid.uuid4().hex[:10]}"
    backend = OpenSearchBackend(client, alias, url=",".join(cluster_urls), chunk_docs=100)
    backend.create_index("random-unit-vectors", DIM)
    concrete = f"{alias}-v1"
    try:
        # the mapping's auto_expand_replicas ("0-1") gives the index its replica on a cluster by itself
        assert wait_green(client, concrete)["status"] == "green"
        settings = client.indices.get_settings(index=concrete)[concrete]["settings"]["index"]
        assert settings["number_of_replicas"] == "1", settings
        yield backend, concrete
    finally:
        client.indices.delete(index=f"{alias}-v*", ignore_unavailable=True)


def wait_green(client: OpenSearch, index: str) -> dict[str, Any]:
    """`_cluster/health` of `index`, once green with all three nodes or after GREEN_TIMEOUT_S."""
    params = {"wait_for_status": "green", "wait_for_nodes": "3", "timeout": f"{GREEN_TIMEOUT_S}s"}
    health: dict[str, Any] = client.cluster.health(
        index=index, params=params, request_timeout=GREEN_TIMEOUT_S + 30
    )
    return health


def copies(client: OpenSearch, index: str) -> dict[str, str]:
    """Node name of the started primary ("p") and replica ("r")."""
    rows = client.cat.shards(index=index, format="json")
    return {r["prirep"]: r["node"] for r in rows if r["state"] == "STARTED"}


def restart_until_green(client: OpenSearch, node: str, index: str) -> dict[str, float]:
    """Restart the killed node on its data; seconds until it rejoined and until the index was green."""
    t0 = time.monotonic()
    restarted = cluster("restart", node)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    rejoined = time.monotonic() - t0
    health = wait_green(client, index)
    assert health["status"] == "green" and health["number_of_nodes"] == 3, health
    assert set(copies(client, index)) == {"p", "r"}
    return {
        "restart_to_rejoined_s": round(rejoined, 1),
        "restart_to_green_s": round(time.monotonic() - t0, 1),
    }


def cluster_manager(client: OpenSearch) -> str:
    rows = client.transport.perform_request("GET", "/_cat/cluster_manager", params={"format": "json"})
    return str(rows[0]["node"])


def failovers(client: OpenSearch) -> int:
    """How many times the client found a host dead and went on to the next one."""
    return sum(client.transport.connection_pool.dead_count.values())


def kill(node: str) -> None:
    killed = cluster("kill", node)
    assert killed.returncode == 0, killed.stderr


# The application's client retries a request on the next host; without retries the request that meets the
# dead node fails, and each document of it must then be reported, not lost. The node killed holds the
# primary (a replica is promoted), or is the elected cluster manager (a new one is elected first).
@pytest.mark.parametrize(
    ("victim_role", "client_retries"),
    [("primary", 3), ("primary", 0), ("cluster-manager", 3)],
    ids=["primary-application-client", "primary-no-client-retries", "cluster-manager"],
)
def test_bulk_index_keeps_every_acknowledged_document_when_a_node_is_killed(
    client: OpenSearch, replicated: tuple[OpenSearchBackend, str], victim_role: str, client_retries: int
) -> None:
    backend, index = replicated
    retries = client.transport.max_retries
    client.transport.max_retries = client_retries
    manager = cluster_manager(client)
    victim = copies(client, index)["p"] if victim_role == "primary" else manager
    docs, vectors = corpus(BULK_DOCS, "bulk")
    held = copies(client, index)
    answered: list[float] = []  # when each _bulk request was answered
    third_answered = threading.Event()
    send = client.transport.perform_request

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        result = send(method, url, *args, **kwargs)
        if url.endswith("/_bulk"):
            answered.append(time.monotonic())
            if len(answered) == 3:
                third_answered.set()
        return result

    client.transport.perform_request = counting  # type: ignore[method-assign]
    killed_at: list[float] = []

    def killer() -> None:
        if third_answered.wait(600):
            kill(victim)
            killed_at.append(time.monotonic())

    thread = threading.Thread(target=killer)
    thread.start()
    report = backend.bulk_index(docs, vectors)
    thread.join()
    client.transport.perform_request = send  # type: ignore[method-assign]
    client.transport.max_retries = retries
    failed_over = failovers(client)

    assert killed_at, "the node was never killed: the test proved nothing"
    answered_after = sum(t > killed_at[0] for t in answered)
    assert answered_after > 0, "the bulk index had ended before the kill: the test proved nothing"
    assert failed_over > 0, "no request reached the killed node: the client's failover was not exercised"
    failed = {f.doc_id: f.reason for f in report.failures}
    assert report.written + len(failed) == BULK_DOCS, "a document is neither written nor reported"
    if client_retries == 0:
        assert failed, "the request that met the dead node was not reported"
        assert all(reason.strip() for reason in failed.values())
    acknowledged = [d.id for d in docs if d.id not in failed]
    present = backend.get([d.id for d in docs])
    missing = [i for i in acknowledged if i not in present]
    assert missing == [], f"{len(missing)} acknowledged documents are gone, e.g. {missing[:5]}"
    stored = present[acknowledged[-1]]
    assert stored.text == next(d.text for d in docs if d.id == acknowledged[-1])
    timing = restart_until_green(client, victim, index)
    backend.commit()
    assert client.count(index=index)["count"] == len(present)
    figures(
        f"bulk, killed the {victim_role}, client max_retries={client_retries}",
        {
            "killed": victim,
            "killed_was_cluster_manager": victim == manager,
            "killed_held": sorted(role for role, node in held.items() if node == victim),
            "documents": BULK_DOCS,
            "bulk_requests": len(answered),
            "bulk_requests_answered_after_kill": answered_after,
            "first_bulk_answer_after_kill_s": round(
                min(t for t in answered if t > killed_at[0]) - killed_at[0], 2
            ),
            "acknowledged": len(acknowledged),
            "reported_failed": len(failed),
            "failure_reasons": sorted(set(failed.values()))[:3],
            "present": len(present),
            "acknowledged_missing": len(missing),
            "client_failovers": failed_over,
            **timing,
        },
    )


def test_searches_keep_answering_when_a_node_is_killed(
    client: OpenSearch, replicated: tuple[OpenSearchBackend, str]
) -> None:
    backend, index = replicated
    docs, vectors = corpus(SEARCH_DOCS, "search")
    assert backend.bulk_index(docs, vectors).ok
    backend.commit()
    victim = copies(client, index)["p"]
    was_manager = victim == cluster_manager(client)
    outcomes: list[tuple[float, str]] = []  # (when, "ok" | "wrong" | error type: message)
    stop = threading.Event()

    def search_loop() -> None:
        i = 0
        while not stop.is_set():
            j = i % SEARCH_DOCS
            try:
                recall = backend.recall(docs[j].text, vectors[j], 10)
                found = docs[j].id in {h.document.id for h in recall.knn} and len(recall.bm25) > 0
                outcomes.append((time.monotonic(), "ok" if found else "wrong"))
            except Exception as exc:
                outcomes.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            i += 1

    thread = threading.Thread(target=search_loop)
    thread.start()
    deadline = time.monotonic() + 60
    while len(outcomes) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    t_kill = time.monotonic()
    kill(victim)
    time.sleep(15)
    stop.set()
    thread.join(timeout=120)

    before = [o for t, o in outcomes if t <= t_kill]
    after = [o for t, o in outcomes if t > t_kill]
    failures = [o for o in after if o not in ("ok", "wrong")]
    assert before and all(o == "ok" for o in before), before[:5]
    assert after.count("ok") > 0 and after[-5:] == ["ok"] * 5, after[-5:]
    assert "wrong" not in after, "a search answered without the document it must find (partial results?)"
    failed_over = failovers(client)
    assert failed_over > 0, "no request reached the killed node: the client's failover was not exercised"
    retryable = BackendUnavailableError.__name__
    assert all(f.startswith(retryable) for f in failures), failures[:3]
    timing = restart_until_green(client, victim, index)
    assert backend.recall(docs[0].text, vectors[0], 10).knn[0].document.id == docs[0].id
    figures(
        "search",
        {
            "killed": victim,
            "killed_was_cluster_manager": was_manager,
            "searches_before_kill": len(before),
            "searches_in_15s_after_kill": len(after),
            "answered_after_kill": after.count("ok"),
            "failed_after_kill": len(failures),
            "longest_gap_between_answers_after_kill_s": round(
                max(b - a for a, b in itertools.pairwise([t_kill] + [t for t, _ in outcomes if t > t_kill])),
                2,
            ),
            "failures": failures[:3],
            "client_failovers": failed_over,
            **timing,
        },
    )

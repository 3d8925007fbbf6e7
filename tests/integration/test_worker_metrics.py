"""Worker metrics on a real prefork worker (two pool processes) and a real Redis: every process's tasks add up
on the parent's metrics port, a pool process killed mid-task leaves no task counted as running, the parent
still never loads torch, and the worker's own metric folder goes when it stops."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import CeleryReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import TASK_NAME, Candidate
from tests.integration.test_worker_lifecycle import children_of, mapped_files

pytestmark = pytest.mark.integration

PORT = 9401  # this helper's range, 9400-9409
MAX_LENGTH = 128
TEXT = " ".join(["the moon orbit earth light phase steak rest grill"] * 14)
REPLY_S = 120.0


class Served:
    def __init__(self, redis_url: str, model: Path, logs: Path) -> None:
        self.reranker: CeleryReranker = make_celery_reranker(
            load_settings(
                _env_file=None,
                redis_url=redis_url,
                rerank_model=str(model),
                rerank_max_length=MAX_LENGTH,
                rerank_deadline_ms=120_000,
            )
        )
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "RERANK_MODEL": str(model),
            "RERANK_MAX_LENGTH": str(MAX_LENGTH),
            "RERANK_THREADS": "1",
            "RERANK_CACHE_TTL_S": "120",
            "WORKER_METRICS_PORT": str(PORT),
            "WORKER_METRICS_HOST": "127.0.0.1",
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the worker makes a folder of its own
        self.worker = WorkerProcess("metrics", env, logs, concurrency=2).start(self.reranker.app)
        found = re.search(r"worker metrics on http://\S+ \((\S+)\)", self.worker.log.read_text())
        if found is None:
            self.worker.stop()
            pytest.fail(f"the worker did not serve metrics:\n{self.worker.log.read_text()[-3000:]}")
        self.folder = Path(found.group(1))

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample on the metrics port, by name and labels."""
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as response:
            text = response.read().decode("utf-8")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def children(self) -> list[int]:
        assert self.worker.process is not None
        return children_of(self.worker.process.pid)


@pytest.fixture(scope="module")
def served(
    redis_url: str, tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("metrics")
    model = Path(shutil.copytree(tiny_cross_encoder_dir, folder / "metrics-ce"))
    served = Served(redis_url, model, folder)
    yield served
    served.worker.stop()


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def cands(n: int, tag: str) -> list[Candidate]:
    return [Candidate(f"{tag}{i}", f"{i} {TEXT}") for i in range(n)]


def test_counts_from_both_pool_processes_add_up_on_the_parents_port(served: Served) -> None:
    before = served.scrape()
    assert (
        value(before, "hybrid_rerank_worker_task_seconds_count", queue="interactive", outcome="scored") == 0
    )
    reranker = served.reranker
    run = uuid.uuid4().hex
    sizes = [40 + i for i in range(10)]  # interactive, each a few tenths of a second of scoring
    batch_sizes = [30, 31, 32, 33]
    sent = [(reranker.submit(f"q{i} {run}", cands(n, f"i{i}-")), n) for i, n in enumerate(sizes)]
    sent += [
        (reranker.submit(f"b{i} {run}", cands(n, f"b{i}-"), queue=reranker.batch_queue), n)
        for i, n in enumerate(batch_sizes)
    ]
    refused = reranker.app.send_task(TASK_NAME, args=[{"query": "q", "candidates": []}], queue=reranker.queue)
    for task_id, n in sent:
        outcome = reranker.collect(task_id, timeout_s=REPLY_S)
        assert outcome is not None and outcome.scores is not None and len(outcome.scores) == n
    assert "'candidates' is empty" in refused.get(timeout=REPLY_S)["error"]
    # Three queries again: every score from the cache, the model not run.
    repeats = [reranker.rerank(f"q{i} {run}", cands(sizes[i], f"i{i}-")) for i in range(3)]
    assert [r.cached for r in repeats] == sizes[:3]

    # Both pool processes wrote metric files, and nothing else did.
    children = served.children()
    writers = {
        int(m.group(1)) for f in served.folder.glob("*.db") if (m := re.search(r"_(\d+)\.db$", f.name))
    }
    assert len(children) == 2 and writers == set(children), (children, writers)

    after = served.scrape()
    count = "hybrid_rerank_worker_task_seconds_count"
    assert value(after, count, queue="interactive", outcome="scored") == len(sizes) + 3
    assert value(after, count, queue="batch", outcome="scored") == len(batch_sizes)
    assert value(after, count, queue="interactive", outcome="refused") == 1
    assert value(after, "hybrid_rerank_worker_task_candidates_count") == len(sizes) + len(batch_sizes) + 3
    assert value(after, "hybrid_rerank_worker_task_candidates_sum") == sum(sizes) + sum(batch_sizes) + sum(
        sizes[:3]
    )
    assert value(after, "hybrid_rerank_worker_model_seconds_count") == len(sizes) + len(batch_sizes)
    assert value(after, "hybrid_rerank_worker_cache_hits_total") == sum(sizes[:3])
    assert value(after, "hybrid_rerank_worker_cache_misses_total") == sum(sizes) + sum(batch_sizes)
    assert value(after, "hybrid_rerank_worker_tasks_in_progress") == 0
    assert value(after, "hybrid_rerank_worker_model_seconds_sum") > 0

    # Serving metrics did not bring torch into the parent; its pool processes have it.
    assert served.worker.process is not None
    parent = [line for line in mapped_files(served.worker.process.pid).splitlines() if "torch" in line]
    assert parent == [], parent[:5]
    assert all("libtorch" in mapped_files(pid) for pid in children)


def test_a_pool_process_killed_mid_task_is_not_counted_as_running(served: Served) -> None:
    reranker = served.reranker
    before = served.scrape()
    result = reranker.app.send_task(
        TASK_NAME,
        args=[{"query": f"long {uuid.uuid4().hex}", "candidates": [c.__dict__ for c in cands(1500, "l")]}],
        queue=reranker.queue,
    )
    deadline = time.monotonic() + 60
    while not (result.state == "STARTED" and isinstance(result.info, dict)):
        assert time.monotonic() < deadline, result.state
        time.sleep(0.05)
    assert value(served.scrape(), "hybrid_rerank_worker_tasks_in_progress") == 1
    os.kill(int(result.info["pid"]), signal.SIGKILL)
    reply: dict[str, Any] = result.get(timeout=REPLY_S)  # requeued at once, run by a pool process again
    assert len(reply["scores"]) == 1500
    after = served.scrape()
    assert value(after, "hybrid_rerank_worker_tasks_in_progress") == 0  # the dead process's 1 was dropped
    count = "hybrid_rerank_worker_task_seconds_count"
    scored = value(after, count, queue="interactive", outcome="scored")
    assert scored == value(before, count, queue="interactive", outcome="scored") + 1  # the run that finished


def test_the_worker_removes_its_metric_folder_when_it_stops(served: Served) -> None:
    assert served.folder.is_dir() and any(served.folder.glob("*.db"))
    served.worker.stop()
    assert not served.folder.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=2)

"""Worker metrics for Prometheus (WORKER_METRICS_PORT), in prometheus_client's multiprocess mode.

Each pool process records its own tasks into files under PROMETHEUS_MULTIPROC_DIR; the worker's parent, which
never scores (and never imports torch), serves the sum over every process on the metrics port. Recorded:

- `hybrid_rerank_worker_task_seconds{queue, outcome}`: a task's run in its pool process, to its reply (not
  the time it waited in the queue; `queue`: interactive or batch; `outcome`: scored, refused (a bad request,
  another model) or failed (an exception)).
- `hybrid_rerank_worker_model_seconds`: the model's scoring alone, in a task that needed it.
- `hybrid_rerank_worker_task_candidates`: candidates per task (the batch size the model sees, before the
  score cache takes its share).
- `hybrid_rerank_worker_cache_hits_total`, `hybrid_rerank_worker_cache_misses_total`: score-cache lookups.
- `hybrid_rerank_worker_tasks_in_progress`: tasks running now (a dead process's share is dropped).

prometheus_client picks its multiprocess value class when it is first imported, so the parent sets
PROMETHEUS_MULTIPROC_DIR before importing it (and before the pool forks): `serve` does both, at `worker_init`.
Nothing here imports prometheus_client at module level.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hybrid_rerank.workers.protocol import Candidate
    from hybrid_rerank.workers.scorer import ScoredCandidate

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "hybrid_rerank_worker"
TaskOutcome = Literal["scored", "refused", "failed"]
QueueKind = Literal["interactive", "batch"]
# Seconds: a cached reply takes a millisecond, a large CPU batch tens of seconds.
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_PROCESS_FILE = re.compile(r"_(\d+)\.db$")


@dataclass
class MetricsServer:
    """The parent's metrics endpoint and the folder its pool processes write to."""

    folder: Path
    created: bool  # a folder of our own, removed at shutdown
    port: int
    _server: Any
    _thread: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.created:
            shutil.rmtree(self.folder, ignore_errors=True)

    def forget_in_child(self) -> None:
        """In a forked pool process: close the inherited listening socket (the serving thread was not
        inherited), leaving the parent's server and folder alone."""
        self._server.socket.close()


def prepare_folder(configured: str | None, *, label: str = "worker") -> tuple[Path, bool]:
    """The folder for this worker's metric files: PROMETHEUS_MULTIPROC_DIR when set (one folder per worker:
    its stale files from an earlier run are removed, else a restarted worker would count them again), or a
    fresh one in the temp dir. Returns the folder and whether it was made here."""
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        return folder, False
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:40]
    return Path(tempfile.mkdtemp(prefix=f"hybrid-rerank-metrics-{safe}-")), True


def serve(port: int, host: str, *, label: str = "worker") -> MetricsServer:
    """In the worker's parent, before the pool forks: point prometheus_client at the metric folder, then
    serve the sum over every process's files on `host:port`."""
    folder, created = prepare_folder(os.environ.get(MULTIPROC_ENV), label=label)
    os.environ[MULTIPROC_ENV] = str(folder)  # before the import below; the pool processes inherit it
    from prometheus_client import CollectorRegistry, start_http_server, values

    # Something imported prometheus_client before this point (a user's module): choose the value class
    # again, now that the folder is set, so metrics made after the fork write to files.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    registry.register(_LiveProcessCollector(folder))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return MetricsServer(folder, created, port, server, thread)


class _LiveProcessCollector:
    """prometheus_client's MultiProcessCollector, after dropping the live gauges of pool processes that died
    without saying so (a SIGKILL; a process that exits normally does it itself in `process_exited`)."""

    def __init__(self, folder: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        self.inner = MultiProcessCollector(None, str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Any]:
        from prometheus_client import multiprocess

        for pid in dead_processes(self.folder):
            multiprocess.mark_process_dead(pid, str(self.folder))  # type: ignore[no-untyped-call]
        return self.inner.collect()  # type: ignore[no-untyped-call,no-any-return]


def dead_processes(folder: Path) -> list[int]:
    """Pids that left metric files but no longer run."""
    pids = {int(m.group(1)) for f in folder.glob("*.db") if (m := _PROCESS_FILE.search(f.name))}
    return sorted(pid for pid in pids if not _running(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exited() -> None:
    """In a pool process that exits: drop its share of the live gauges (its counts stay, as they should)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class TaskMetrics:
    """The metrics one process records; made in that process (after the fork), once."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.task_seconds = Histogram(
            f"{PREFIX}_task_seconds",
            "Rerank task time, from receipt to reply",
            ["queue", "outcome"],
            buckets=TIME_BUCKETS,
        )
        self.model_seconds = Histogram(
            f"{PREFIX}_model_seconds",
            "Model scoring time in a task (score-cache misses only)",
            buckets=TIME_BUCKETS,
        )
        self.task_candidates = Histogram(
            f"{PREFIX}_task_candidates", "Candidates in one rerank task", buckets=SIZE_BUCKETS
        )
        self.cache_hits = Counter(f"{PREFIX}_cache_hits", "Candidates whose score came from the score cache")
        self.cache_misses = Counter(f"{PREFIX}_cache_misses", "Candidates the score cache did not have")
        self.in_progress = Gauge(
            f"{PREFIX}_tasks_in_progress", "Rerank tasks running now", multiprocess_mode="livesum"
        )

    @contextlib.contextmanager
    def task(self, queue: QueueKind) -> Iterator[TaskRecord]:
        """Times the task and counts it under the outcome the record holds when it ends."""
        record = TaskRecord(self)
        self.in_progress.inc()
        started = time.perf_counter()
        try:
            yield record
        except BaseException:
            record.outcome = "failed"
            raise
        finally:
            self.task_seconds.labels(queue, record.outcome).observe(time.perf_counter() - started)
            self.in_progress.dec()


class TaskRecord:
    """What one task reports while it runs."""

    def __init__(self, metrics: TaskMetrics) -> None:
        self.metrics = metrics
        self.outcome: TaskOutcome = "refused"  # until it has scored

    def scored(self, candidates: int, from_cache: int, cache_used: bool) -> None:
        self.outcome = "scored"
        self.metrics.task_candidates.observe(candidates)
        if cache_used:
            self.metrics.cache_hits.inc(from_cache)
            self.metrics.cache_misses.inc(candidates - from_cache)

    def timed_score(
        self, score: Callable[[str, Sequence[Candidate]], list[ScoredCandidate]]
    ) -> Callable[[str, Sequence[Candidate]], list[ScoredCandidate]]:
        """`score` that records the model's time."""

        def timed(query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
            started = time.perf_counter()
            try:
                return score(query, candidates)
            finally:
                self.metrics.model_seconds.observe(time.perf_counter() - started)

        return timed


def queue_kind(routing_key: object) -> QueueKind:
    from hybrid_rerank.workers.protocol import BATCH_QUEUE_SUFFIX

    return (
        "batch"
        if isinstance(routing_key, str) and routing_key.endswith(BATCH_QUEUE_SUFFIX)
        else "interactive"
    )

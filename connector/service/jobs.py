"""Async jobs for long work (`POST /jobs`, `GET /jobs/{id}`): a rerank of many documents or a batch of
searches, run off the request thread. Their rerank work goes to the workers' batch queue (through
`Reranker.rerank_many`), so a big job never holds live searches past their deadline.

Job records live in Redis when REDIS_URL is set (any API replica answers `GET /jobs/{id}`; records expire
after SERVICE_JOB_TTL_S), else in this process. A job runs in the process that accepted it: if that process
dies, its record stays "running" until it expires.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

JobState = Literal["queued", "running", "succeeded", "failed"]
KEY_PREFIX = "hybrid_rerank:job:"


@dataclass
class JobRecord:
    id: str
    kind: str
    state: JobState = "queued"
    created: float = field(default_factory=time.time)
    finished: float | None = None
    done: int = 0
    total: int = 0
    result: Any = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class JobStore(Protocol):
    def save(self, record: JobRecord) -> None: ...

    def load(self, job_id: str) -> JobRecord | None: ...


class MemoryJobStore:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._records: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def save(self, record: JobRecord) -> None:
        with self._lock:
            now = time.time()
            for job_id in [
                i for i, r in self._records.items() if r.finished and now - r.finished > self.ttl_s
            ]:
                del self._records[job_id]
            self._records[record.id] = JobRecord(**asdict(record))

    def load(self, job_id: str) -> JobRecord | None:
        with self._lock:
            record = self._records.get(job_id)
            return None if record is None else JobRecord(**asdict(record))


class RedisJobStore:
    def __init__(self, client: Any, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    def save(self, record: JobRecord) -> None:
        self.client.set(KEY_PREFIX + record.id, json.dumps(record.to_json()), ex=self.ttl_s)

    def load(self, job_id: str) -> JobRecord | None:
        raw = self.client.get(KEY_PREFIX + job_id)
        return None if raw is None else JobRecord(**json.loads(raw))


Work = Callable[[Callable[[int, int], None]], Any]  # called with a progress callback; returns the result


class JobRunner:
    """Runs jobs two at a time in this process; each job's record shows its progress and result."""

    def __init__(self, store: JobStore, workers: int = 2) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")

    def submit(self, kind: str, total: int, work: Work) -> JobRecord:
        record = JobRecord(id=uuid.uuid4().hex, kind=kind, total=total)
        self.store.save(record)
        self._pool.submit(self._run, record, work)
        return record

    def _run(self, record: JobRecord, work: Work) -> None:
        record.state = "running"
        self.store.save(record)
        last_saved = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last_saved
            record.done, record.total = done, total
            if time.monotonic() - last_saved > 0.5:  # a record write per half second, not per query
                last_saved = time.monotonic()
                self.store.save(record)

        try:
            record.result = work(progress)
            record.state = "succeeded"
            record.done = record.total
        except Exception as exc:  # a job fails visibly in its record; the service goes on
            record.state = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
        record.finished = time.time()
        self.store.save(record)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

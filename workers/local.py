"""Start a local Celery worker process (`celery -A hybrid_rerank.workers worker`) and wait until its model is
loaded: for benchmarks and integration tests, which need real worker processes on this machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from celery import Celery

CELERY = str(Path(sys.executable).with_name("celery"))


class WorkerProcess:
    """One `celery worker` (a parent and its prefork children) in its own process group."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 1,
        cwd: Path | None = None,
        queues: Sequence[str] = (),
        pool: str | None = None,
    ) -> None:
        """`queues`: consume only these (`-Q`), in this order; empty: every queue the app declares. `pool`:
        Celery's `-P`; None: the app's (prefork, or threads with RERANK_BATCH_WINDOW_MS)."""
        self.name = name
        self.pool = pool
        self.queues = list(queues)
        self.env = env
        self.cwd = cwd  # celery puts its working directory on sys.path, as a user's project folder is
        self.log = log_dir / f"{name}.log"
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    @property
    def hostname(self) -> str:
        return f"{self.name}@{os.uname().nodename}"

    def start(self, app: Celery, timeout_s: float = 120.0) -> WorkerProcess:
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    CELERY,
                    "-A",
                    "hybrid_rerank.workers",
                    "worker",
                    "-c",
                    str(self.concurrency),
                    "-n",
                    self.hostname,
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    *(["-Q", ",".join(self.queues)] if self.queues else []),
                    *(["-P", self.pool] if self.pool else []),
                ],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(app, timeout_s)
        return self

    def wait_ready(self, app: Celery, timeout_s: float) -> None:
        """Until the worker answers a ping and its processes have the model loaded."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.log.read_text()[-3000:]}")
            replies = app.control.ping(destination=[self.hostname], timeout=1.0)
            this_run = self.log.read_bytes()[self._log_start :].decode("utf-8", "replace")
            if replies and this_run.count("model ready") >= self.models:
                return
            time.sleep(0.5)
        tail = self.log.read_text()[-3000:]
        raise TimeoutError(f"worker {self.name} not ready after {timeout_s}s:\n{tail}")

    @property
    def models(self) -> int:
        """Models the worker loads: one per prefork process, one for a threads or solo pool."""
        batching = float(self.env.get("RERANK_BATCH_WINDOW_MS") or 0) > 0
        pool = self.pool or ("threads" if batching else "prefork")
        return self.concurrency if pool == "prefork" else 1

    def processes(self) -> list[int]:
        """The worker's processes (its parent and pool processes: its process group), from /proc."""
        if self.process is None:
            return []
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == self.process.pid:  # field 5 of stat: the process group
                found.append(int(stat.parent.name))
        return sorted(found)

    def peak_rss_mib(self) -> dict[int, float]:
        """Each process's peak resident set so far (VmHWM), MiB, by pid."""
        peaks = {}
        for pid in self.processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1]) / 1024.0
        return peaks

    def ready_after_s(self) -> list[float]:
        """Seconds from the worker's start to each "model ready" its processes logged in this run."""
        this_run = self.log.read_bytes()[self._log_start :].decode("utf-8", "replace")
        return [
            float(s) for s in re.findall(r"model ready: .*? ([\d.]+) s after the worker started", this_run)
        ]

    def task_seconds(self) -> list[float]:
        """Each task's time in this run as the worker logged it ("succeeded in"), in the order they ended."""
        this_run = self.log.read_bytes()[self._log_start :].decode("utf-8", "replace")
        return [float(s) for s in re.findall(r"\] succeeded in ([\d.]+)s", this_run)]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_all(self) -> None:
        """SIGKILL the whole worker: parent and children, no chance to clean up."""
        if self.process is not None and self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill_all()

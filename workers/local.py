"""Start a local Celery worker process (`celery -A hybrid_rerank.workers worker`) and wait until its model is
loaded: for benchmarks and integration tests, which need real worker processes on this machine."""

from __future__ import annotations

import os
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
    ) -> None:
        """`queues`: consume only these (`-Q`), in this order; empty: every queue the app declares."""
        self.name = name
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
            if replies and this_run.count("model ready") >= self.concurrency:
                return
            time.sleep(0.5)
        tail = self.log.read_text()[-3000:]
        raise TimeoutError(f"worker {self.name} not ready after {timeout_s}s:\n{tail}")

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

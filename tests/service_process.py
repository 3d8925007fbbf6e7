"""`hybrid-rerank serve` as a real process on loopback, for the tests that talk to the service over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("hybrid-rerank")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the service exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"the service did not answer /healthz in {timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}"
    )


# Settings a developer's shell may carry that would point a test's service elsewhere: unset unless given.
SERVICE_VARIABLES = ("OPENSEARCH_URL", "REDIS_URL", "API_KEY", "CORS_ORIGINS", "INDEX_NAME", "RERANK_MODEL")


def clean_environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without the service settings, offline, then `env`."""
    base = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    return {**base, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env}


@contextmanager
def start_service(
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    port: int | None = None,
    args: list[str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[ServiceProcess]:
    """Start `hybrid-rerank serve` with `env` over this process's environment; stop it on exit. Its log
    (stdout and stderr) goes to a file next to `cwd` so a failing test can show it."""
    port = port or free_port()
    workdir = cwd or Path(env.get("DATA_DIR", REPO))
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"serve-{port}.log"
    full_env = clean_environment(env)
    command = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(port), *(args or [])]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=full_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    service = ServiceProcess(f"http://127.0.0.1:{port}", log_path, process, env)
    try:
        wait_until_up(service.url, process, log_path, timeout_s)
        yield service
    finally:
        service.stop()

"""Engine-agnostic node control: pids, dropping root, stopping, health and port checks, logs, lock, state."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import Fail, log

# ------------------------------------------------------------------------------------------------ pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def pids_with_arg(prefix: str, exact: str | None = None) -> list[int]:
    """Live processes (other than this one) with an argument starting with `prefix`, e.g. the
    `-Dopensearch.path.home=<work>/dist/` that the launcher gives the node's JVM, and, when `exact` is given,
    also an argument equal to it (e.g. the `-Epath.logs=...` that tells one node of a work folder from
    another)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        args = cmdline(int(entry))
        if (
            any(a.startswith(prefix) for a in args)
            and (exact is None or exact in args)
            and pid_alive(int(entry))
        ):
            pids.append(int(entry))
    return sorted(pids)


def terminate(pids: list[int], timeout: float) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.5)
    for pid in pids:
        if pid_alive(pid):
            log(f"pid {pid} still alive after {timeout:.0f}s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)


def drop_root(chown_dirs: list[Path], how_var: str, product: str) -> list[str]:
    """OpenSearch (and Elasticsearch) refuse to run as root ("can not run opensearch as root"). As root, run
    the node in a new user namespace (where it is uid 65534 but keeps access to root's files), or else as
    nobody via setpriv. Returns the command prefix; `how_var` names the variable that forces either way."""

    def chown_all(uid: int) -> None:  # the writable folders must belong to whoever runs the node
        for d in chown_dirs:
            if d.is_dir() and d.stat().st_uid == uid:
                continue
            for dirpath, _dirnames, filenames in os.walk(d):
                os.chown(dirpath, uid, uid)
                for f in filenames:
                    os.chown(os.path.join(dirpath, f), uid, uid, follow_symlinks=False)

    if os.geteuid() != 0:
        return []
    how = (os.environ.get(how_var) or "auto").strip().lower()
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if how in ("auto", "unshare") and unshare:
        r = subprocess.run([unshare, "--user", "true"], capture_output=True, text=True)
        if r.returncode == 0:
            chown_all(0)
            return [unshare, "--user", "--"]
        if how == "unshare":
            raise Fail(f"unshare --user failed: {r.stderr.strip()}")
        log(f"unshare --user is not available ({r.stderr.strip()}); running the node as nobody via setpriv")
    if how in ("auto", "setpriv") and setpriv:
        chown_all(65534)
        return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    raise Fail(
        f"running as root, and neither `unshare --user` nor setpriv can drop root: {product} refuses to "
        "run as root; run this script as a non-root user"
    )


# --------------------------------------------------------------------------------------- lock and state


def lock(path: Path) -> int:
    """Take an exclusive lock on `path`, held until this process exits (the fd is never closed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def read_state(path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    except (OSError, ValueError):
        return {}


def write_state(path: Path, state: dict[str, Any]) -> None:
    path.write_text(json.dumps(state))


def running_pid(pids: list[int], state: dict[str, Any], pidfile: Path) -> int | None:
    """Which of the node's live `pids` is the node: the one in the state file, else the launcher's pidfile,
    else the first."""
    pid: int | None = state.get("pid")
    if pid in pids:
        return pid
    try:
        filepid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        filepid = None
    if filepid in pids:
        return filepid
    return pids[0] if pids else None


# ------------------------------------------------------------------------------------------ http, port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body or None); status 0 if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body = e.read()
        status = e.code
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def cluster_health(base_url: str, cluster_name: str, wait: str = "0s") -> str | None:
    """green/yellow/red from `_cluster/health` (waiting up to `wait` for yellow), or None if nothing
    answers or the answer is not from a cluster named `cluster_name` (someone else's node on the port)."""
    status, body = http_get(
        f"{base_url}/_cluster/health?wait_for_status=yellow&timeout={wait}",
        timeout=10 + (int(wait[:-1]) if wait.endswith("s") else 0),
    )
    if status == 200 and isinstance(body, dict) and body.get("cluster_name") == cluster_name:
        return body.get("status")
    return None


def port_open(p: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", p)) == 0


def wait_healthy(health: Callable[[str], str | None], pids: Callable[[], list[int]], timeout: float) -> bool:
    """Poll `health(wait)` until yellow/green; False once the node's `pids` are gone or after `timeout`."""
    t0 = time.monotonic()
    last = 0.0
    while True:
        elapsed = time.monotonic() - t0
        st = health("2s")
        if st in ("yellow", "green"):
            log(f"healthy ({st}) after {elapsed:.1f}s")
            return True
        live = pids()
        if not live and elapsed > 5:
            log("the node process exited")
            return False
        if elapsed > timeout:
            log(f"not healthy after {timeout:.0f}s")
            return False
        if elapsed - last >= 10:
            log(f"waiting for the node ({elapsed:.0f}s, pid {live[0] if live else '?'})")
            last = elapsed
        time.sleep(1)


# ------------------------------------------------------------------------------------------------ logs


def tail(path: Path, n: int = 60, offset: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return f"(no {path})"
    if not lines:
        return "(nothing new)"
    return "\n".join(line if len(line) <= 2000 else line[:2000] + " ..." for line in lines[-n:])


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

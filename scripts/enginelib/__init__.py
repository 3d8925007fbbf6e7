"""Shared parts of the scripts that run a search engine node from Maven Central artifacts (no Docker).

scripts/opensearch uses it; a scripts/elasticsearch would work the same way and reuse it. The engine-agnostic
modules take their paths, environment variable names and names for messages as arguments:
  maven    write a pom, fetch with `mvn` into a private local repository, verify checksums, read pom
           dependencies, unpack zips
  java     pick a JDK for the engine version
  process  pids, dropping root, stopping, HTTP health and port checks, log tails, lock and state files
  instances  named nodes beside the default one (own run/logs/tmp/data), extra settings in a copied config
The engine-specific part (artifact list, modules, config, assembly) is a module of its own, e.g. opensearch.

Python 3 standard library only: the scripts run before any virtualenv exists. The scripts import it by
putting scripts/ first on sys.path (with sys.dont_write_bytecode set, so nothing is written beside it).
"""

from __future__ import annotations

import os
import sys

_log_name = "engine"


class Fail(Exception):
    pass


class StartFail(Fail):
    """Assembling or starting a variant failed (as opposed to a usage error or a busy port)."""


def set_log_name(name: str) -> None:
    """The `[name]` that prefixes every message of `log` (the command's name)."""
    global _log_name
    _log_name = name


def log(msg: str) -> None:
    print(f"[{_log_name}] {msg}", file=sys.stderr, flush=True)


def flag(name: str, default: str) -> bool:
    val = (os.environ.get(name) or default).strip().lower()
    return val in ("1", "true", "yes", "on")


def env_port(name: str, default: str) -> int:
    raw = os.environ.get(name) or default
    try:
        p = int(raw)
    except ValueError:
        raise Fail(f"{name}={raw!r} is not a port number") from None
    if not 1 <= p <= 65535:
        raise Fail(f"{name}={raw!r} is not a port number")
    return p

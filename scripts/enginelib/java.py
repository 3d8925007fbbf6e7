"""Picking a JDK from the machine's JDKs for a given engine version (the engine's module says which)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from . import Fail


def java_major(home: Path) -> int | None:
    rel = home / "release"
    if rel.is_file():
        m = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', rel.read_text(errors="replace"), re.M)
        if m:
            return int(m.group(2)) if m.group(1) == "1" else int(m.group(1))
    java = home / "bin" / "java"
    if not os.access(java, os.X_OK):
        return None
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    return int(m.group(2)) if m.group(1) == "1" else int(m.group(1))


def explicit_home(home_var: str) -> Path | None:
    """The JDK that $`home_var` names, if set."""
    explicit = os.environ.get(home_var)
    if not explicit:
        return None
    home = Path(explicit)
    if not os.access(home / "bin" / "java", os.X_OK):
        raise Fail(f"{home_var}={explicit} has no bin/java")
    return home


def pick_java(
    prefs: list[int], *, home_var: str, product: str, need: str, newer_from: int | None = None
) -> Path:
    """The JDK to run `product` with: $`home_var` if set, else the first of the Java versions `prefs` found
    in $JAVA_HOME, /usr/lib/jvm or on PATH, else (if `newer_from` is set) the oldest one from `newer_from` on.
    `need` says in the error which versions would do."""
    explicit = explicit_home(home_var)
    if explicit:
        return explicit
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(p for p in jvm.iterdir() if p.is_dir() and not p.is_symlink())
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    found: dict[int, Path] = {}
    for c in candidates:
        m = java_major(c)
        if m is not None and m not in found:
            found[m] = c
    for m in prefs:
        if m in found:
            return found[m]
    if newer_from is not None:
        newer = sorted(m for m in found if m >= newer_from)
        if newer:
            return found[newer[0]]
    raise Fail(
        f"no suitable JDK found for {product}: need Java {need}; found {sorted(found) or 'none'}. "
        f"Install one (e.g. apt-get install openjdk-17-jdk-headless) or set {home_var}."
    )

"""Several nodes of one work folder side by side, and extra settings for a node.

The work folder's own node (no instance name) keeps the layout it always had: <work>/run (pid and state
files), <work>/logs, <work>/tmp and <work>/data. A named instance gets the same folders under
<work>/instances/<name>/, so it runs beside the default node from the same distribution, on its own port,
with its own data, logs and pid, and is found, stopped and reset on its own.

A node with extra settings (lines appended to the engine's yml) runs from a copy of the distribution's
configuration folder, in <its run folder>/config, so the distribution itself is never changed; a node without
them runs from the distribution's configuration, as before.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

from . import Fail

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Instance(NamedTuple):
    name: str  # "" for the work folder's own node
    run: Path  # pid file, state file, lock, copied configuration
    logs: Path
    tmp: Path
    data: Path  # parent of the per-version data folders

    @property
    def config_copy(self) -> Path:
        return self.run / "config"

    def label(self) -> str:
        return f"instance {self.name!r}" if self.name else "the default node"


def instance(work: Path, name: str) -> Instance:
    root = work / "instances" / name if name else work
    return Instance(name, root / "run", root / "logs", root / "tmp", root / "data")


def instance_name(var: str) -> str:
    """The instance named by the environment variable `var` ("" when unset); raises Fail when unusable."""
    name = (os.environ.get(var) or "").strip()
    if name and not NAME.match(name):
        raise Fail(
            f"{var}={name!r}: use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def extra_settings(var: str) -> str:
    """The lines of the environment variable `var` (one `key: value` per line), blank lines dropped."""
    raw = os.environ.get(var) or ""
    return "\n".join(line.rstrip() for line in raw.splitlines() if line.strip())


def config_with_extras(
    dist_config: Path, dest: Path, yml: str, extra: str, replace: dict[str, str], var: str
) -> Path:
    """A fresh copy of `dist_config` in `dest` with `extra` appended to its `yml` file and each key of
    `replace` replaced by its value in `jvm.options` (e.g. the log folder written into it at assembly)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(dist_config, dest, symlinks=True)
    jvm = dest / "jvm.options"
    if jvm.is_file():
        text = jvm.read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        jvm.write_text(text)
    target = dest / yml
    text = target.read_text() if target.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    target.write_text(f"{text}# from {var}\n{extra}\n" if extra else text)
    return dest

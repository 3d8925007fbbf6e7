"""The embedded backend's write order under a crash at every step.

A forked child opens an index, installs a hook on every operation a write performs (each directory made, each
file opened for writing and each write to it, `np.save`, `Path.write_text`, the `os.replace` that makes the
new generation live, each `shutil.rmtree`) and SIGKILLs itself just before or just after one of them. The
parent then opens the index: it must be the complete old version (killed before the rename) or the complete
new one (killed after it), never a mix and never unreadable, and the next write must succeed."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document

OLD_DOCS = [Document("a", "the moon orbits the earth"), Document("b", "steak rests after grilling")]
OLD_VECTORS = np.eye(2, 4, dtype=np.float32)
# The write under test updates "b" and adds "c".
NEW_DOCS = [Document("b", "bread dough rises as yeast ferments"), Document("c", "a database log survives")]
NEW_VECTORS = np.array([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
State = dict[str, tuple[str, tuple[float, ...]]]


def state_of(docs: list[Document], vectors: np.ndarray) -> State:
    return {d.id: (d.text, tuple(float(x) for x in v)) for d, v in zip(docs, vectors, strict=True)}


OLD: State = state_of(OLD_DOCS, OLD_VECTORS)
NEW: State = {**OLD, **state_of(NEW_DOCS, NEW_VECTORS)}
EXTRA = Document("d", "rain clouds bring a storm")
EXTRA_VECTOR = np.array([[0.5, 0.5, 0.5, 0.5]], dtype=np.float32)


def loaded_state(data_dir: Path) -> State:
    """Everything a reader sees: ids, texts, vectors, the count, and a BM25 index that matches them."""
    backend = EmbeddedBackend(data_dir, "idx")
    info = backend.index_info()
    assert info is not None
    ids = [d.id for d in backend._documents]
    assert info.count == len(ids) == backend._vectors.shape[0]
    assert {h.document.id for h in backend.bm25("moon", 10)} == ({"a"} if "a" in ids else set())
    return state_of(backend._documents, backend._vectors)


class _Handle:
    """A file opened for writing whose every `write` is a step."""

    def __init__(self, inner: Any, step: Callable[[str, Callable[[], Any]], Any], name: str) -> None:
        self.inner, self.step, self.name = inner, step, name

    def write(self, data: Any) -> Any:
        return self.step(f"write {self.name}", lambda: self.inner.write(data))

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def install_hooks(kill_at: tuple[int, str] | None, steps: list[str]) -> None:
    """In the child only: number every write operation; SIGKILL this process before or after step n."""

    def step(name: str, run: Callable[[], Any]) -> Any:
        number = len(steps)
        steps.append(name)
        if kill_at == (number, "before"):
            os.kill(os.getpid(), signal.SIGKILL)
        result = run()
        if kill_at == (number, "after"):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def hook(owner: Any, attr: str) -> None:
        original = getattr(owner, attr)

        def hooked(*args: Any, **kwargs: Any) -> Any:
            named = ", ".join(a.name for a in args if isinstance(a, Path))
            return step(f"{attr} {named}", lambda: original(*args, **kwargs))

        setattr(owner, attr, hooked)

    for owner, attr in [
        (Path, "mkdir"),
        (Path, "write_text"),
        (np, "save"),
        (os, "replace"),
        (shutil, "rmtree"),
    ]:
        hook(owner, attr)
    original_open = Path.open

    def hooked_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not any(m in mode for m in "wax+"):
            return original_open(self, mode, *args, **kwargs)
        handle = step(f"open {self.name}", lambda: original_open(self, mode, *args, **kwargs))
        return _Handle(handle, step, self.name)

    Path.open = hooked_open  # type: ignore[method-assign]


def write_in_child(data_dir: Path, kill_at: tuple[int, str] | None, record: Path | None = None) -> int:
    """Fork; the child makes the write under test (dying at `kill_at`); returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            backend = EmbeddedBackend(data_dir, "idx")  # loaded before the hooks: only the write is counted
            steps: list[str] = []
            install_hooks(kill_at, steps)
            backend.bulk_index(NEW_DOCS, NEW_VECTORS)
            if record is not None:
                record.write_bytes(json.dumps(steps).encode())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


@pytest.fixture(scope="module")
def old_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("old")
    backend = EmbeddedBackend(base, "idx")
    backend.create_index("m", 4)
    backend.bulk_index(OLD_DOCS, OLD_VECTORS)
    assert loaded_state(base) == OLD
    return base


@pytest.fixture(scope="module")
def steps(old_index: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The steps of one whole write, recorded by a child that is not killed."""
    copy = tmp_path_factory.mktemp("record") / "data"
    shutil.copytree(old_index, copy)
    record = copy.parent / "steps.json"
    status = write_in_child(copy, None, record)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    recorded: list[str] = json.loads(record.read_text())
    assert loaded_state(copy) == NEW
    return recorded


def test_the_hooks_see_every_write_of_a_generation(steps: list[str]) -> None:
    names = " ".join(steps)
    for file in ("documents.jsonl", "vectors.npy", "terms.jsonl", "manifest.json", "CURRENT.tmp"):
        assert file in names, f"{file} is written without a hook seeing it: {steps}"
    assert [s for s in steps if s.startswith("replace")] == ["replace CURRENT.tmp, CURRENT"]


def kill_points(count: int) -> Iterator[tuple[int, str]]:
    for number in range(count):
        yield number, "before"
        yield number, "after"


def test_a_crash_at_any_step_leaves_the_old_or_the_new_index_whole(
    old_index: Path, steps: list[str], tmp_path: Path
) -> None:
    points = list(kill_points(len(steps)))
    new_seen: list[bool] = []
    for number, phase in points:
        where = f"killed {phase} step {number} ({steps[number]})"
        data = tmp_path / f"{number}-{phase}"
        shutil.copytree(old_index, data)
        status = write_in_child(data, (number, phase))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{where}: not killed"

        found = loaded_state(data)
        assert found in (OLD, NEW), f"{where}: neither the whole old nor the whole new index: {found}"
        new_seen.append(found == NEW)

        after = EmbeddedBackend(data, "idx")
        report = after.bulk_index([EXTRA], EXTRA_VECTOR)
        assert report.written == 1 and not report.failures, where
        assert loaded_state(data) == {**found, **state_of([EXTRA], EXTRA_VECTOR)}, where
        live_folder = (data / "idx" / "CURRENT").read_text()
        assert [p.name for p in (data / "idx").glob("gen-*")] == [live_folder], f"{where}: leftovers"
    # One commit point, and it is the rename: old up to it, new from just after it.
    first_new = new_seen.index(True) if True in new_seen else len(points)
    assert new_seen == [False] * first_new + [True] * (len(points) - first_new)
    assert points[first_new] == (steps.index("replace CURRENT.tmp, CURRENT"), "after")

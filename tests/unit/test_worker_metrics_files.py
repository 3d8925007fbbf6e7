"""The worker metrics' folder handling and labels, without a worker (the integration test runs one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_rerank.workers.metrics import dead_processes, prepare_folder, queue_kind
from hybrid_rerank.workers.protocol import batch_queue_for, queue_for


def test_a_configured_folder_loses_its_stale_files_and_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old run")
    (folder / "histogram_456.db").write_bytes(b"old run")
    (folder / "notes.txt").write_text("not ours")
    assert prepare_folder(str(folder)) == (folder, False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    made = tmp_path / "new" / "metrics"
    assert prepare_folder(str(made)) == (made, False) and made.is_dir()


def test_without_a_configured_folder_each_worker_gets_a_fresh_one() -> None:
    first, created = prepare_folder(None, label="w1@host/x")
    second, _ = prepare_folder(None, label="w1@host/x")
    try:
        assert created and first != second and first.is_dir() and not any(first.iterdir())
        assert "/" not in first.name and first.name.startswith("hybrid-rerank-metrics-w1-host-x-")
    finally:
        first.rmdir()
        second.rmdir()


def test_dead_processes_are_the_pids_of_files_whose_process_is_gone(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    for name in (f"counter_{os.getpid()}.db", f"gauge_livesum_{dead_pid}.db", f"histogram_{dead_pid}.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "other.db").write_bytes(b"")
    assert dead_processes(tmp_path) == [dead_pid]


@pytest.mark.parametrize(
    ("routing_key", "kind"),
    [
        (queue_for("/m/x"), "interactive"),
        (batch_queue_for("/m/x"), "batch"),
        (None, "interactive"),
        ("", "interactive"),
    ],
)
def test_the_queue_label_is_interactive_or_batch(routing_key: object, kind: str) -> None:
    assert queue_kind(routing_key) == kind

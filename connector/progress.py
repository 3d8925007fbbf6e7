"""Progress for long work: a live bar on a terminal, a line per tenth of the work in logs and CI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(
    console: Console, label: str, total: int, unit: str = "docs"
) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`."""
    if console.is_terminal:
        columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=total)
            yield lambda done, _total: progress.update(task, completed=done)
        return

    started = time.perf_counter()
    next_report = 0.1

    def update(done: int, all_of: int) -> None:
        nonlocal next_report
        share = done / all_of if all_of else 1.0
        if share >= next_report or done == all_of:
            rate = done / max(time.perf_counter() - started, 1e-9)
            console.print(f"{label}: {done}/{all_of} {unit} ({rate:.1f} {unit}/s)", highlight=False)
            while next_report <= share:
                next_report += 0.1

    yield update

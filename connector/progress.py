"""Progress for long work, with a rate and an ETA: a live bar on a terminal, a line per tenth of the work in
logs and CI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# A rate over less time than this is noise (or items that were already done, such as cache hits).
MIN_RATE_SECONDS = 0.5


class RateColumn(ProgressColumn):
    """rich's speed estimate, which leaves out the first update's items as the line mode does."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("rate pending" if speed is None else f"{speed:.1f} {self.unit}/s")


class RateWindow:
    """Rate and ETA over the items done since the first update. Work reported at once by that update (cache
    hits, a resumed run) took no measured time, so counting it from the bar's creation read millions of
    docs/s; and no rate is given until MIN_RATE_SECONDS have passed."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start: tuple[float, int] | None = None  # (time, done) at the first update

    def measure(self, done: int, total: int) -> tuple[float | None, float | None]:
        """(items per second, seconds left), each None while pending; no time is left once all is done."""
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
        started, done_then = self.start
        elapsed, items = now - started, done - done_then
        rate = items / elapsed if elapsed >= MIN_RATE_SECONDS and items > 0 else None
        remaining = max(total - done, 0)
        if remaining == 0:
            return rate, 0.0
        return rate, None if rate is None else remaining / rate


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h07m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@contextmanager
def progress_bar(
    console: Console,
    label: str,
    total: int,
    unit: str = "docs",
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`. Off a terminal each line reads
    `label: done/total unit (rate unit/s, ETA 1m20s)`; `clock` is for tests."""
    if console.is_terminal:
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(unit),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=total)
            yield lambda done, _total: progress.update(task, completed=done)
        return

    window = RateWindow(clock)
    next_report = 0.1

    def update(done: int, all_of: int) -> None:
        nonlocal next_report
        share = done / all_of if all_of else 1.0
        rate, left = window.measure(done, all_of)  # on every update: the first one opens the window
        if share >= next_report or done == all_of:
            speed = "rate pending" if rate is None else f"{rate:.1f} {unit}/s"
            eta = "pending" if left is None else duration(left)
            console.print(f"{label}: {done}/{all_of} {unit} ({speed}, ETA {eta})", highlight=False)
            while next_report <= share:
                next_report += 0.1

    yield update

"""Progress for long work, with a rate and an ETA: a live bar on a terminal, a line per tenth of the work in
logs and CI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

# A rate over less time than this is noise (or items that were already done, such as cache hits).
MIN_RATE_SECONDS = 0.5


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


def describe(rate: float | None, left: float | None, unit: str) -> tuple[str, str]:
    """(`12.5 docs/s` or `rate pending`, `1m20s` or `pending`)."""
    return (
        "rate pending" if rate is None else f"{rate:.1f} {unit}/s",
        "pending" if left is None else duration(left),
    )


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
    window = RateWindow(clock)
    if console.is_terminal:
        # Rate and ETA from the same window as the lines (rich's own estimate has no minimum interval).
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}, ETA {task.fields[eta]}", markup=False),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=total, rate="rate pending", eta="pending")

            def advance(done: int, all_of: int) -> None:
                rate, eta = describe(*window.measure(done, all_of), unit)
                progress.update(task, completed=done, total=all_of, rate=rate, eta=eta)

            yield advance
        return

    next_tenth = 1  # whole tenths: summing 0.1s skipped the line at 60% (0.1 * 6 > 0.6)

    def update(done: int, all_of: int) -> None:
        nonlocal next_tenth
        tenths = done * 10 // all_of if all_of else 10
        rate, eta = describe(*window.measure(done, all_of), unit)  # every update: the first opens the window
        if tenths >= next_tenth or done == all_of:
            console.print(f"{label}: {done}/{all_of} {unit} ({rate}, ETA {eta})", highlight=False)
            next_tenth = tenths + 1

    yield update

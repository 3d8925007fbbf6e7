"""Progress lines off a terminal, against an injected clock: honest rates from the first line, and an ETA."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from hybrid_rerank.connector.progress import duration, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines_of(updates: list[tuple[float, int]], total: int) -> list[str]:
    """Feed `update(done, total)` at each (time, done) and return the printed lines."""
    stream, clock = io.StringIO(), Clock()
    console = Console(file=stream, width=200, force_terminal=False)
    with progress_bar(console, "embedding", total, unit="docs", clock=clock) as update:
        for at, done in updates:
            clock.now = 100.0 + at
            update(done, total)
    return stream.getvalue().splitlines()


def test_work_done_before_the_first_update_does_not_inflate_the_rate() -> None:
    # 900 cached documents arrive 1 ms after the bar opens, then 100 more take 2 s.
    lines = lines_of([(0.001, 900), (1.0, 950), (2.001, 1000)], total=1000)
    assert lines == [
        "embedding: 900/1000 docs (rate pending, ETA pending)",
        "embedding: 1000/1000 docs (50.0 docs/s, ETA 0s)",
    ]


def test_rate_is_items_over_time_since_the_first_update_and_eta_is_remaining_over_rate() -> None:
    # 10 documents a second, the first batch after 3 s of model loading (outside the window).
    lines = lines_of([(3.0 + i, 10 * (i + 1)) for i in range(10)], total=100)
    assert lines[0] == "embedding: 10/100 docs (rate pending, ETA pending)"
    assert lines[1] == "embedding: 20/100 docs (10.0 docs/s, ETA 8s)"  # 80 left at 10/s
    assert lines[5] == "embedding: 60/100 docs (10.0 docs/s, ETA 4s)"
    assert lines[-1] == "embedding: 100/100 docs (10.0 docs/s, ETA 0s)"
    assert len(lines) == 10


def test_no_rate_over_a_near_zero_interval() -> None:
    lines = lines_of([(0.0, 1), (0.1, 500), (30.0, 900), (50.0, 1000)], total=1000)
    assert lines[0] == "embedding: 500/1000 docs (rate pending, ETA pending)"  # 499 docs in 0.1 s
    assert lines[1] == "embedding: 900/1000 docs (30.0 docs/s, ETA 3s)"  # 899 in 30 s, 100 left
    assert lines[2] == "embedding: 1000/1000 docs (20.0 docs/s, ETA 0s)"  # 999 in 50 s
    assert len(lines) == 3


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (45.2, "45s"), (185, "3m05s"), (7620, "2h07m")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_terminal_gets_a_live_bar_with_the_same_rate_and_eta() -> None:
    stream, clock = io.StringIO(), Clock()
    console = Console(file=stream, width=120, force_terminal=True)
    with progress_bar(console, "embedding", 1000, clock=clock) as update:
        update(900, 1000)  # the window opens here
        clock.now += 2.0
        update(950, 1000)
    shown = stream.getvalue()
    assert "950/1000" in shown and "25.0 docs/s, ETA 2s" in shown  # 50 docs in 2 s, 50 left

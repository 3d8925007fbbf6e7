"""What every lab report is and the one helper that writes it: `<stem>.json`, `<stem>.png`, and the table for
people (or the JSON for programs with `--json`).

Tables are read off terminals and out of logs alike: no cell is ever cut or wrapped (a log once showed
`baseline CrossEncoder.predict fp32` as `baseli…`). matplotlib is imported only inside each report's
`plot`, so the core never loads it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table


class Report(ABC):
    """A typed, frozen result of `eval` or a benchmark (subclasses are frozen dataclasses)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The JSON file's content; its keys are what docs/results and the README cite."""

    @abstractmethod
    def table(self) -> Table:
        """The table a person reads."""

    @abstractmethod
    def plot(self, path: Path) -> None:
        """The chart, as a PNG at `path`."""

    def printed_json(self) -> dict[str, Any]:
        """What `--json` prints: the file's content unless that holds raw samples."""
        return self.to_json()


def write_report(
    report: Report, out_dir: Path, stem: str, console: Console, as_json: bool
) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.png` under `out_dir`, then print the table (or the JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    report.plot(png_path)
    if as_json:
        # `out`, not `print`: plain text (no markup, no wrapping) to the console's stream.
        console.out(json.dumps(report.printed_json(), indent=2), highlight=False)
    else:
        console.print(report.table(), crop=False)
        console.print(f"report: {json_path}, chart: {png_path}", highlight=False)
    return json_path, png_path


def report_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    names: int = 1,
    caption: str | None = None,
) -> Table:
    """The first `names` columns hold names (left-aligned), the rest figures (right-aligned). Every column is
    at least as wide as its widest cell, so no cell is cut, folded or wrapped however narrow the console;
    only headers wrap. Print it with `crop=False`: a table wider than the console then runs past the edge
    instead of losing its last columns."""
    table = Table(title=title, caption=caption)
    for index, header in enumerate(headers):
        widest = max((cell_len(row[index]) for row in rows), default=0)
        is_name = index < names
        table.add_column(
            header,
            justify="left" if is_name else "right",
            min_width=max(widest, cell_len(header)) if is_name else widest,
            no_wrap=is_name,
            overflow="fold",  # for a header word longer than its column
        )
    for row in rows:
        table.add_row(*row)
    return table

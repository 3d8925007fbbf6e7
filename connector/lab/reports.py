"""What every lab report is and the one helper that writes it: `<stem>.json`, `<stem>.png`, and the table for
people (or the JSON for programs with `--json`).

Tables are read off terminals and out of logs alike: a column of names is never cut or wrapped (a log cut
`baseline CrossEncoder.predict fp32` to `baseli…`), and numbers fold rather than lose digits when space runs
out. matplotlib is imported only inside each report's `plot`, so the core never loads it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
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
        console.print(report.table())
        console.print(f"report: {json_path}, chart: {png_path}", highlight=False)
    return json_path, png_path


def name_column(table: Table, header: str, names: Iterable[str]) -> None:
    """A column of names, never cut or wrapped however narrow the console: it is as wide as its longest
    name, and rich shrinks the other columns first."""
    widest = max((cell_len(name) for name in names), default=0)
    table.add_column(header, no_wrap=True, min_width=max(widest, cell_len(header)))


def number_columns(table: Table, *headers: str) -> None:
    """Right-aligned figure columns that fold, never drop digits, when the console is too narrow."""
    for header in headers:
        table.add_column(header, justify="right", overflow="fold")

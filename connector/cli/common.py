"""What every command shares: the app, the consoles, settings, staged progress, and the lab check."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from hybrid_rerank.connector.errors import ConnectorError, HybridRerankError
from hybrid_rerank.connector.progress import progress_bar
from hybrid_rerank.connector.settings import Settings, load_settings

HELP = "The `hybrid-rerank` command line: tables for people, JSON (`--json`) for programs."
# Off a terminal (a pipe, a log, CI) rich would cut tables to 80 columns; the widest table fits in this.
PIPE_WIDTH = 200

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)


def _console(stream: object) -> Console:
    """Long messages stay one line, so logs can be grepped; tables keep their columns off a terminal."""
    is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    width = None if is_terminal else max(PIPE_WIDTH, shutil.get_terminal_size().columns)
    return Console(soft_wrap=True, width=width, stderr=stream is sys.stderr)


out = _console(sys.stdout)
err = _console(sys.stderr)


def flag(console: Console, label: str, style: str, message: object) -> None:
    """`label` styled, then the message as plain text: file names, record errors and document text may
    hold brackets that rich would otherwise read as markup (and drop, or fail on)."""
    console.print(Text.assemble((label, style), " ", str(message)), highlight=False)


def load() -> Settings:
    return load_settings()


# What the lab extra installs beyond the core; each lab command checks for them before any work.
LAB_MODULES = ("matplotlib",)
TRAINING_MODULES = ("datasets", "accelerate")


def require_lab(*modules: str) -> None:
    """Raise a clear error naming the extra to install when the lab's dependencies are missing, before a
    long run finds out at its end."""
    missing = [m for m in (*LAB_MODULES, *modules) if not _installed(m)]
    if missing:
        raise ConnectorError(
            f"this command needs the lab extra ({', '.join(missing)} not installed): "
            "pip install 'hybrid-rerank[lab]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a broken or blocked package is as good as missing
        return False


@contextlib.contextmanager
def staged_progress() -> Iterator[Callable[[str, int, int], None]]:
    """`progress(stage, done, total)`: one progress bar per named stage of a long command."""
    with contextlib.ExitStack() as stack:
        bars: dict[str, Callable[[int, int], None]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                unit = "docs" if stage == "embedding corpus" else "queries"
                bars[stage] = stack.enter_context(progress_bar(err, stage, total, unit=unit))
            bars[stage](done, total)

        yield progress


def main() -> None:
    try:
        app()
    except HybridRerankError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # [lab] is not markup
        sys.exit(2)

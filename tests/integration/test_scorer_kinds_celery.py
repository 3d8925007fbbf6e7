"""Every local scorer kind served by real Celery worker processes on a real Redis: one worker with a tiny
Qwen3-style LLM yes/no reranker, one with a tiny XLM-RoBERTa cross-encoder, one with a tiny per-layer-head
LLM (bge-reranker-v2-minicpm-layerwise's shape, its own code, TRUST_REMOTE_CODE on) read at layer 3 of 4,
each found by its config.json (RERANK_KIND unset), each reranking through the client exactly as it scores in
this process."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybrid_rerank.workers.client import CeleryReranker, InProcessReranker
from hybrid_rerank.workers.factory import make_celery_reranker, make_scorer
from hybrid_rerank.workers.local import WorkerProcess
from hybrid_rerank.workers.protocol import Candidate
from tests.integration.test_celery import settings_for, worker_env
from tests.tiny_models import (
    build_tiny_layerwise_reranker,
    build_tiny_llm_reranker,
    build_tiny_xlmr_cross_encoder,
)

pytestmark = pytest.mark.integration

QUERY = "why does the moon show phases"
CANDIDATES = [
    Candidate("moon", "The moon shows phases as sunlight falls on the half that faces the sun."),
    Candidate("steak", "Rest the steak for a few minutes after you grill it."),
    Candidate("db", "A database writes a log so that a crash loses no committed transaction."),
]
# The tiny vocabulary spends about 110 tokens on the qwen3 prompt: the LLM worker reads 256.
WINDOWS = {"llm": 256, "cross-encoder": 128, "layerwise": 256}
KIND_LOGGED = {"llm": "llm", "cross-encoder": "cross-encoder", "layerwise": "llm"}
# The layerwise worker runs the model's own code, read at an early layer: settings beside the model folder.
EXTRA: dict[str, dict[str, str]] = {"layerwise": {"TRUST_REMOTE_CODE": "true", "RERANK_CUTOFF_LAYER": "3"}}


@pytest.fixture(scope="module")
def served(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[CeleryReranker, InProcessReranker, WorkerProcess]]]:
    root = tmp_path_factory.mktemp("kinds-celery")
    models = {
        "llm": build_tiny_llm_reranker(root / "tiny-qwen3-reranker", "qwen3"),
        "cross-encoder": build_tiny_xlmr_cross_encoder(root / "tiny-xlmr-reranker"),
        "layerwise": build_tiny_layerwise_reranker(root / "tiny-layerwise-minicpm", layers=4, start_layer=2),
    }
    served: dict[str, tuple[CeleryReranker, InProcessReranker, WorkerProcess]] = {}
    for kind, folder in models.items():
        extra = EXTRA.get(kind, {})
        settings = settings_for(
            redis_url,
            folder,
            rerank_deadline_ms=60_000,
            rerank_cache_ttl_s=0,
            **{k.lower(): v for k, v in extra.items()},
        )
        local_scorer = make_scorer(settings.model_copy(update={"rerank_max_length": WINDOWS[kind]}))
        assert local_scorer is not None
        env = worker_env(
            redis_url, folder, RERANK_MAX_LENGTH=str(WINDOWS[kind]), RERANK_CACHE_TTL_S="0", **extra
        )
        worker = WorkerProcess(f"kind-{kind}", env, root)
        served[kind] = (make_celery_reranker(settings), InProcessReranker(local_scorer), worker)
    try:
        with ThreadPoolExecutor(len(served)) as pool:  # both start at once: each spends its time importing
            for started in [pool.submit(w.start, r.app) for r, _, w in served.values()]:
                started.result()
        yield served
    finally:
        for _, _, worker in served.values():
            worker.stop()


@pytest.mark.parametrize("kind", list(WINDOWS))
def test_a_worker_serves_its_kind_and_ranks_as_this_process_does(
    served: dict[str, tuple[CeleryReranker, InProcessReranker, WorkerProcess]], kind: str
) -> None:
    reranker, local, worker = served[kind]
    remote = reranker.rerank(QUERY, CANDIDATES)
    here = local.rerank(QUERY, CANDIDATES)
    assert remote.scores is not None and here.scores is not None, (remote.reason, here.reason)
    assert remote.scores.keys() == here.scores.keys() == {c.id for c in CANDIDATES}
    for doc_id, score in here.scores.items():
        assert remote.scores[doc_id] == pytest.approx(score, abs=1e-3)
    assert len({round(s, 4) for s in remote.scores.values()}) == len(CANDIDATES)  # the texts were read
    log = worker.log.read_text(encoding="utf-8")
    assert f"kind {KIND_LOGGED[kind]}" in log  # the kind came from config.json: RERANK_KIND is unset
    other = "cross-encoder" if KIND_LOGGED[kind] == "llm" else "llm"
    assert f"kind {other}" not in log
    if kind == "layerwise":
        assert local.scorer.cutoff_layer == 3 and "layer 3" in log  # read at the cut, in the worker too

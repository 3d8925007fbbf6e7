"""The one-round-trip result backend on a real Redis: the states a task goes through are stored and read as
Celery's own backend stores them, with their expiry, a waiting client is told at once (pub/sub), and a stored
SUCCESS is final (a redelivered copy of a finished task cannot turn it back to STARTED)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import states
from celery.result import AsyncResult

from hybrid_rerank.workers.celery_app import make_app
from hybrid_rerank.workers.result_backend import OneTripRedisBackend
from hybrid_rerank.workers.settings import load_worker_settings

pytestmark = pytest.mark.integration
TTL_S = 120


@pytest.fixture
def app(redis_url: str) -> Iterator[Any]:
    settings = load_worker_settings(
        _env_file=None, redis_url=redis_url, rerank_model="/models/m", rerank_result_ttl_s=TTL_S
    )
    app = make_app(settings)
    yield app
    app.close()


def test_states_are_stored_in_one_trip_and_success_is_final(app: Any, redis_url: str) -> None:
    backend = app.backend
    assert isinstance(backend, OneTripRedisBackend)
    task_id = str(uuid.uuid4())
    result = AsyncResult(task_id, app=app)
    client: Any = redis.Redis.from_url(redis_url)
    try:
        backend.store_result(task_id, {"pid": 1, "hostname": "w"}, states.STARTED)
        assert result.state == states.STARTED and result.info == {"pid": 1, "hostname": "w"}
        backend.store_result(task_id, {"scores": [1.5]}, states.SUCCESS)
        # A fresh result object asks Redis; get() is woken by the published message or reads the key.
        assert AsyncResult(task_id, app=app).get(timeout=10) == {"scores": [1.5]}
        backend.store_result(task_id, {"pid": 2, "hostname": "w2"}, states.STARTED)  # a redelivered copy
        fresh = AsyncResult(task_id, app=app)
        assert fresh.state == states.SUCCESS and fresh.result == {"scores": [1.5]}
        assert 0 < client.ttl(f"celery-task-meta-{task_id}") <= TTL_S
        failed_id = str(uuid.uuid4())
        backend.mark_as_failure(failed_id, ValueError("bad request"))
        failed = AsyncResult(failed_id, app=app)
        assert failed.state == states.FAILURE and isinstance(failed.result, ValueError)
        assert 0 < client.ttl(f"celery-task-meta-{failed_id}") <= TTL_S
    finally:
        client.close()

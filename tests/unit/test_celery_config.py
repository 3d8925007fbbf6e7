"""The Celery app's configuration, checked without a broker: building an app connects to nothing."""

from __future__ import annotations

import pytest

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.settings import Settings, load_settings
from hybrid_rerank.workers.celery_app import make_app
from hybrid_rerank.workers.protocol import TASK_NAME, batch_queue_for, queue_for


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("RERANK_MODEL", "/models/ms-marco-MiniLM-L-6-v2")
    monkeypatch.setenv("RERANK_VISIBILITY_TIMEOUT_S", "120")
    return load_settings(_env_file=None)


def test_json_only_late_acks_and_one_task_at_a_time(settings: Settings) -> None:
    conf = make_app(settings).conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"] and list(conf.result_accept_content) == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_proc_alive_timeout >= 60  # a replacement pool process has time to load its model
    assert conf.broker_transport_options["visibility_timeout"] == 120
    assert conf.result_expires == 3600
    assert conf.task_default_queue == queue_for("/models/ms-marco-MiniLM-L-6-v2")


def test_both_queues_are_declared_interactive_first_and_polled_in_that_order(settings: Settings) -> None:
    """A plain worker consumes the declared queues in this order, and with the "priority" order kombu's
    Redis transport sends one BRPOP listing them so (Redis pops the first non-empty list), instead of
    rotating the last served queue to the back (its default, round_robin)."""
    from kombu.utils.scheduling import cycle_by_name, priority_cycle

    model = "/models/ms-marco-MiniLM-L-6-v2"
    conf = make_app(settings).conf
    queues = list(conf.task_queues)
    assert [q.name for q in queues] == [queue_for(model), batch_queue_for(model)]
    # Bound as Celery binds a queue it creates on first use, so older clients and workers still agree.
    assert [(q.exchange.name, q.exchange.type, q.routing_key) for q in queues] == [
        (q.name, "direct", q.name) for q in queues
    ]
    assert conf.task_default_queue == queues[0].name
    strategy = conf.broker_transport_options["queue_order_strategy"]
    cycle = cycle_by_name(strategy)(["interactive", "batch"])
    assert isinstance(cycle, priority_cycle)
    cycle.rotate("interactive")  # what kombu does after a message from that queue
    assert cycle.consume(2) == ["interactive", "batch"]


def test_the_searching_side_fails_fast(settings: Settings) -> None:
    worker, client = make_app(settings).conf, make_app(settings, fail_fast=True).conf
    assert client.task_publish_retry_policy["max_retries"] == 1
    assert client.result_backend_transport_options["retry_policy"]["max_retries"] == 1
    assert not worker.get("result_backend_transport_options")


def test_a_queue_per_model() -> None:
    assert queue_for("/a/ms-marco-MiniLM-L-6-v2").startswith("rerank.ms-marco-MiniLM-L-6-v2-")
    assert queue_for("/a/model") != queue_for("/b/model")
    assert queue_for("BAAI/bge-reranker-v2-m3") == queue_for("BAAI/bge-reranker-v2-m3")


def test_missing_redis_or_model_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        make_app(load_settings(_env_file=None))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("RERANK_MODEL", "none")
    with pytest.raises(ConfigurationError, match="RERANK_MODEL"):
        make_app(load_settings(_env_file=None))


def test_celery_finds_the_app_in_the_workers_package(settings: Settings) -> None:
    from celery.app.utils import find_app

    from hybrid_rerank import workers

    workers.__dict__.pop("app", None)
    app = find_app("hybrid_rerank.workers")  # what `celery -A hybrid_rerank.workers worker` does
    assert app.conf.task_default_queue == queue_for(settings.rerank_model or "")
    assert app.conf.broker_url == "redis://127.0.0.1:6399/0"
    app.loader.import_default_modules()  # the worker imports the task modules at start
    assert TASK_NAME in app.tasks
    workers.__dict__.pop("app", None)

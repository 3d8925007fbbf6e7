"""The Celery app, built from the workers' settings. Workers start with `celery -A hybrid_rerank.workers
worker`; the client (`workers.client`) builds the same app to send tasks. JSON only (never pickle), late
acks with redelivery of a task whose worker died, one task at a time per process, results that expire, and a
queue per rerank model."""

from __future__ import annotations

from celery import Celery

from hybrid_rerank.workers.errors import ConfigurationError
from hybrid_rerank.workers.protocol import queue_for
from hybrid_rerank.workers.settings import WorkerSettings

PROCESS_START_TIMEOUT_S = 300.0


def make_app(settings: WorkerSettings, *, fail_fast: bool = False) -> Celery:
    """`fail_fast` is for the searching side: with the broker down it gives up at once (search then degrades
    within its deadline) instead of retrying for many seconds as a worker should."""
    if settings.redis_url is None:
        raise ConfigurationError("REDIS_URL is not set: the Celery workers need a Redis broker")
    if settings.rerank_model is None:
        raise ConfigurationError("RERANK_MODEL is off: there is nothing for a rerank worker to serve")
    url = settings.redis_url.get_secret_value()
    app = Celery("hybrid_rerank", broker=url, backend=url, include=["hybrid_rerank.workers.tasks"])
    connect_timeout = 2.0  # loopback or LAN: a broker that does not answer in 2 s is down
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,  # a task is acknowledged when done, so a killed worker's task is redelivered
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,  # long tasks: never hold a second one while scoring the first
        worker_max_tasks_per_child=None,  # keep the loaded model
        # A pool process loads the model before it reports up (worker_process_init). Celery's default of 4 s
        # kills a replacement process still loading its model, and the next, and so on: a worker that lost
        # one process never served again (seen under load with a MiniLM-size model).
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT_S,
        task_default_queue=queue_for(settings.rerank_model),
        result_expires=settings.rerank_result_ttl_s,
        broker_transport_options={
            "visibility_timeout": settings.rerank_visibility_timeout_s,
            # Look for tasks of dead workers every 5 s (kombu's default scans every ~100 s), so a task
            # comes back about `visibility_timeout` after its worker died.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": 30.0,
        },
        redis_socket_connect_timeout=connect_timeout,
        redis_socket_timeout=30.0,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )
    if fail_fast:
        quick = {"max_retries": 1, "interval_start": 0.0, "interval_step": 0.1, "interval_max": 0.1}
        app.conf.update(
            task_publish_retry_policy=quick,
            result_backend_transport_options={"retry_policy": quick},
        )
    return app

"""The Celery app, built from the workers' settings. Workers start with `celery -A hybrid_rerank.workers
worker`; the client (`workers.client`) builds the same app to send tasks. JSON only (never pickle), late
acks with redelivery of a task whose worker died, one task at a time per process, results that expire, and
two queues per rerank model: interactive (live searches) and batch (offline jobs), a worker always taking the
next interactive task before any batch task. With EMBED_MODEL a worker also (or only) serves that
bi-encoder on its embed queue, after both rerank queues."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from hybrid_rerank.workers.embed_protocol import embed_queue_for
from hybrid_rerank.workers.errors import ConfigurationError
from hybrid_rerank.workers.protocol import batch_queue_for, queue_for
from hybrid_rerank.workers.result_backend import backend_url
from hybrid_rerank.workers.settings import WorkerSettings

PROCESS_START_TIMEOUT_S = 300.0


def task_queues(model: str) -> list[Queue]:
    """The model's interactive queue, then its batch queue: the order a worker polls them in. Each is bound
    as Celery declares a queue it was not told of (a direct exchange of the queue's name), so a client or
    worker of the version before these were declared routes the interactive queue the same way."""
    names = (queue_for(model), batch_queue_for(model))
    return [direct_queue(name) for name in names]


def embed_task_queue(model: str) -> Queue:
    """The bi-encoder's embed queue (`embed_queue_for`), bound as `task_queues` binds the rerank ones."""
    return direct_queue(embed_queue_for(model))


def direct_queue(name: str) -> Queue:
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def make_app(settings: WorkerSettings, *, fail_fast: bool = False) -> Celery:
    """`fail_fast` is for the searching side: with the broker down it gives up at once (search then degrades
    within its deadline) instead of retrying for many seconds as a worker should."""
    if settings.redis_url is None:
        raise ConfigurationError("REDIS_URL is not set: the Celery workers need a Redis broker")
    if settings.rerank_model is None and settings.embed_model is None:
        raise ConfigurationError(
            "RERANK_MODEL is off and EMBED_MODEL is unset: there is nothing for a worker to serve"
        )
    url = settings.redis_url.get_secret_value()
    # Only the tasks this worker serves: each module loads its model in every pool process it is imported in.
    include = ["hybrid_rerank.workers.tasks"] if settings.rerank_model is not None else []
    queues = task_queues(settings.rerank_model) if settings.rerank_model is not None else []
    if settings.embed_model is not None:
        include.append("hybrid_rerank.workers.embedding")
        # Last: a worker serving both takes embedding work only when no rerank task waits.
        queues.append(embed_task_queue(settings.embed_model))
    app = Celery("hybrid_rerank", broker=url, backend=backend_url(url), include=include)
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
        task_default_queue=queues[0].name,
        # A plain `celery worker` consumes them all, interactive first (see `queue_order_strategy`); `-Q`
        # with the interactive queue alone gives a worker that never takes batch work.
        task_queues=queues,
        result_expires=settings.rerank_result_ttl_s,
        broker_transport_options={
            "visibility_timeout": settings.rerank_visibility_timeout_s,
            # Look for tasks of dead workers every 5 s (kombu's default scans every ~100 s), so a task
            # comes back about `visibility_timeout` after its worker died.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": 30.0,
            # One BRPOP over the queues in the order consumed, which Redis answers from the first non-empty
            # list: a batch task is taken only when no interactive task waits. kombu's default
            # (round_robin) rotates the last served queue to the back, so a long batch would take every
            # other turn.
            "queue_order_strategy": "priority",
        },
        redis_socket_connect_timeout=connect_timeout,
        redis_socket_timeout=30.0,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )
    if settings.rerank_batch_window_ms > 0:
        # Cross-request batching needs the concurrent tasks in one process with one model
        # (`workers.coalesce`). Celery lets this win over `-P prefork` (its default, which it cannot tell
        # from none); another `-P` wins over it.
        app.conf.worker_pool = "threads"
    if settings.embed_model is not None:  # plain values for `workers.embedding`, which reads no settings
        app.conf.hybrid_rerank_embed = {
            "model": settings.embed_model,
            "batch_size": settings.embed_batch_size,
            "device": settings.embed_device,
            "threads": settings.embed_threads,
            "trust_remote_code": settings.trust_remote_code,
        }
    if fail_fast:
        quick = {"max_retries": 1, "interval_start": 0.0, "interval_step": 0.1, "interval_max": 0.1}
        app.conf.update(
            task_publish_retry_policy=quick,
            result_backend_transport_options={"retry_policy": quick},
        )
    return app

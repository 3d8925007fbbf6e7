"""What a searching service asks about the rerank workers for its /readyz and /metrics: how many tasks wait in
a model's queues, and which workers consume a queue. Both go to Redis; neither waits on a worker for long."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hybrid_rerank.workers.errors import HybridRerankError, describe_exception
from hybrid_rerank.workers.protocol import batch_queue_for, queue_for

if TYPE_CHECKING:
    from celery import Celery

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0


class BrokerUnreachableError(HybridRerankError):
    """Redis (the Celery broker) could not be asked."""


def queue_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps a queue's messages in: the queue's own name for priority 0, and the name,
    kombu's separator and the step for each other priority step (kombu's redis transport, `_q_for_pri`)."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    separator: str = Channel.sep
    return [queue] + [f"{queue}{separator}{step}" for step in PRIORITY_STEPS if step]


def queue_depths(redis_url: str, model: str) -> dict[str, int]:
    """Tasks waiting (not yet taken by a worker) in the model's queues: `{"interactive": n, "batch": m}`.
    Raises BrokerUnreachableError when Redis cannot be asked."""
    import redis

    queues = {"interactive": queue_for(model), "batch": batch_queue_for(model)}
    client: Any = redis.Redis.from_url(
        redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=READ_TIMEOUT_S
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues.values():
                for key in queue_keys(queue):
                    pipe.llen(key)
            lengths = iter(pipe.execute())
    except redis.RedisError as exc:
        raise BrokerUnreachableError(f"cannot read the rerank queues: {describe_exception(exc)}") from exc
    finally:
        client.close()
    return {role: sum(next(lengths) for _ in queue_keys(queue)) for role, queue in queues.items()}


def consumers(app: Celery, queue: str, timeout_s: float = 1.0) -> list[str]:
    """Hostnames of the workers consuming `queue` (sorted), from the workers that answer within `timeout_s`
    (the call takes that long: it cannot know how many workers there are); [] when none answer. Raises
    BrokerUnreachableError when the question cannot be sent."""
    try:
        with app.connection_or_acquire() as connection:  # pooled: closing one costs half a second
            # Once, at once: a broadcast's own connection retries for seconds before giving up.
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.1, interval_max=0.1)
            replies = app.control.inspect(timeout=timeout_s, connection=connection).active_queues()
    except Exception as exc:  # kombu / redis errors: the broker is down
        raise BrokerUnreachableError(f"cannot ask the rerank workers: {describe_exception(exc)}") from exc
    if not isinstance(replies, dict):
        return []
    return sorted(
        str(host)
        for host, active in replies.items()
        if isinstance(active, list) and any(isinstance(q, dict) and q.get("name") == queue for q in active)
    )

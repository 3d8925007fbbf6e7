"""The rerank subsystem: a pure cross-encoder reranking core with a thin Celery task layer over it, self-
contained (it imports nothing from the connector).

- `protocol`: the wire protocol (request, reply, `Candidate`, `RerankOutcome`, task and queue names).
- `client`: what a searching process calls (`Reranker`: in-process, or Celery workers with a deadline).
- `settings` and `factory`: the RERANK_* / REDIS_URL / DATA_DIR group and the one place it becomes
  constructor arguments.
- `scorer`, `score_cache`, `runtime/`: the reranking core, its Redis score cache, and the model runtime.
- `celery_app`, `tasks`: the Celery app built from the settings and the thin task.
- `metrics`, `health`: the workers' Prometheus metrics (multiprocess) and the probes the service asks
  (queue depths, who consumes a queue).

Importing this package is cheap: torch loads only when a scorer is first used, and the Celery app is built
from the settings only when asked for, as `celery -A hybrid_rerank.workers worker` does.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":  # what `celery -A hybrid_rerank.workers` looks up
        from hybrid_rerank.workers.celery_app import make_app
        from hybrid_rerank.workers.settings import load_worker_settings

        app = make_app(load_worker_settings())
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'hybrid_rerank.workers' has no attribute {name!r}")

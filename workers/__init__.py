"""Rerank workers: a pure cross-encoder reranking core, with a thin Celery task layer over it.

Importing this package is cheap: torch and sentence-transformers load only when a scorer is first used, and
the Celery app is built from the settings only when asked for, as `celery -A workers worker` does.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":  # what `celery -A workers` looks up
        from connector.settings import load_settings
        from workers.celery_app import make_app

        app = make_app(load_settings())
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")

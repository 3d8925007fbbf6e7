"""The Backend conformance suite runs against every backend: each test gets a fresh, uniquely named index."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connector.backends.base import Backend

BackendFactory = Callable[[str], Backend]


@pytest.fixture(params=["embedded"])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens a backend on an index named for this test; a second call with the same name reopens it."""
    if request.param == "embedded":
        from connector.backends.embedded import EmbeddedBackend

        yield lambda name: EmbeddedBackend(tmp_path, name)
    else:  # pragma: no cover - new backends register here
        raise AssertionError(request.param)


@pytest.fixture
def index_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"

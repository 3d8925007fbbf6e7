"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybrid_rerank.connector.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DOCKER_ONLY = {"HF_HUB_OFFLINE"}  # read by huggingface_hub, not by our settings


SERVICES = yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.parametrize("service", ["connector", "workers", "api"])
def test_environment_uses_the_settings_names(service: str) -> None:
    known = {name.upper() for name in Settings.model_fields}
    unknown = set(SERVICES[service]["environment"]) - known - DOCKER_ONLY
    assert not unknown, f"docker-compose.yml sets variables the settings do not read: {unknown}"


def test_servers_have_healthchecks_and_publish_on_loopback_only() -> None:
    for name in ("opensearch", "redis", "workers", "api"):
        assert "healthcheck" in SERVICES[name], name
        assert all(str(port).startswith("127.0.0.1:") for port in SERVICES[name].get("ports", [])), name
    assert SERVICES["connector"]["depends_on"]["opensearch"]["condition"] == "service_healthy"
    assert SERVICES["workers"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_start_the_way_the_tests_start_them() -> None:
    entrypoint = SERVICES["workers"]["entrypoint"]
    assert entrypoint[:4] == ["celery", "-A", "hybrid_rerank.workers", "worker"]
    assert (
        SERVICES["workers"]["environment"]["REDIS_URL"] == SERVICES["connector"]["environment"]["REDIS_URL"]
    )


def test_the_api_is_ready_only_when_readyz_says_so() -> None:
    api = SERVICES["api"]
    assert api["entrypoint"][:2] == ["hybrid-rerank", "serve"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["REDIS_URL"] == SERVICES["workers"]["environment"]["REDIS_URL"]

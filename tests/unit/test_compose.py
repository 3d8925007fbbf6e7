"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

from pathlib import Path

import yaml

from connector.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DOCKER_ONLY = {"HF_HUB_OFFLINE"}  # read by huggingface_hub, not by our settings


def test_connector_environment_uses_the_settings_names() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    known = {name.upper() for name in Settings.model_fields}
    unknown = set(services["connector"]["environment"]) - known - DOCKER_ONLY
    assert not unknown, f"docker-compose.yml sets variables the settings do not read: {unknown}"


def test_every_server_has_a_healthcheck_and_loopback_ports() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    opensearch = services["opensearch"]
    assert "healthcheck" in opensearch
    assert all(str(port).startswith("127.0.0.1:") for port in opensearch.get("ports", []))
    assert services["connector"]["depends_on"]["opensearch"]["condition"] == "service_healthy"

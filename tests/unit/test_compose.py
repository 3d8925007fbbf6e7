"""docker-compose.yml cannot run here (no Docker engine); check what can be checked without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybrid_rerank.connector.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKER_ONLY = {"HF_HUB_OFFLINE"}  # read by huggingface_hub, not by our settings


SERVICES = yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.parametrize("service", ["connector", "workers", "api"])
def test_environment_uses_the_settings_names(service: str) -> None:
    known = {name.upper() for name in Settings.model_fields}
    unknown = set(SERVICES[service]["environment"]) - known - DOCKER_ONLY
    assert not unknown, f"docker-compose.yml sets variables the settings do not read: {unknown}"


def test_servers_have_healthchecks_and_publish_on_loopback_only() -> None:
    for name in ("opensearch", "elasticsearch", "redis", "workers", "api"):
        assert "healthcheck" in SERVICES[name], name
        assert all(str(port).startswith("127.0.0.1:") for port in SERVICES[name].get("ports", [])), name
    for engine in ("opensearch", "elasticsearch"):
        assert SERVICES["connector"]["depends_on"][engine]["condition"] == "service_healthy"
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


def _env_file(name: str) -> dict[str, str]:
    lines = (REPO / "compose" / name).read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.mark.parametrize(
    ("env_file", "engine", "url_variable"),
    [
        ("opensearch.env", "opensearch", "OPENSEARCH_URL"),
        ("opensearch3.env", "opensearch", "OPENSEARCH_URL"),
        ("elasticsearch.env", "elasticsearch", "ELASTICSEARCH_URL"),
    ],
)
def test_each_engine_env_file_turns_on_its_profile_and_points_the_api_at_it(
    env_file: str, engine: str, url_variable: str
) -> None:
    values = _env_file(env_file)
    assert values["COMPOSE_PROFILES"] == engine
    assert SERVICES[engine]["profiles"] == [engine]
    assert values[url_variable] == f"http://{engine}:9200"
    for service in ("api", "connector"):
        assert SERVICES[service]["environment"][url_variable] == f"${{{url_variable}:-}}"
        assert SERVICES[service]["depends_on"][engine]["required"] is False
    other = {"OPENSEARCH_URL", "ELASTICSEARCH_URL"} - {url_variable}
    assert not other & set(values), "one engine per env file: the settings refuse both URLs"


def test_without_an_env_file_no_engine_starts_and_the_api_falls_back_to_the_embedded_index() -> None:
    for engine in ("opensearch", "elasticsearch"):
        assert SERVICES[engine].get("profiles"), f"{engine} must start only under its profile"
    settings = Settings(opensearch_url="", elasticsearch_url="")  # what ${VAR:-} gives without the file
    assert settings.opensearch_url is None and settings.elasticsearch_url is None
    assert any(volume.startswith("embedded-index:/app/data") for volume in SERVICES["api"]["volumes"])
    assert str(Settings.model_fields["data_dir"].default) == "data"


def test_images_that_talk_to_elasticsearch_install_its_client() -> None:
    for service in ("api", "connector"):
        assert SERVICES[service]["build"]["args"]["EXTRAS"] == "[elasticsearch]"

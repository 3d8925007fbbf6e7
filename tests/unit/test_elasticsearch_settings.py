"""ELASTICSEARCH_URL: exclusive with OPENSEARCH_URL, and what `open_backend` builds from it (no node needed:
the client connects lazily)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend
from hybrid_rerank.connector.backends.embedded import EmbeddedBackend
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.factory import open_backend
from hybrid_rerank.connector.settings import load_settings


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENSEARCH_URL", "ELASTICSEARCH_URL", "INDEX_NAME", "HNSW_M", "TITLE_BOOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


def test_elasticsearch_url_opens_the_elasticsearch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9250")
    monkeypatch.setenv("HNSW_M", "24")
    monkeypatch.setenv("TITLE_BOOST", "1.5")
    settings = load_settings(_env_file=None)
    assert not settings.uses_opensearch
    assert settings.describe()["backend"] == "http://127.0.0.1:9250"
    backend = open_backend(settings, "papers")
    assert isinstance(backend, ElasticsearchBackend)
    assert (backend.alias, backend.url, backend.hnsw_m, backend.title_boost) == (
        "papers",
        "http://127.0.0.1:9250",
        24,
        1.5,
    )


def test_a_blank_elasticsearch_url_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "  ")
    settings = load_settings(_env_file=None)
    assert settings.elasticsearch_url is None
    assert isinstance(open_backend(settings, "papers"), EmbeddedBackend)


def test_both_engine_urls_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_URL", "http://127.0.0.1:9200")
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9250")
    with pytest.raises(ConfigurationError, match="not both"):
        load_settings(_env_file=None)


def test_password_in_elasticsearch_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://elastic:pw@localhost:9200")
    with pytest.raises(ConfigurationError, match="ELASTICSEARCH_URL") as info:
        load_settings(_env_file=None)
    assert "pw@" not in str(info.value)


def test_an_index_name_the_engine_cannot_hold_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://127.0.0.1:9250")
    settings = load_settings(_env_file=None)
    for bad in ("Papers", "papers-v2"):
        with pytest.raises(ConfigurationError, match="INDEX_NAME"):
            open_backend(settings, bad)

"""The engines' credential and TLS settings: validated at load with messages that name the variables (never
a secret's value), hidden in every printout, and passed by the factory to the clients."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from hybrid_rerank.connector import factory
from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.settings import Settings, load_settings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ENGINE_VARIABLES = [
    f"{engine}_{name}"
    for engine in ("OPENSEARCH", "ELASTICSEARCH")
    for name in ("URL", "USERNAME", "PASSWORD", "CA_CERTS", "VERIFY_CERTS", "API_KEY")
]


@pytest.fixture(autouse=True)
def no_engine_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENGINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "root-ca.pem"
    path.write_text(PEM)
    return path


def settings(**env: str) -> Settings:
    return load_settings(_env_file=None, **{name.lower(): value for name, value in env.items()})


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings(_env_file=None)
    return str(info.value)


@pytest.mark.parametrize("engine", ["OPENSEARCH", "ELASTICSEARCH"])
def test_the_ca_and_credentials_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path, engine: str
) -> None:
    monkeypatch.setenv(f"{engine}_URL", "https://127.0.0.1:9240")
    monkeypatch.setenv(f"{engine}_USERNAME", "admin")
    monkeypatch.setenv(f"{engine}_PASSWORD", "pa55-word")
    monkeypatch.setenv(f"{engine}_CA_CERTS", str(ca_file))
    loaded = load_settings(_env_file=None)
    prefix = engine.lower()
    assert getattr(loaded, f"{prefix}_ca_certs") == ca_file
    assert getattr(loaded, f"{prefix}_username") == "admin"
    assert getattr(loaded, f"{prefix}_password").get_secret_value() == "pa55-word"
    assert getattr(loaded, f"{prefix}_verify_certs") is True


@pytest.mark.parametrize("engine", ["OPENSEARCH", "ELASTICSEARCH"])
def test_a_missing_ca_file_is_refused_with_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, engine: str
) -> None:
    missing = tmp_path / "nope.pem"
    message = refused(monkeypatch, **{f"{engine}_URL": "https://h:1", f"{engine}_CA_CERTS": str(missing)})
    assert f"{engine}_CA_CERTS={missing}: no such file" in message


def test_a_ca_file_without_a_certificate_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "node-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n")
    message = refused(monkeypatch, OPENSEARCH_URL="https://h:1", OPENSEARCH_CA_CERTS=str(key))
    assert "holds no PEM certificate" in message and "OPENSEARCH_CA_CERTS" in message
    folder = refused(monkeypatch, OPENSEARCH_CA_CERTS=str(tmp_path))
    assert "is a folder" in folder


def test_a_ca_with_verification_off_is_refused(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    message = refused(
        monkeypatch,
        ELASTICSEARCH_URL="https://h:1",
        ELASTICSEARCH_CA_CERTS=str(ca_file),
        ELASTICSEARCH_VERIFY_CERTS="false",
    )
    assert "ELASTICSEARCH_VERIFY_CERTS=false" in message


def test_a_ca_for_a_plain_http_url_is_refused(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    message = refused(monkeypatch, OPENSEARCH_URL="http://h:1", OPENSEARCH_CA_CERTS=str(ca_file))
    assert "OPENSEARCH_URL is not https://" in message


@pytest.mark.parametrize("engine", ["OPENSEARCH", "ELASTICSEARCH"])
def test_half_a_credential_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    message = refused(monkeypatch, **{f"{engine}_PASSWORD": "only-the-secret"})
    assert f"{engine}_PASSWORD is set but {engine}_USERNAME is not" in message
    assert "only-the-secret" not in message
    monkeypatch.delenv(f"{engine}_PASSWORD")
    assert f"{engine}_USERNAME is set but {engine}_PASSWORD is not" in refused(
        monkeypatch, **{f"{engine}_USERNAME": "admin"}
    )


def test_an_api_key_and_a_username_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        ELASTICSEARCH_URL="https://h:1",
        ELASTICSEARCH_API_KEY="key-value-123",
        ELASTICSEARCH_USERNAME="elastic",
        ELASTICSEARCH_PASSWORD="pw-value-456",
    )
    assert "ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME" in message
    assert "key-value-123" not in message and "pw-value-456" not in message


def test_blank_values_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSEARCH_CA_CERTS", "")
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", " ")
    loaded = load_settings(_env_file=None)
    assert loaded.opensearch_ca_certs is None and loaded.elasticsearch_username is None


def test_secrets_never_reach_a_printout(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "https://127.0.0.1:9250")
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "api-key-secret-789")
    monkeypatch.setenv("ELASTICSEARCH_CA_CERTS", str(ca_file))
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "os-secret-000")
    monkeypatch.setenv("OPENSEARCH_USERNAME", "admin")
    loaded = load_settings(_env_file=None)
    shown = repr(loaded) + str(loaded) + str(loaded.describe())
    assert "api-key-secret-789" not in shown and "os-secret-000" not in shown
    described = loaded.describe()
    assert described["elasticsearch_api_key"] == "set (hidden)"
    assert described["elasticsearch_tls"] == f"verified against {ca_file}"
    assert described["opensearch_tls"] == "verified against the system CAs"


def test_the_factory_gives_the_opensearch_client_the_ca_and_credentials(ca_file: Path) -> None:
    client = factory.opensearch_client(
        settings(
            OPENSEARCH_URL="https://127.0.0.1:9240",
            OPENSEARCH_USERNAME="admin",
            OPENSEARCH_PASSWORD="os-pw",
            OPENSEARCH_CA_CERTS=str(ca_file),
        )
    )
    connection = client.transport.connection_pool.connections[0]
    assert connection.host == "https://127.0.0.1:9240"
    assert (connection.pool.ca_certs, connection.pool.cert_reqs) == (str(ca_file), "CERT_REQUIRED")
    assert connection.headers["authorization"] == "Basic " + base64.b64encode(b"admin:os-pw").decode()


def test_the_factory_gives_the_elasticsearch_client_the_ca_and_api_key(ca_file: Path) -> None:
    client = factory.elasticsearch_client(
        settings(
            ELASTICSEARCH_URL="https://127.0.0.1:9250",
            ELASTICSEARCH_API_KEY="es-key",
            ELASTICSEARCH_CA_CERTS=str(ca_file),
        )
    )
    assert client._headers["authorization"] == "ApiKey es-key"
    node = next(iter(client.transport.node_pool.all()))
    assert node.config.ca_certs == str(ca_file) and node.config.verify_certs is True


def test_a_password_in_any_node_url_of_a_list_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, OPENSEARCH_URL="http://a:9200,http://admin:pw-7f@b:9200")
    assert "OPENSEARCH_URL must not carry a password" in message and "pw-7f" not in message
    monkeypatch.delenv("OPENSEARCH_URL")
    message = refused(monkeypatch, ELASTICSEARCH_URL="http://a:9200, https://u:pw-7f@b:9200")
    assert "ELASTICSEARCH_URL must not carry a password" in message and "pw-7f" not in message
    nodes = load_settings(_env_file=None, elasticsearch_url="http://a:9200,http://b:9200")
    assert nodes.elasticsearch_url == "http://a:9200,http://b:9200"

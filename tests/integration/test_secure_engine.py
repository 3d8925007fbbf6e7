"""A secured OpenSearch node (TLS on HTTP and transport, HTTP basic authentication), provisioned by
`OPENSEARCH_SECURITY=1 scripts/opensearch start`, and the connector speaking to it: the CLI and
`hybrid-rerank serve` index and search with the CA configured; a wrong password and an untrusted certificate
fail with messages that name the setting to fix; no secret reaches any output or log."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, _service
from tests.service_process import CLI, clean_environment, start_service

pytestmark = pytest.mark.integration

INDEX = f"secure-docs-{secrets.token_hex(4)}"  # a fresh index each run (indexing skips unchanged documents)
DOCS = [
    {"_id": "moon-1", "title": "moon", "text": "the moon orbits the earth and its phases change"},
    {"_id": "steak-2", "title": "steak", "text": "cook steak on the grill with salt"},
    {"_id": "bread-3", "title": "bread", "text": "bake bread in the oven with water and salt"},
    {"_id": "sun-4", "title": "sun", "text": "the sun is a star and the earth is a planet"},
]


@dataclass(frozen=True)
class SecureNode:
    url: str
    ca: Path
    password: str
    logs: Path  # the node's own log folder


@dataclass
class Transcripts:
    """Everything the connector printed or logged in this module, for the final search for secrets."""

    texts: list[str]

    def add(self, done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
        self.texts.append(done.stdout + done.stderr)
        return done


def status_fields(env: dict[str, str]) -> dict[str, str]:
    """`key=value` words of `scripts/opensearch status` for the secured node (its CA and password file)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "opensearch"), "status"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(word.split("=", 1) for word in done.stdout.split() if "=" in word)


@pytest.fixture(scope="session")
def secure_node() -> Iterator[SecureNode]:
    """The secured node, started by the project script (and stopped at the end only if this started it)."""
    env = {"OPENSEARCH_SECURITY": "1", "OPENSEARCH_JAVA_OPTS": "-Xms512m -Xmx512m"}  # a few documents
    for url in _service("opensearch", "HYBRID_RERANK_TEST_OPENSEARCH_SECURE", env):
        fields = status_fields({**os.environ, **env})
        password_file = Path(fields["password_file"])
        assert url.startswith("https://") and fields["url"] == url
        assert oct(password_file.stat().st_mode & 0o777) == "0o600"
        yield SecureNode(
            url, Path(fields["ca"]), password_file.read_text().strip(), password_file.parents[1] / "logs"
        )


@pytest.fixture(scope="module")
def transcripts() -> Transcripts:
    return Transcripts([])


def engine_env(node: SecureNode, **overrides: str) -> dict[str, str]:
    base = {
        "OPENSEARCH_URL": node.url,
        "OPENSEARCH_USERNAME": "admin",
        "OPENSEARCH_PASSWORD": node.password,
        "OPENSEARCH_CA_CERTS": str(node.ca),
        "INDEX_NAME": INDEX,
        "RERANK_MODEL": "none",
    }
    return {**base, **overrides}


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=clean_environment(env), cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def indexed(
    secure_node: SecureNode, tmp_path_factory: pytest.TempPathFactory, transcripts: Transcripts
) -> Path:
    """The corpus indexed into the secured node with the CLI; returns the working folder."""
    root = tmp_path_factory.mktemp("secure")
    source = root / "docs.jsonl"
    source.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n", encoding="utf-8")
    done = transcripts.add(run_cli(["index", str(source)], engine_env(secure_node), root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"indexed {len(DOCS)} of {len(DOCS)} documents into opensearch" in done.stdout + done.stderr
    return root


def test_the_node_refuses_plain_http_and_anonymous_requests(secure_node: SecureNode) -> None:
    context = ssl.create_default_context(cafile=str(secure_node.ca))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{secure_node.url}/_cluster/health", timeout=10, context=context)
    assert refused.value.code == 401
    with pytest.raises(ConnectionError):  # TLS only: a plain-HTTP request gets no HTTP answer
        urllib.request.urlopen(secure_node.url.replace("https://", "http://"), timeout=10)


def test_the_cli_searches_the_secured_node(
    secure_node: SecureNode, indexed: Path, transcripts: Transcripts
) -> None:
    done = transcripts.add(
        run_cli(["search", "moon phases", "-k", "2", "--json"], engine_env(secure_node), indexed)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    hits = json.loads(done.stdout)["hits"]
    assert hits[0]["id"] == "moon-1" and hits[0]["scores"]["bm25"] is not None


def test_a_wrong_password_names_the_credential_settings(
    secure_node: SecureNode, indexed: Path, transcripts: Transcripts
) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    done = transcripts.add(
        run_cli(["search", "moon"], engine_env(secure_node, OPENSEARCH_PASSWORD=wrong), indexed)
    )
    assert done.returncode != 0
    assert (
        "401" in done.stderr and "OPENSEARCH_USERNAME" in done.stderr and "OPENSEARCH_PASSWORD" in done.stderr
    )
    assert wrong not in done.stdout + done.stderr


def test_an_untrusted_certificate_says_to_set_the_ca(
    secure_node: SecureNode, indexed: Path, transcripts: Transcripts
) -> None:
    env = {name: value for name, value in engine_env(secure_node).items() if name != "OPENSEARCH_CA_CERTS"}
    done = transcripts.add(run_cli(["search", "moon"], env, indexed))
    assert done.returncode != 0
    assert "OPENSEARCH_CA_CERTS" in done.stderr and "certificate" in done.stderr


def test_the_service_searches_the_secured_node(
    secure_node: SecureNode, indexed: Path, transcripts: Transcripts
) -> None:
    with start_service(engine_env(secure_node), cwd=indexed) as service:
        request = urllib.request.Request(
            f"{service.url}/search",
            data=json.dumps({"query": "moon phases", "k": 2, "rerank": False}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            body = json.loads(reply.read())
        with urllib.request.urlopen(f"{service.url}/readyz", timeout=60) as ready:
            assert ready.status == 200
    assert body["hits"][0]["id"] == "moon-1"
    transcripts.texts.append(service.log())


def test_no_output_or_log_carries_the_password(
    secure_node: SecureNode, indexed: Path, transcripts: Transcripts
) -> None:
    """Runs last in this module: every CLI output, the service log and the node's own logs (which hold the
    bcrypt hash, never the clear password)."""
    engine_logs = [p.read_text(errors="replace") for p in secure_node.logs.rglob("*") if p.is_file()]
    assert transcripts.texts and engine_logs  # at least the indexing run's output
    leaks = [text[:200] for text in [*transcripts.texts, *engine_logs] if secure_node.password in text]
    assert leaks == []

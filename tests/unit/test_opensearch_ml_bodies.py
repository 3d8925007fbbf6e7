"""The bodies `hybrid-rerank opensearch install-rerank` sends, pinned against expected dicts (each field was
checked against a real 2.19.6 node: tests/integration/test_opensearch_rerank_pipeline.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hybrid_rerank.mappings import rerank_pipeline as rp

REQUEST_BODY = (
    '{ "query": "${parameters.query}", "documents": ${parameters.documents}, "top_n": ${parameters.top_n} }'
)


def expected_connector(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "hybrid-rerank/my-pipe",
        "description": "hybrid-rerank: the cross-encoder behind http://10.0.0.5:8000/v1/rerank "
        "(Cohere shape), for the rerank search processor",
        "version": "1",
        "protocol": "http",
        "parameters": {},
        "credential": {"api_key": ""},
        "client_config": {"connection_timeout": 2, "read_timeout": 10, "max_connection": 20},
        "actions": [
            {
                "action_type": "PREDICT",
                "method": "POST",
                "url": "http://10.0.0.5:8000/v1/rerank",
                "headers": {"content-type": "application/json"},
                "request_body": REQUEST_BODY,
                "pre_process_function": "connector.pre_process.cohere.rerank",
                "post_process_function": rp.PAINLESS_POST_PROCESS,
            }
        ],
    }
    body.update(overrides)
    return body


def test_connector_body_without_a_key_sends_an_empty_credential_and_no_authorization() -> None:
    body = rp.connector_body("http://10.0.0.5:8000/", "my-pipe", api_key=None)
    assert body == expected_connector()


def test_connector_body_with_a_key_sends_it_as_credential_and_bearer_header() -> None:
    body = rp.connector_body("http://10.0.0.5:8000", "my-pipe", api_key="s3cret", read_timeout_s=4)
    assert body["credential"] == {"api_key": "s3cret"}
    assert body["actions"][0]["headers"] == {
        "content-type": "application/json",
        "Authorization": "Bearer ${credential.api_key}",
    }
    assert body["client_config"]["read_timeout"] == 4
    assert "s3cret" not in str(body["actions"])  # the key itself only travels in the credential


def test_builtin_post_process_is_cohere_rerank() -> None:
    body = rp.connector_body("http://10.0.0.5:8000", "my-pipe", api_key=None, post_process="builtin")
    assert body["actions"][0]["post_process_function"] == "connector.post_process.cohere.rerank"
    with pytest.raises(ValueError, match="painless or builtin"):
        rp.connector_body("http://10.0.0.5:8000", "p", api_key=None, post_process="other")  # type: ignore[arg-type]


def test_the_template_is_not_changed_by_filling_it() -> None:
    rp.connector_body("http://a:1", "one", api_key="k")
    assert rp.connector_body("http://10.0.0.5:8000", "my-pipe", api_key=None) == expected_connector()


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:9291", "http://127.0.0.1:9291"),
        ("https://rerank.example.com/api/", "https://rerank.example.com/api"),
        (" http://[::1]:8000/ ", "http://[::1]:8000"),
    ],
)
def test_service_base_and_urls(url: str, base: str) -> None:
    assert rp.service_base(url) == base
    assert rp.rerank_url(url) == f"{base}/v1/rerank"
    assert rp.endpoint_regex(url) == f"^\\Q{base}/\\E.*$"


@pytest.mark.parametrize(
    "url", ["127.0.0.1:9291", "ftp://host/x", "http://", "http://h/?q=1", "http://u:p@h:1", "http://h/#f"]
)
def test_unusable_service_urls_are_refused(url: str) -> None:
    with pytest.raises(rp.InvalidServiceUrl, match="--service-url"):
        rp.service_base(url)


def stored(desired: dict[str, Any]) -> dict[str, Any]:
    """What a GET of the connector returns on 2.19.6: no credential, client_config completed with defaults."""
    existing = copy.deepcopy(desired)
    del existing["credential"]
    existing["client_config"].update({"retry_backoff_millis": 200, "max_retry_times": 0})
    existing["created_time"] = 1
    return existing


def test_a_stored_connector_as_wanted_has_no_differences() -> None:
    desired = rp.connector_body("http://10.0.0.5:8000", "my-pipe", api_key=None)
    assert rp.connector_differences(stored(desired), desired) == []
    lower = stored(desired)
    lower["actions"][0]["action_type"] = "predict"  # sent lower case by hand: the same action
    assert rp.connector_differences(lower, desired) == []


def test_connector_differences_name_each_changed_field() -> None:
    desired = rp.connector_body("http://10.0.0.5:8000", "my-pipe", api_key=None)
    moved = rp.connector_body("http://10.0.0.6:8000", "my-pipe", api_key=None, read_timeout_s=3)
    assert rp.connector_differences(stored(moved), desired) == ["description", "actions", "client_config"]


def test_model_group_and_register_bodies() -> None:
    assert rp.model_group_body() == {
        "name": "hybrid-rerank",
        "description": "hybrid-rerank: remote rerank models (our service)",
    }
    assert rp.register_model_body("my-pipe", "G1", "C1") == {
        "name": "hybrid-rerank/my-pipe",
        "function_name": "remote",
        "model_group_id": "G1",
        "description": "hybrid-rerank: our cross-encoder service, for search pipeline 'my-pipe'",
        "connector_id": "C1",
    }


RERANK = {
    "rerank": {
        "tag": "hybrid-rerank",
        "description": "hybrid-rerank: rescore the page's hits with our cross-encoder; on failure keep the "
        "first-stage order",
        "ignore_failure": True,
        "ml_opensearch": {"model_id": "M1"},
        "context": {"document_fields": ["title", "text"]},
    }
}


def test_minmax_pipeline_normalizes_then_reranks() -> None:
    assert rp.rerank_pipeline_body("M1", fusion="minmax", bm25_weight=0.3) == {
        "description": "hybrid-rerank: minmax fusion of BM25 and k-NN, then our cross-encoder reranks the "
        "returned hits",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.3, 0.7]}},
                }
            }
        ],
        "response_processors": [RERANK],
    }


def test_rrf_pipeline_and_document_fields() -> None:
    body = rp.rerank_pipeline_body("M1", fusion="rrf", rrf_k=20, document_fields=["text"])
    assert body["phase_results_processors"] == [
        {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 20}}}
    ]
    assert body["response_processors"][0]["rerank"]["context"] == {"document_fields": ["text"]}
    with pytest.raises(ValueError, match="at least one field"):
        rp.rerank_processor("M1", [])
    with pytest.raises(ValueError, match="minmax or rrf"):
        rp.rerank_pipeline_body("M1", fusion="zscore")  # type: ignore[arg-type]


def test_rerank_ext_carries_the_query_text() -> None:
    assert rp.rerank_ext("why moon") == {"rerank": {"query_context": {"query_text": "why moon"}}}


@pytest.mark.parametrize(
    ("addresses", "private"),
    [
        (["127.0.0.1"], True),
        (["10.1.2.3"], True),
        (["192.168.0.9"], True),
        (["::1"], True),
        (["fe80::1%eth0"], True),
        (["8.8.8.8"], False),
        (["8.8.8.8", "10.0.0.1"], True),
        ([], False),
    ],
)
def test_is_private(addresses: list[str], private: bool) -> None:
    assert rp.is_private(addresses) is private


DEFAULT_TRUSTED = ["^https://api\\.cohere\\.ai/.*$"]
REGEX = "^\\Qhttp://127.0.0.1:9291/\\E.*$"


def test_effective_settings_layers_transient_over_persistent_over_defaults() -> None:
    flat = {
        "defaults": {rp.PRIVATE_IP: "false", rp.ONLY_ML_NODE: "true", "x": "d"},
        "persistent": {rp.PRIVATE_IP: "true", "x": "p"},
        "transient": {"x": "t"},
    }
    assert rp.effective_settings(flat) == {rp.PRIVATE_IP: "true", rp.ONLY_ML_NODE: "true", "x": "t"}


def test_settings_changes_on_a_fresh_one_node_cluster() -> None:
    effective = {rp.TRUSTED_ENDPOINTS: DEFAULT_TRUSTED, rp.PRIVATE_IP: "false", rp.ONLY_ML_NODE: "true"}
    assert rp.cluster_settings_changes(effective, REGEX, private_endpoint=True, has_ml_node=False) == {
        rp.TRUSTED_ENDPOINTS: [*DEFAULT_TRUSTED, REGEX],
        rp.PRIVATE_IP: True,
        rp.ONLY_ML_NODE: False,
    }


def test_no_settings_changes_when_already_allowed_or_not_needed() -> None:
    allowed = {rp.TRUSTED_ENDPOINTS: [REGEX], rp.PRIVATE_IP: "true", rp.ONLY_ML_NODE: "false"}
    assert rp.cluster_settings_changes(allowed, REGEX, private_endpoint=True, has_ml_node=False) == {}
    public = {rp.TRUSTED_ENDPOINTS: REGEX, rp.PRIVATE_IP: "false", rp.ONLY_ML_NODE: "true"}
    assert rp.cluster_settings_changes(public, REGEX, private_endpoint=False, has_ml_node=True) == {}


def test_settings_request_repeats_a_transiently_set_key_in_transient() -> None:
    changes = {rp.TRUSTED_ENDPOINTS: [REGEX], rp.PRIVATE_IP: True}
    assert rp.settings_request(changes, [rp.PRIVATE_IP, "other"]) == {
        "persistent": changes,
        "transient": {rp.PRIVATE_IP: True},
    }
    assert rp.settings_request(changes, []) == {"persistent": changes}


# --- the command's own checks, before any call to a cluster -----------------------------------------------


def run_install(monkeypatch: pytest.MonkeyPatch, *args: str, url: str | None = "http://127.0.0.1:1") -> Any:
    from typer.testing import CliRunner

    from hybrid_rerank.connector.cli import app

    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    if url is not None:
        monkeypatch.setenv("OPENSEARCH_URL", url)
    return CliRunner().invoke(app, ["opensearch", "install-rerank", *args])


def test_the_command_needs_opensearch_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_rerank.connector.errors import ConfigurationError

    result = run_install(monkeypatch, "--service-url", "http://127.0.0.1:8000", url=None)
    assert isinstance(result.exception, ConfigurationError)
    assert "OPENSEARCH_URL is not set" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--service-url", "localhost:8000"], "give the service's base URL"),
        (["--service-url", "http://h:1", "--fusion", "zscore"], "--fusion must be minmax or rrf"),
        (
            ["--service-url", "http://h:1", "--post-process", "x"],
            "--post-process must be painless or builtin",
        ),
    ],
)
def test_bad_options_are_usage_errors(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    result = run_install(monkeypatch, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_an_unreachable_cluster_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_rerank.connector.errors import BackendUnavailableError

    monkeypatch.setenv("OPENSEARCH_TIMEOUT", "1")
    result = run_install(monkeypatch, "--service-url", "http://127.0.0.1:8000", url="http://127.0.0.1:9")
    assert isinstance(result.exception, BackendUnavailableError)
    assert "cannot reach OpenSearch at http://127.0.0.1:9" in str(result.exception)

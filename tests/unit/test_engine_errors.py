"""The engines' client exceptions become the connector's errors with messages that say what to check, and
never carry a secret. Real client exceptions, raised through the backends' one mapping (`_call`); building a
client does no I/O, so no node is needed."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig, TlsError
from elasticsearch import AuthenticationException as EsAuthenticationException
from elasticsearch import AuthorizationException as EsAuthorizationException
from elasticsearch import BadRequestError, Elasticsearch
from elasticsearch import ConnectionError as EsConnectionError
from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from hybrid_rerank.connector.backends import elasticsearch as es_backend
from hybrid_rerank.connector.backends import opensearch as os_backend
from hybrid_rerank.connector.backends.elasticsearch import ElasticsearchBackend
from hybrid_rerank.connector.backends.engine import EngineBackend
from hybrid_rerank.connector.backends.engine_bodies import EngineFailure, failure_message, tls_detail
from hybrid_rerank.connector.backends.opensearch import OpenSearchBackend
from hybrid_rerank.connector.errors import BackendUnavailableError, ConnectorError, IndexMissingError

SECRET = "pa55-W0rd-never-shown"
URL = "https://node.example:9200"
VERIFY_FAILED = (
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate "
    "chain (_ssl.c:1006)"
)


def opensearch() -> OpenSearchBackend:
    return OpenSearchBackend(OpenSearch(hosts=[URL], http_auth=("admin", SECRET)), "docs", url=URL)


def elasticsearch() -> ElasticsearchBackend:
    return ElasticsearchBackend(Elasticsearch(hosts=[URL], basic_auth=("elastic", SECRET)), "docs", url=URL)


def es_meta(status: int) -> ApiResponseMeta:
    return ApiResponseMeta(status, "1.1", HttpHeaders(), 0.01, NodeConfig("https", "node.example", 9200))


def raised(backend: EngineBackend, exc: Exception) -> ConnectorError:
    def fail() -> None:
        raise exc

    with pytest.raises(ConnectorError) as caught:
        backend._call(fail, "search")
    error = caught.value
    for text in (str(error), repr(error), repr(error.args)):
        assert SECRET not in text
    return error


def test_a_wrong_password_names_the_credential_settings() -> None:
    os_error = raised(
        opensearch(), os_exc.AuthenticationException(401, "Unauthorized", {"error": "Unauthorized"})
    )
    assert type(os_error) is ConnectorError
    assert "refused the credentials (HTTP 401)" in str(os_error)
    assert "OPENSEARCH_USERNAME and OPENSEARCH_PASSWORD" in str(os_error)
    es_error = raised(elasticsearch(), EsAuthenticationException("unable to authenticate", es_meta(401), {}))
    assert "ELASTICSEARCH_USERNAME and ELASTICSEARCH_PASSWORD and ELASTICSEARCH_API_KEY" in str(es_error)
    assert "Elasticsearch at https://node.example:9200 refused the credentials" in str(es_error)


def test_a_missing_permission_says_which_and_points_at_the_roles() -> None:
    body = {
        "error": {"type": "security_exception", "reason": "no permissions for [indices:data/read/search]"}
    }
    error = raised(opensearch(), os_exc.AuthorizationException(403, "security_exception", body))
    assert (
        "denied the configured user the right to search (HTTP 403: security_exception: no permissions"
        in str(error)
    )
    assert "the user's roles" in str(error)
    es_error = raised(elasticsearch(), EsAuthorizationException("forbidden", es_meta(403), body))
    assert "ELASTICSEARCH_API_KEY" in str(es_error) and "HTTP 403" in str(es_error)


@pytest.mark.parametrize(
    ("make", "exc", "ca_var"),
    [
        (
            opensearch,
            os_exc.SSLError("N/A", f"ConnectionError({VERIFY_FAILED}) caused by: x", None),
            "OPENSEARCH",
        ),
        (elasticsearch, TlsError(VERIFY_FAILED, errors=(ssl.SSLError(VERIFY_FAILED),)), "ELASTICSEARCH"),
    ],
)
def test_an_untrusted_certificate_names_the_ca_setting(
    make: Callable[[], EngineBackend], exc: Exception, ca_var: str
) -> None:
    error = raised(make(), exc)
    assert isinstance(error, BackendUnavailableError)
    assert f"set {ca_var}_CA_CERTS to the CA certificate file" in str(error)
    assert "certificate verify failed: self-signed certificate in certificate chain" in str(error)


def test_the_tls_detail_quotes_only_the_tls_verdict() -> None:
    text = f"SSLError(N/A, 'https://admin:{SECRET}@node:9200/_search {VERIFY_FAILED}')"
    assert tls_detail(text) == VERIFY_FAILED.removesuffix(" (_ssl.c:1006)")
    assert tls_detail("certificate verify failed: Hostname mismatch, certificate is not valid for 'x'.") == (
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'x'."
    )
    assert tls_detail(f"https://admin:{SECRET}@node connection reset") == "TLS handshake failed"


def test_unreachable_missing_and_refused_keep_their_messages() -> None:
    down = raised(opensearch(), os_exc.ConnectionError("N/A", "refused", None))
    assert isinstance(down, BackendUnavailableError) and "`scripts/opensearch start`" in str(down)
    es_down = raised(elasticsearch(), EsConnectionError("refused"))
    assert isinstance(es_down, BackendUnavailableError) and "ELASTICSEARCH_URL" in str(es_down)
    missing = raised(opensearch(), os_exc.NotFoundError(404, "index_not_found_exception", {}))
    assert isinstance(missing, IndexMissingError) and "hybrid-rerank index PATH" in str(missing)
    body = {
        "error": {"type": "parse_exception", "reason": "bad", "caused_by": {"type": "x", "reason": "deep"}}
    }
    refused = raised(elasticsearch(), BadRequestError("bad", es_meta(400), body))
    assert str(refused) == "Elasticsearch refused to search: 400 parse_exception: bad (x: deep)"


def test_every_failure_kind_has_its_own_message() -> None:
    messages = {
        kind: failure_message(EngineFailure(kind, 401, "d"), os_backend.NAMES, url="", alias="a", what="w")
        for kind in ("unreachable", "tls", "auth", "forbidden", "missing", "refused")  # type: ignore[misc]
    }
    assert len(set(messages.values())) == 6
    assert "the configured URL" in messages["unreachable"]
    assert es_backend.classify(ValueError("x")) == EngineFailure("unreachable", detail="ValueError")


def test_a_comma_separated_url_gives_the_client_every_node() -> None:
    from hybrid_rerank.connector.backends import elasticsearch, opensearch
    from hybrid_rerank.connector.backends.engine_bodies import engine_hosts

    assert engine_hosts(" http://a:9200 , http://b:9200,,http://c:9200 ") == [
        "http://a:9200",
        "http://b:9200",
        "http://c:9200",
    ]
    assert engine_hosts("https://n:9240") == ["https://n:9240"]
    with pytest.raises(ValueError, match="no node URL"):
        engine_hosts(" , ")
    client = opensearch.make_client("http://127.0.0.1:9270,http://127.0.0.1:9271")
    assert sorted(c.host for c in client.transport.connection_pool.connections) == [  # pool order is random
        "http://127.0.0.1:9270",
        "http://127.0.0.1:9271",
    ]
    es = elasticsearch.make_client("http://127.0.0.1:9270,http://127.0.0.1:9271")
    assert sorted(node.base_url for node in es.transport.node_pool.all()) == [
        "http://127.0.0.1:9270",
        "http://127.0.0.1:9271",
    ]


def test_a_search_answered_by_only_some_shards_is_named_not_passed_off_as_whole() -> None:
    from hybrid_rerank.connector.backends.engine_bodies import shard_failure

    assert shard_failure({"_shards": {"total": 1, "successful": 1, "failed": 0}}, "OpenSearch") is None
    assert shard_failure({"hits": {}}, "OpenSearch") is None
    partial = {
        "_shards": {
            "total": 3,
            "successful": 2,
            "failed": 1,
            "failures": [{"shard": 0, "reason": {"type": "node_not_connected_exception"}}],
        }
    }
    message = shard_failure(partial, "Elasticsearch") or ""
    assert message.startswith(
        "Elasticsearch answered from 2 of 3 shards (1 failed: node_not_connected_exception)"
    )
    assert "retry" in message

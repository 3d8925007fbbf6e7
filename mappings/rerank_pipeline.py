"""What `hybrid-rerank opensearch install-rerank` sends to a node with ml-commons, as pure functions: the
HTTP connector to our `/v1/rerank`, the model group and remote model, the search pipeline (hybrid
normalization, then the `rerank` response processor) and the cluster settings the connector needs.

The JSON files `rerank_connector.json` and `pipeline_rerank.json` are the reference; the functions here only
fill in the named values. Every field was checked against a real OpenSearch 2.19.6 node (see
docs/opensearch-rerank.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from hybrid_rerank.mappings import load, normalization_pipeline_body, rrf_pipeline_body

PostProcess = Literal["painless", "builtin"]
Fusion = Literal["minmax", "rrf"]

MODEL_GROUP_NAME = "hybrid-rerank"
NAME_PREFIX = "hybrid-rerank/"
DEFAULT_DOCUMENT_FIELDS = ("title", "text")

TRUSTED_ENDPOINTS = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
ONLY_ML_NODE = "plugins.ml_commons.only_run_on_ml_node"

BUILTIN_POST_PROCESS = "connector.post_process.cohere.rerank"
# ml-commons 2.19.6's built-in Cohere post-process casts each relevance_score to Double, but its JSON parser
# reads some 16-17 digit decimals (Python's repr of a float, e.g. 0.03333333333333333) as BigDecimal and
# the cast fails: "class java.math.BigDecimal cannot be cast to class java.lang.Double"; an integer fails the
# same way. This script reads any number as text, so the scores' formatting does not matter. It returns
# the scores in the order of the documents sent, as the rerank processor expects.
PAINLESS_POST_PROCESS = """
def results = params.results;
def scores = new double[results.length];
for (int i = 0; i < results.length; i++) {
  int index = (int) Double.parseDouble(String.valueOf(results[i].index));
  scores[index] = Double.parseDouble(String.valueOf(results[i].relevance_score));
}
def out = new StringBuilder('[');
for (int i = 0; i < scores.length; i++) {
  if (i > 0) { out.append(','); }
  out.append('{"name": "similarity", "data_type": "FLOAT32", "shape": [1], "data": [');
  out.append(scores[i]).append(']}');
}
out.append(']');
return out.toString();
""".strip()


class InvalidServiceUrl(ValueError):
    """The service URL cannot be called by a connector."""


def service_base(service_url: str) -> str:
    """The base URL without a trailing slash; only http(s) URLs with a host and no query are usable."""
    parts = urlsplit(service_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidServiceUrl(
            f"--service-url {service_url!r}: give the service's base URL, e.g. http://10.0.0.5:8000"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidServiceUrl(
            f"--service-url {service_url!r}: no query, fragment or credentials in the URL (API_KEY is sent "
            "as a connector credential)"
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def rerank_url(service_url: str) -> str:
    return f"{service_base(service_url)}/v1/rerank"


def endpoint_regex(service_url: str) -> str:
    """A Java regex matching the service's URLs only: the base quoted literally (\\Q...\\E)."""
    return f"^\\Q{service_base(service_url)}/\\E.*$"


def names_for(pipeline: str) -> str:
    """The connector's and the model's name: one of each per pipeline, found again by it."""
    return f"{NAME_PREFIX}{pipeline}"


def connector_body(
    service_url: str,
    pipeline: str,
    *,
    api_key: str | None,
    read_timeout_s: int = 10,
    post_process: PostProcess = "painless",
) -> dict[str, Any]:
    """The create (and update) body of the HTTP connector to `<service_url>/v1/rerank`.

    ml-commons 2.19.6 refuses a connector without a credential ("Connector credential is null or empty
    list"), so one is always sent; the Authorization header is only added when there is a key."""
    body = load("rerank_connector.json")
    name = names_for(pipeline)
    body["name"] = name
    body["description"] = body["description"].replace("<service-url>", service_base(service_url))
    body["credential"] = {"api_key": api_key or ""}
    body["client_config"]["read_timeout"] = read_timeout_s
    action = body["actions"][0]
    action["url"] = rerank_url(service_url)
    if api_key:
        action["headers"]["Authorization"] = "Bearer ${credential.api_key}"
    if post_process == "painless":
        action["post_process_function"] = PAINLESS_POST_PROCESS
    elif post_process != "builtin":
        raise ValueError(f"unknown post-process {post_process!r}: use painless or builtin")
    return body


# What a connector GET returns that we compare: the credential is never returned, and the node fills in
# client_config defaults (retry settings) we do not send.
COMPARED_FIELDS = ("name", "description", "version", "protocol", "parameters", "actions")


def connector_differences(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """The fields of `desired` that the stored connector `existing` does not have as wanted."""
    different = [
        field
        for field in COMPARED_FIELDS
        if _normalized(field, existing.get(field)) != _normalized(field, desired.get(field))
    ]
    stored_client = existing.get("client_config") or {}
    if any(stored_client.get(k) != v for k, v in desired.get("client_config", {}).items()):
        different.append("client_config")
    return different


def _normalized(field: str, value: Any) -> Any:
    if field == "actions" and isinstance(value, list):
        # The node stores action_type upper case and may drop empty maps.
        return [
            {
                k: (str(v).upper() if k == "action_type" else v)
                for k, v in action.items()
                if v not in ({}, None)
            }
            for action in value
        ]
    if field == "parameters":
        return value or {}
    return value


def model_group_body() -> dict[str, Any]:
    return {"name": MODEL_GROUP_NAME, "description": "hybrid-rerank: remote rerank models (our service)"}


def register_model_body(pipeline: str, model_group_id: str, connector_id: str) -> dict[str, Any]:
    return {
        "name": names_for(pipeline),
        "function_name": "remote",
        "model_group_id": model_group_id,
        "description": f"hybrid-rerank: our cross-encoder service, for search pipeline {pipeline!r}",
        "connector_id": connector_id,
    }


def rerank_processor(
    model_id: str, document_fields: Sequence[str] = DEFAULT_DOCUMENT_FIELDS
) -> dict[str, Any]:
    """The `rerank` response processor (ml_opensearch); `ignore_failure` keeps the first-stage order when our
    service cannot answer."""
    if not document_fields:
        raise ValueError("document_fields must name at least one field")
    processor = load("pipeline_rerank.json")
    processor["rerank"]["ml_opensearch"]["model_id"] = model_id
    processor["rerank"]["context"]["document_fields"] = list(document_fields)
    return processor


def rerank_pipeline_body(
    model_id: str,
    *,
    fusion: Fusion = "minmax",
    bm25_weight: float = 0.5,
    rrf_k: int = 60,
    document_fields: Sequence[str] = DEFAULT_DOCUMENT_FIELDS,
) -> dict[str, Any]:
    """The hybrid normalization (as our server-side hybrid search uses), then the rerank processor."""
    if fusion == "minmax":
        weights = (round(bm25_weight, 4), round(1.0 - bm25_weight, 4))
        body = normalization_pipeline_body("min_max", weights)
    elif fusion == "rrf":
        body = rrf_pipeline_body(rrf_k)
    else:
        raise ValueError(f"unknown fusion {fusion!r}: use minmax or rrf")
    body["description"] = (
        f"hybrid-rerank: {fusion} fusion of BM25 and k-NN, then our cross-encoder reranks the returned hits"
    )
    body["response_processors"] = [rerank_processor(model_id, document_fields)]
    return body


def rerank_ext(query_text: str) -> dict[str, Any]:
    """The `ext` a search through the pipeline must carry: the rerank processor does not read the query."""
    return {"rerank": {"query_context": {"query_text": query_text}}}


def is_private(addresses: Iterable[str]) -> bool:
    """Whether any address is one ml-commons refuses without private_ip_enabled (loopback, private, ...)."""
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
            return True
    return False


def effective_settings(flat: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`GET _cluster/settings?include_defaults&flat_settings` merged as the node applies them."""
    merged: dict[str, Any] = {}
    for layer in ("defaults", "persistent", "transient"):
        merged.update(flat.get(layer) or {})
    return merged


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() == "true"


def cluster_settings_changes(
    effective: Mapping[str, Any], regex: str, *, private_endpoint: bool, has_ml_node: bool
) -> dict[str, Any]:
    """The settings to change so ml-commons may call the service: our regex added to the trusted endpoints
    (the others kept), private addresses allowed when the service has one, and models allowed on data nodes
    when the cluster has no ML node. Empty when nothing needs changing."""
    changes: dict[str, Any] = {}
    trusted = effective.get(TRUSTED_ENDPOINTS) or []
    trusted = [trusted] if isinstance(trusted, str) else list(trusted)
    if regex not in trusted:
        changes[TRUSTED_ENDPOINTS] = [*trusted, regex]
    if private_endpoint and not _truthy(effective.get(PRIVATE_IP, "false")):
        changes[PRIVATE_IP] = True
    if not has_ml_node and _truthy(effective.get(ONLY_ML_NODE, "true")):
        changes[ONLY_ML_NODE] = False
    return changes


def settings_request(changes: Mapping[str, Any], transient_keys: Iterable[str]) -> dict[str, Any]:
    """The `PUT _cluster/settings` body: persistent, and transient too for a key that has a transient value
    (which would otherwise keep overriding the persistent one)."""
    transient = set(transient_keys)
    body: dict[str, Any] = {"persistent": dict(changes)}
    overridden = {k: v for k, v in changes.items() if k in transient}
    if overridden:
        body["transient"] = overridden
    return body

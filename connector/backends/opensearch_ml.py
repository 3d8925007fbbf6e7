"""Install our service as OpenSearch's reranker: the ml-commons HTTP connector to `/v1/rerank`, the remote
model, and a search pipeline (hybrid normalization, then the `rerank` processor). Idempotent: everything is
found again by name and reused, or updated in place, never duplicated.

Bodies come from `hybrid_rerank.mappings.rerank_pipeline` (pure); this module only does the calls, in order,
and reports each step through `say`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from hybrid_rerank.connector.backends.opensearch import transport_reason
from hybrid_rerank.connector.errors import BackendUnavailableError, ConfigurationError, ConnectorError
from hybrid_rerank.mappings import rerank_pipeline as bodies

ML = "/_plugins/_ml"
REQUIRED_PLUGINS = {"opensearch-ml": "ml-commons", "opensearch-neural-search": "neural-search"}


@dataclass(frozen=True)
class InstallOptions:
    service_url: str
    pipeline: str = "hybrid-rerank"
    api_key: str | None = None
    fusion: bodies.Fusion = "minmax"
    bm25_weight: float = 0.5
    rrf_k: int = 60
    document_fields: tuple[str, ...] = bodies.DEFAULT_DOCUMENT_FIELDS
    read_timeout_s: int = 10
    post_process: bodies.PostProcess = "painless"
    change_cluster_settings: bool = True
    deploy_timeout_s: float = 60.0


@dataclass
class InstallReport:
    model_id: str
    pipeline: str
    connector_id: str
    model_group_id: str
    settings_changed: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)


class RerankInstaller:
    def __init__(self, client: OpenSearch, *, url: str = "", say: Callable[[str], None] = lambda _: None):
        self.client = client
        self.url = url
        self._say = say
        self.steps: list[str] = []

    def say(self, line: str) -> None:
        self.steps.append(line)
        self._say(line)

    # --- the one place the client's exceptions become ours ---------------------------------------------

    def call(self, method: str, path: str, body: Any = None, what: str = "") -> Any:
        try:
            return self.client.transport.perform_request(method, path, body=body)
        except os_exc.ConnectionError as exc:
            raise BackendUnavailableError(
                f"cannot reach OpenSearch at {self.url or 'OPENSEARCH_URL'} while trying to {what or path} "
                f"({type(exc).__name__}); check OPENSEARCH_URL"
            ) from exc
        except os_exc.TransportError as exc:
            raise ConnectorError(
                f"OpenSearch refused to {what or path}: {exc.status_code} {transport_reason(exc)}"
            ) from exc

    # --- steps ---------------------------------------------------------------------------------------------

    def install(self, options: InstallOptions) -> InstallReport:
        regex = bodies.endpoint_regex(options.service_url)  # validates the URL before any call
        self.check_plugins()
        changed = self.ensure_cluster_settings(options.service_url, regex, options.change_cluster_settings)
        group_id = self.ensure_model_group()
        desired = bodies.connector_body(
            options.service_url,
            options.pipeline,
            api_key=options.api_key,
            read_timeout_s=options.read_timeout_s,
            post_process=options.post_process,
        )
        name = bodies.names_for(options.pipeline)
        model = self._one("models", name, "model", lambda source: source.get("algorithm") == "REMOTE")
        connector_id = self.ensure_connector(desired, model, force_update=bool(options.api_key))
        model_id = self.ensure_model(
            options.pipeline, group_id, connector_id, model, options.deploy_timeout_s
        )
        pipeline_body = bodies.rerank_pipeline_body(
            model_id,
            fusion=options.fusion,
            bm25_weight=options.bm25_weight,
            rrf_k=options.rrf_k,
            document_fields=options.document_fields,
        )
        self.call("PUT", f"/_search/pipeline/{options.pipeline}", pipeline_body, "create the search pipeline")
        self.say(f"search pipeline {options.pipeline!r}: {options.fusion} fusion, then rerank by {model_id}")
        return InstallReport(model_id, options.pipeline, connector_id, group_id, changed, self.steps)

    def check_plugins(self) -> None:
        rows = self.call("GET", "/_cat/plugins", None, "list plugins") or ""
        installed = {line.split()[1] for line in str(rows).splitlines() if len(line.split()) >= 2}
        missing = [f"{label} ({name})" for name, label in REQUIRED_PLUGINS.items() if name not in installed]
        if missing:
            raise ConfigurationError(
                f"the OpenSearch node has no {' and no '.join(missing)}; the rerank processor needs both "
                "(a local node with them: OPENSEARCH_ML=1 scripts/opensearch start)"
            )

    def ensure_cluster_settings(self, service_url: str, regex: str, change: bool) -> dict[str, Any]:
        flat = self.call(
            "GET", "/_cluster/settings?include_defaults=true&flat_settings=true", None, "read settings"
        )
        effective = bodies.effective_settings(flat)
        nodes = self.call("GET", "/_nodes/_all/roles", None, "list node roles").get("nodes", {})
        has_ml_node = any("ml" in node.get("roles", []) for node in nodes.values())
        changes = bodies.cluster_settings_changes(
            effective, regex, private_endpoint=service_is_private(service_url), has_ml_node=has_ml_node
        )
        if not changes:
            self.say("cluster settings: already allow the connector (nothing changed)")
            return {}
        request = bodies.settings_request(changes, (flat.get("transient") or {}).keys())
        if not change:
            raise ConfigurationError(
                "ml-commons would refuse this connector; apply these cluster settings first (or drop "
                f"--no-cluster-settings): PUT _cluster/settings {request}"
            )
        self.call("PUT", "/_cluster/settings", request, "update the cluster settings")
        for key, value in changes.items():
            shown = (
                f"+ {value[-1]!r} ({len(value) - 1} kept)" if isinstance(value, list) else str(value).lower()
            )
            self.say(f"cluster setting {key} = {shown} (set through the cluster settings API, persistent)")
        return changes

    def ensure_model_group(self) -> str:
        found = self._one("model_groups", bodies.MODEL_GROUP_NAME, "model group")
        if found is not None:
            self.say(f"model group {bodies.MODEL_GROUP_NAME!r}: reused {found['_id']}")
            return str(found["_id"])
        reply = self.call(
            "POST", f"{ML}/model_groups/_register", bodies.model_group_body(), "register the model group"
        )
        self.say(f"model group {bodies.MODEL_GROUP_NAME!r}: created {reply['model_group_id']}")
        return str(reply["model_group_id"])

    def ensure_connector(
        self, desired: dict[str, Any], model: dict[str, Any] | None, force_update: bool
    ) -> str:
        """Reuse the connector of that name when it is as wanted; else update it in place (ml-commons
        refuses to while a model using it is deployed, so that model is undeployed first). With an API key
        it is always updated: the node never returns the stored key, so a changed key cannot be seen."""
        found = self._one("connectors", desired["name"], "connector")
        if found is None:
            reply = self.call("POST", f"{ML}/connectors/_create", desired, "create the connector")
            self.say(f"connector {desired['name']!r}: created {reply['connector_id']} -> {_url(desired)}")
            return str(reply["connector_id"])
        connector_id = str(found["_id"])
        differences = bodies.connector_differences(found["_source"], desired)
        if not differences and not force_update:
            self.say(f"connector {desired['name']!r}: reused {connector_id} (unchanged)")
            return connector_id
        if model is not None and model["_source"].get("connector_id") == connector_id:
            self.undeploy(str(model["_id"]))
        self.call("PUT", f"{ML}/connectors/{connector_id}", desired, "update the connector")
        why = ", ".join(differences) if differences else "credential (API_KEY is set)"
        self.say(f"connector {desired['name']!r}: updated {connector_id} ({why}) -> {_url(desired)}")
        return connector_id

    def ensure_model(
        self,
        pipeline: str,
        group_id: str,
        connector_id: str,
        model: dict[str, Any] | None,
        deploy_timeout_s: float,
    ) -> str:
        name = bodies.names_for(pipeline)
        if model is None:
            body = bodies.register_model_body(pipeline, group_id, connector_id)
            reply = self.call("POST", f"{ML}/models/_register", body, "register the remote model")
            model_id = str(reply["model_id"])
            self.say(f"model {name!r}: registered {model_id}")
        else:
            model_id = str(model["_id"])
            if model["_source"].get("connector_id") != connector_id:  # its connector was deleted and remade
                self.undeploy(model_id)
                self.call(
                    "PUT", f"{ML}/models/{model_id}", {"connector_id": connector_id}, "point the model at it"
                )
                self.say(f"model {name!r}: {model_id} now uses connector {connector_id}")
        state = self.model_state(model_id)
        if state == "DEPLOYED":
            self.say(f"model {name!r}: {model_id} deployed (reused)")
            return model_id
        self.call("POST", f"{ML}/models/{model_id}/_deploy", None, "deploy the model")
        deadline = time.monotonic() + deploy_timeout_s
        while (state := self.model_state(model_id)) != "DEPLOYED":
            if state == "DEPLOY_FAILED" or time.monotonic() > deadline:
                raise ConnectorError(
                    f"model {model_id} did not deploy (state {state}); see the node log, and "
                    f"GET {ML}/models/{model_id}"
                )
            time.sleep(0.3)
        self.say(f"model {name!r}: {model_id} deployed")
        return model_id

    def model_state(self, model_id: str) -> str:
        return str(self.call("GET", f"{ML}/models/{model_id}", None, "read the model").get("model_state"))

    def undeploy(self, model_id: str) -> None:
        if self.model_state(model_id) in ("DEPLOYED", "PARTIALLY_DEPLOYED", "DEPLOYING"):
            self.call("POST", f"{ML}/models/{model_id}/_undeploy", None, "undeploy the model")
            self.say(f"model {model_id}: undeployed to change it")

    def _one(
        self, kind: str, name: str, label: str, keep: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> dict[str, Any] | None:
        """The oldest of that name (several only if made by hand or a race); the others are reported."""
        query = {
            "size": 100,
            "query": {"term": {"name.keyword": name}},
            "_source": {"excludes": ["credential"]},
            "sort": [{"created_time": {"order": "asc"}}],
        }
        try:
            reply = self.call("POST", f"{ML}/{kind}/_search", query, f"look up the {label}")
        except ConnectorError as exc:
            if "index_not_found" in str(exc):  # nothing of that kind was ever created on this cluster
                return None
            raise
        hits = [h for h in reply.get("hits", {}).get("hits", []) if keep(h.get("_source", {}))]
        if len(hits) > 1:
            extra = ", ".join(str(h["_id"]) for h in hits[1:])
            self.say(
                f"note: {len(hits) - 1} more {label}(s) named {name!r} ({extra}); using {hits[0]['_id']}"
            )
        return hits[0] if hits else None


def service_is_private(service_url: str) -> bool:
    """Whether the service's host resolves (here) to an address ml-commons treats as private."""
    hostname = urlsplit(bodies.service_base(service_url)).hostname or ""
    try:
        infos = socket.getaddrinfo(hostname, None)
    except socket.gaierror as exc:
        raise ConfigurationError(f"--service-url: cannot resolve host {hostname!r} ({exc})") from exc
    return bodies.is_private(str(info[4][0]) for info in infos)


def _url(connector: dict[str, Any]) -> str:
    return str(connector["actions"][0]["url"])

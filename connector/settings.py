"""The one settings object, read from environment variables and an optional `.env` file: the workers'
settings group (RERANK_*, REDIS_URL, DATA_DIR) extended with the connector's own.

Build it at an entry point (`load_settings()`) and turn it into constructor arguments in `factory`; library
code never reads it, nor the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import NoDecode

from hybrid_rerank.connector.errors import ConfigurationError
from hybrid_rerank.connector.fusion import FusionMethod
from hybrid_rerank.connector.language import parse_languages
from hybrid_rerank.workers.settings import WorkerSettings, comma_list, settings_problems

EmbeddingBackendName = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]

QueryBackendName = Literal["auto", "same", "onnx", "onnx-int8"]

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def user_onnx_cache() -> Path:
    """$XDG_CACHE_HOME/hybrid-rerank/onnx (~/.cache/... by default): one export per model content and recipe
    for every DATA_DIR of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hybrid-rerank" / "onnx"


class Settings(WorkerSettings):
    """Environment variable names are the field names in upper case (e.g. `OPENSEARCH_URL`). The rerank
    fields (RERANK_*, REDIS_URL, DATA_DIR, TRUST_REMOTE_CODE) come from the workers' group."""

    # Where things run. Unset URLs mean the embedded, in-process defaults.
    opensearch_url: str | None = Field(
        None, description="OpenSearch node URL, or a cluster's node URLs, comma-separated; unset: embedded"
    )
    opensearch_username: str | None = None
    opensearch_password: SecretStr | None = None
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: Path | None = Field(
        None, description="PEM CA bundle that signed the node's certificate"
    )
    opensearch_timeout: float = Field(30.0, gt=0, description="seconds per request, retried on timeout")
    opensearch_analyzer: Literal["english_cjk", "english", "cjk"] = "english_cjk"
    elasticsearch_url: str | None = Field(
        None, description="Elasticsearch 8.x node URL (instead of OpenSearch)"
    )
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_api_key: SecretStr | None = Field(None, description="instead of a username and password")
    elasticsearch_verify_certs: bool = True
    elasticsearch_ca_certs: Path | None = Field(
        None, description="PEM CA bundle that signed the node's certificate"
    )
    # Boosting titles hurt on SciFact train (nDCG@10: x1 0.699, x1.5 0.676, x2 0.633): off by default.
    title_boost: float = Field(1.0, gt=0)
    hnsw_m: int = Field(16, gt=1)
    hnsw_ef_construction: int = Field(128, gt=1)
    # client: BM25 and k-NN in one _msearch, fused here; server: one `hybrid` query through a search pipeline.
    hybrid_mode: Literal["client", "server"] = "client"
    recall_texts: Literal["legs", "fetch"] = Field(
        "legs",
        description="legs: the recall legs return their hits' texts; fetch: ids and scores only, then one "
        "request for the reranked head's and the page's texts (for long documents)",
    )

    # Storage.
    index_name: str = "documents"
    max_record_bytes: int = Field(1_000_000, gt=0, description="larger input records are rejected")

    # Bi-encoder.
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    embedding_batch_size: int = Field(32, gt=0)
    embedding_device: str | None = None
    embedding_backend: EmbeddingBackendName = "auto"
    embedding_token_budget: int = Field(16384, ge=16, description="ONNX backends: padded tokens per call")
    embedding_query_cache: int = Field(1024, ge=0, description="query embeddings kept in an LRU cache")
    # The query path's runner: `auto` = ONNX int8, one query at a time (see connector/query_embedding.py).
    embedding_query_backend: QueryBackendName = Field(
        "auto", description="auto (ONNX int8 one query at a time), same (as the documents), onnx, onnx-int8"
    )
    embedding_query_threads: int = Field(1, gt=0, description="onnxruntime threads of the query runner")
    embedding_onnx_cache: Path = Field(
        default_factory=user_onnx_cache,
        description="where the bi-encoder's ONNX exports are kept, shared by every DATA_DIR",
    )
    # Prompts (e5: "query: " / "passage: "); unset: the folder's config_sentence_transformers.json, "" none.
    embedding_query_prompt: str | None = Field(None, description="prepended to every query")
    embedding_passage_prompt: str | None = Field(None, description="prepended to every indexed document")
    embedding_languages: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="comma-separated ISO 639-1 codes the bi-encoder reads (* = any); unset: its model card's",
    )
    # A query in a language the bi-encoder does not read is searched by BM25 alone; one the reranker does
    # not read is not reranked (rerank_fallback "language"). CMRC 2018 (Chinese) with the English defaults:
    # see docs/languages.md.
    language_guard: bool = True

    # Search pipeline: N candidates per recall leg, M reranked, k returned.
    recall_depth: int = Field(100, gt=0)
    rerank_depth: int = Field(30, ge=0)
    top_k: int = Field(10, gt=0)
    # z-score fusion led on the SciFact train and CMRC dev splits (see the README's measurements).
    fusion: FusionMethod = "zscore"
    rrf_k: int = Field(60, gt=0)
    bm25_weight: float = Field(0.5, ge=0.0, le=1.0, description="convex fusion: vector weight = 1 - this")

    # The HTTP service (`hybrid-rerank serve`). Limits answer a 4xx naming the field, never a 500.
    api_key: SecretStr | None = Field(None, description="when set, every API route needs Bearer <key>")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; empty: CORS off"
    )
    service_max_body_bytes: int = Field(4_000_000, gt=0)
    service_max_query_chars: int = Field(2_000, gt=0)
    service_max_documents: int = Field(1_000, gt=0, description="documents in one rerank request")
    service_max_document_chars: int = Field(100_000, gt=0)
    service_max_k: int = Field(100, gt=0)
    service_max_page: int = Field(100, gt=0)
    service_max_job_queries: int = Field(10_000, gt=0, description="queries in one batch-search job")
    service_job_ttl_s: int = Field(86_400, gt=0, description="finished jobs are kept this long")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("embedding_languages", mode="before")
    @classmethod
    def _embedding_language_list(cls, value: object) -> object:
        return comma_list(value)

    @field_validator("embedding_languages", "rerank_languages")
    @classmethod
    def _language_codes(cls, value: list[str] | None) -> list[str] | None:
        return list(parse_languages(value)) if value is not None else None

    @field_validator(
        "opensearch_url",
        "elasticsearch_url",
        "opensearch_username",
        "elasticsearch_username",
        "opensearch_ca_certs",
        "elasticsearch_ca_certs",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("opensearch_url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is not None and any(urlsplit(host).password for host in value.split(",")):
            raise ValueError(
                "OPENSEARCH_URL must not carry a password; set OPENSEARCH_USERNAME and OPENSEARCH_PASSWORD"
            )
        return value

    @field_validator("elasticsearch_url")
    @classmethod
    def _no_password_in_es_url(cls, value: str | None) -> str | None:
        if value is not None and any(urlsplit(host).password for host in value.split(",")):
            raise ValueError(
                "ELASTICSEARCH_URL must not carry a password; set ELASTICSEARCH_USERNAME and "
                "ELASTICSEARCH_PASSWORD (or ELASTICSEARCH_API_KEY)"
            )
        return value

    @model_validator(mode="after")
    def _engine_security_consistent(self) -> Settings:
        problems = engine_security_problems(
            "OPENSEARCH",
            self.opensearch_url,
            self.opensearch_username,
            self.opensearch_password,
            self.opensearch_ca_certs,
            self.opensearch_verify_certs,
        ) + engine_security_problems(
            "ELASTICSEARCH",
            self.elasticsearch_url,
            self.elasticsearch_username,
            self.elasticsearch_password,
            self.elasticsearch_ca_certs,
            self.elasticsearch_verify_certs,
        )
        if self.elasticsearch_api_key is not None and self.elasticsearch_username is not None:
            problems.append(
                "set ELASTICSEARCH_API_KEY or ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD, not both"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _one_engine(self) -> Settings:
        if self.opensearch_url is not None and self.elasticsearch_url is not None:
            raise ValueError(
                "set OPENSEARCH_URL or ELASTICSEARCH_URL, not both: the index lives in one engine"
            )
        return self

    @model_validator(mode="after")
    def _depths_consistent(self) -> Settings:
        if self.rerank_depth > self.recall_depth:
            raise ValueError(
                f"RERANK_DEPTH ({self.rerank_depth}) cannot exceed RECALL_DEPTH ({self.recall_depth})"
            )
        return self

    @property
    def uses_opensearch(self) -> bool:
        return self.opensearch_url is not None

    def describe(self) -> dict[str, str]:
        """What is configured, safe to print: secrets and URL passwords are masked."""
        redis = redact_url(self.redis_url.get_secret_value()) if self.redis_url else "unset (in-process)"
        return {
            "backend": self.opensearch_url or self.elasticsearch_url or f"embedded ({self.data_dir})",
            "opensearch_username": self.opensearch_username or "unset",
            "opensearch_password": "set (hidden)" if self.opensearch_password else "unset",
            "opensearch_tls": tls_description(self.opensearch_ca_certs, self.opensearch_verify_certs),
            "elasticsearch_username": self.elasticsearch_username or "unset",
            "elasticsearch_password": "set (hidden)" if self.elasticsearch_password else "unset",
            "elasticsearch_api_key": "set (hidden)" if self.elasticsearch_api_key else "unset",
            "elasticsearch_tls": tls_description(
                self.elasticsearch_ca_certs, self.elasticsearch_verify_certs
            ),
            "rerank": redis,
            "index": self.index_name,
            "embedding_model": self.embedding_model,
            "rerank_model": self.rerank_model or "off",
            "depths": f"recall {self.recall_depth}, rerank {self.rerank_depth}, top {self.top_k}",
            "fusion": self.fusion,
            "language_guard": "on" if self.language_guard else "off",
        }


def engine_security_problems(
    prefix: str,
    url: str | None,
    username: str | None,
    password: SecretStr | None,
    ca_certs: Path | None,
    verify_certs: bool,
) -> list[str]:
    """What is inconsistent in one engine's credentials and TLS settings (`prefix`: OPENSEARCH or
    ELASTICSEARCH), in messages that name the variables and never their secret values."""
    problems = []
    if password is not None and username is None:
        problems.append(f"{prefix}_PASSWORD is set but {prefix}_USERNAME is not: set both")
    if username is not None and password is None:
        problems.append(f"{prefix}_USERNAME is set but {prefix}_PASSWORD is not: set both")
    if ca_certs is not None:
        if not verify_certs:
            problems.append(
                f"{prefix}_CA_CERTS is set but {prefix}_VERIFY_CERTS=false turns certificate checks off: "
                f"unset one of them"
            )
        if url is not None and urlsplit(url).scheme != "https":
            problems.append(f"{prefix}_CA_CERTS is set but {prefix}_URL is not https://: use https://")
        problem = ca_bundle_problem(ca_certs)
        if problem:
            problems.append(f"{prefix}_CA_CERTS={ca_certs}: {problem}")
    return problems


def ca_bundle_problem(path: Path) -> str | None:
    """Why `path` is not a usable PEM CA bundle, or None."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a folder, not a PEM file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if "-----BEGIN CERTIFICATE-----" not in text:
        return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    return None


def tls_description(ca_certs: Path | None, verify_certs: bool) -> str:
    if not verify_certs:
        return "certificates not verified"
    return f"verified against {ca_certs}" if ca_certs else "verified against the system CAs"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with a readable error instead of a pydantic traceback."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {settings_problems(exc)}") from exc

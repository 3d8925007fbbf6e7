"""The rerank subsystem's settings group: what a worker (and the client that dispatches to it) reads from
environment variables and an optional `.env` file. The connector's settings extend this group, so one set of
variable names configures both sides. Build it at an entry point and pass plain values down
(`hybrid_rerank.workers.factory`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hybrid_rerank.workers.errors import ConfigurationError

RerankBackendName = Literal["auto", "torch", "torch-bf16", "onnx", "onnx-int8"]
RerankKindName = Literal["auto", "cross-encoder", "llm", "remote"]
LlmPromptName = Literal["auto", "bge-gemma", "bge-layerwise", "qwen3"]
RemoteDialectName = Literal["tei", "cohere", "jina"]
# Shipped in the package (int8 ONNX, trained on SciFact): reranks offline. Production: a stronger model.
DEFAULT_RERANK_MODEL = "scifact-minilm-l6-reranker-int8"


class WorkerSettings(BaseSettings):
    """Environment variable names are the field names in upper case (e.g. `RERANK_MODEL`)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    redis_url: SecretStr | None = Field(None, description="Redis URL for Celery; unset -> rerank in-process")
    data_dir: Path = Path("data")

    # Cross-encoder. An empty RERANK_MODEL (or "none") turns reranking off.
    rerank_model: str | None = DEFAULT_RERANK_MODEL
    rerank_max_length: int = Field(
        128, ge=16, description="the knee of `bench tradeoff` for the shipped model"
    )
    rerank_batch_size: int = Field(16, gt=0, description="most pairs in one model call")
    rerank_token_budget: int = Field(
        8192, ge=16, description="pairs sorted by length are packed up to this many padded tokens per call"
    )
    rerank_device: str | None = None
    rerank_backend: RerankBackendName = "auto"
    rerank_interpolation: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="rerank weight mixed with the first stage; unset: the model's tuned one (in its reply)",
    )
    rerank_max_passages: int = Field(
        1, gt=0, description="above 1, long documents are split into passages and scored by the best one"
    )
    rerank_threads: int | None = Field(None, gt=0, description="torch threads per worker process")
    rerank_cutoff_layer: int | None = Field(
        None,
        ge=1,
        description="layerwise early exit: read the score after this many layers (models with per-layer "
        "heads, or ours trained with the layerwise objective); unset: all layers",
    )
    rerank_kind: RerankKindName = Field(
        "auto",
        description="scorer kind; auto: from the model's config.json (a sequence-classification head is a "
        "cross-encoder, a causal LM head an LLM yes/no reranker)",
    )
    rerank_llm_prompt: LlmPromptName = Field(
        "auto",
        description="LLM rerankers' prompt; auto: bge-gemma for Gemma, qwen3 for Qwen, bge-layerwise for "
        "MiniCPM",
    )
    rerank_llm_instruction: str | None = Field(
        None, description="the task instruction of the qwen3 prompt (<Instruct>); unset: the model card's"
    )
    # RERANK_KIND=remote: an HTTP rerank API; RERANK_MODEL then only names the workers' queue.
    rerank_remote_url: str | None = Field(None, description="base URL of a TEI, Cohere or Jina rerank API")
    rerank_remote_api_key: SecretStr | None = None
    rerank_remote_dialect: RemoteDialectName = "tei"
    rerank_remote_timeout_s: float = Field(10.0, gt=0)
    rerank_remote_retries: int = Field(2, ge=0)
    rerank_remote_max_batch: int = Field(96, gt=0, description="documents per request (the provider's limit)")
    rerank_remote_model: str | None = Field(
        None, description="the model name sent to the API, if it wants one"
    )
    rerank_languages: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="comma-separated ISO 639-1 codes the reranker reads (* = any); unset: its model card's",
    )

    # Celery dispatch (with REDIS_URL).
    rerank_deadline_ms: int = Field(3000, gt=0, description="past it, search returns the first-stage order")
    rerank_visibility_timeout_s: int = Field(600, gt=0, description="a task unacked this long is redelivered")
    rerank_result_ttl_s: int = Field(3600, gt=0)
    rerank_cache_ttl_s: int = Field(86400, ge=0, description="score cache in Redis; 0 turns it off")
    rerank_batch_window_ms: float = Field(
        0.0,
        ge=0.0,
        description="a worker holds a rerank this long to score it in one model call with concurrent ones "
        "for the same model (cross-request batching); 0: off",
    )
    rerank_task_candidates: int = Field(
        64, gt=0, description="most candidates in one Celery task; a larger request is split across tasks"
    )
    # Goodput under overload (`workers.admission`).
    rerank_skip_late: bool = Field(
        True, description="a worker skips a task that cannot end before its deadline (replies `deadline`)"
    )
    rerank_admission: bool = Field(
        True, description="refuse at once (`overloaded`) a live rerank the queue cannot answer in time"
    )
    rerank_admission_share: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="share of the deadline the expected queue wait and scoring may take to be admitted",
    )

    # Embedding on the workers (`workers.embedding`, `index --workers`). EMBED_MODEL is what a worker
    # serves on the model's embed queue; the indexing side asks for its EMBEDDING_MODEL's queue.
    embed_model: str | None = Field(
        None, description="bi-encoder this worker serves on its embed queue; unset: no embedding here"
    )
    embed_batch_size: int = Field(32, gt=0, description="texts per model call on an embedding worker")
    embed_device: str | None = None
    embed_threads: int | None = Field(None, gt=0, description="torch threads per embedding worker process")
    embed_task_texts: int = Field(64, gt=0, le=4096, description="texts the indexing side sends per task")
    embed_in_flight: int | None = Field(
        None, gt=0, description="tasks the indexing side keeps in flight; unset: 2 per embedding worker"
    )
    embed_task_timeout_s: float = Field(
        900.0, gt=0, description="a task with no reply this long is sent again (above the visibility timeout)"
    )
    embed_retries: int = Field(3, ge=0, description="times one batch is sent again before indexing stops")

    # Worker metrics (Prometheus), served by the worker's parent process; unset: off.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = Field("0.0.0.0", description="address the worker metrics port binds")

    # Never on by default: it runs Python code shipped with a model.
    trust_remote_code: bool = False

    @field_validator("rerank_model", "embed_model", mode="before")
    @classmethod
    def _empty_means_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in {"", "none", "off"}:
            return None
        return value

    @field_validator("rerank_languages", mode="before")
    @classmethod
    def _language_list(cls, value: object) -> object:
        return comma_list(value)

    @property
    def uses_celery(self) -> bool:
        return self.redis_url is not None


def comma_list(value: object) -> object:
    """A comma-separated environment value as a list; blank means unset (None)."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        return items or None
    return value


def load_worker_settings(**overrides: object) -> WorkerSettings:
    """Worker settings from the environment, with a readable error instead of a pydantic traceback."""
    try:
        return WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings: {settings_problems(exc)}") from exc


def settings_problems(exc: ValidationError) -> str:
    """`FIELD: message; ...`, named as the environment variables are."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}" for err in exc.errors()
    )

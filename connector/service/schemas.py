"""Request bodies, as the clients of each API family send them. Size limits come from the settings and are
checked by the routes (they name the field); these models check types and required fields."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

FilterJson = str | int | float | bool | list[str | int | float | bool] | dict[str, float | None]


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="the query text")
    k: int | None = Field(None, description="hits per page (default TOP_K)")
    page: int = Field(1, description="1-based page of k hits over the same recall window")
    rerank: bool = Field(True, description="false: the first-stage (fused) order only")
    deadline_ms: int | None = Field(
        None, description="rerank deadline for this query (default RERANK_DEADLINE_MS)"
    )
    filters: dict[str, FilterJson] = Field(
        default_factory=dict,
        description='field -> value, [any of values], or {"gte": lo, "lte": hi}',
    )
    filter_expressions: list[str] = Field(
        default_factory=list, description="the CLI's filter syntax: field=value, field=a,b, field=lo..hi"
    )
    include_first_stage: bool = Field(False, description="also return the page in first-stage order")


class TeiRerankBody(BaseModel):
    """text-embeddings-inference `POST /rerank`."""

    query: str
    texts: list[str]
    truncate: bool | None = (
        False  # accepted; texts are always cut to the model's window (TEI --auto-truncate)
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"
    raw_scores: bool = False  # false: sigmoid of the logit, as TEI
    return_text: bool = False


class CohereDocument(BaseModel):
    model_config = ConfigDict(extra="allow")  # Cohere v1 documents may carry other fields

    text: str


class CohereRerankBody(BaseModel):
    """Cohere `POST /v1/rerank` and `/v2/rerank`, which Jina's rerank API shares."""

    model: str | None = None  # any name is accepted: the service serves its one configured model
    query: str
    documents: list[str | CohereDocument]
    top_n: int | None = None
    return_documents: bool | None = None  # v1 and v2 default false (Cohere); Jina clients send it
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    max_tokens_per_doc: int | None = None


class RerankJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["rerank"]
    query: str
    documents: list[str]


class SearchJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["search"]
    queries: list[str]
    k: int | None = None
    rerank: bool = True
    filters: dict[str, FilterJson] = Field(default_factory=dict)


JobBody = Annotated[RerankJob | SearchJob, Body(discriminator="kind")]

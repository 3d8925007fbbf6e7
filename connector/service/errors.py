"""Errors as each API family writes them, decided in one place.

Our own routes answer `{"error": message, "field": name}`. The text-embeddings-inference route (`/rerank`)
answers TEI's `{"error", "error_type"}`; the Cohere/Jina routes (`/v1/rerank`, `/v2/rerank`) answer Cohere's
`{"message"}` with 400 for a bad request. Every body also names the field (extra keys break no client of
either). Nothing here ever answers a 500 for a bad request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

Dialect = Literal["ours", "tei", "cohere"]
JOB_KINDS = frozenset({"rerank", "search"})
TEI_ROUTES = frozenset({"/rerank"})
COHERE_ROUTES = frozenset({"/v1/rerank", "/v2/rerank"})
# TEI's ErrorType by status (its router: 400 Empty, 413 Validation, 422 Tokenizer, 424 Backend, 429
# Overloaded, 503 Unhealthy). Our 422s are validation errors, so they say Validation.
TEI_ERROR_TYPES = {
    400: "Empty",
    401: "Unauthorized",
    413: "Validation",
    422: "Validation",
    429: "Overloaded",
    503: "Unhealthy",
}


@dataclass
class ApiError(Exception):
    """A request the service refuses, or a stage it cannot serve: the status, a message a client can act
    on, and the request field at fault (None when no one field is)."""

    status: int
    message: str
    field: str | None = None
    headers: dict[str, str] | None = None

    def __str__(self) -> str:
        return self.message


def dialect_of(path: str) -> Dialect:
    if path in TEI_ROUTES:
        return "tei"
    if path in COHERE_ROUTES:
        return "cohere"
    return "ours"


def error_body(dialect: Dialect, status: int, message: str, field: str | None) -> dict[str, Any]:
    if dialect == "tei":
        return {"error": message, "error_type": TEI_ERROR_TYPES.get(status, "Backend"), "field": field}
    if dialect == "cohere":
        return {"message": message, "field": field}
    return {"error": message, "field": field}


def error_response(path: str, error: ApiError) -> JSONResponse:
    dialect = dialect_of(path)
    status = error.status
    if dialect == "cohere" and status == 422:
        status = 400  # Cohere answers every invalid request with 400
    return JSONResponse(error_body(dialect, status, error.message, error.field), status, error.headers)


def field_of(location: Sequence[int | str]) -> str:
    """`("body", "documents", 3, "text")` -> `documents[3].text`; the body itself -> `body`. pydantic puts
    a tagged body's tag (a job's kind) after "body": it is not a field the client wrote."""
    parts = list(location[1:] if location[:1] == ("body",) else location)
    if len(parts) > 1 and parts[0] in JOB_KINDS:
        parts = parts[1:]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def validation_error(exc: RequestValidationError) -> ApiError:
    """pydantic's first complaint as one message naming its field."""
    first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    field = field_of(first.get("loc", ("body",)))
    if first.get("type") == "json_invalid":
        context = first.get("ctx")
        detail = context.get("error", "") if isinstance(context, dict) else ""
        return ApiError(422, f"body: not valid JSON: {detail}", "body")
    if str(first.get("type", "")).startswith("union_tag"):  # a tagged body (jobs) with an unknown "kind"
        context = first.get("ctx")
        tag = str(context.get("discriminator", "kind")).strip("'") if isinstance(context, dict) else "kind"
        return ApiError(422, f"{tag}: {first.get('msg', 'unknown kind')}", tag)
    if first.get("type") == "missing":
        return ApiError(422, f"{field}: field required", field)
    return ApiError(422, f"{field}: {first.get('msg', 'invalid value')}", field)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request.url.path, validation_error(exc))

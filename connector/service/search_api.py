"""`POST /search` and search jobs as pure checks: the body against the limits, filters from JSON or the
CLI's expressions. Each refusal is an ApiError naming the field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hybrid_rerank.connector.backends.base import Filters, FilterValue, Range, parse_filter
from hybrid_rerank.connector.documents import Scalar
from hybrid_rerank.connector.service.errors import ApiError
from hybrid_rerank.connector.service.limits import ServiceLimits
from hybrid_rerank.connector.service.schemas import FilterJson, SearchBody


@dataclass(frozen=True)
class SearchCall:
    """What `SearchPipeline.search` is called with."""

    query: str
    k: int
    offset: int
    rerank: bool
    deadline_ms: int | None
    filters: Filters | None


def check_query(query: str, limits: ServiceLimits, field: str = "query") -> None:
    if not query.strip():
        raise ApiError(422, f"{field}: must not be empty", field)
    if len(query) > limits.max_query_chars:
        raise ApiError(
            422,
            f"{field}: {len(query):,} characters, over the limit of {limits.max_query_chars:,} "
            "(SERVICE_MAX_QUERY_CHARS)",
            field,
        )


def check_k(k: int | None, default_k: int, limits: ServiceLimits) -> int:
    size = default_k if k is None else k
    if not 1 <= size <= limits.max_k:
        raise ApiError(422, f"k: must be between 1 and {limits.max_k} (SERVICE_MAX_K), got {size}", "k")
    return size


def filter_value(name: str, raw: FilterJson) -> FilterValue:
    """A JSON filter: a value (equality), a list (any of) or `{"gte", "lte"}` (a numeric range)."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"gte", "lte"}
        if unknown or not raw:
            raise ApiError(
                422, f'filters.{name}: a range takes "gte" and/or "lte", got {sorted(raw)}', f"filters.{name}"
            )
        return Range(raw.get("gte"), raw.get("lte"))
    if isinstance(raw, list):
        if not raw:
            raise ApiError(422, f"filters.{name}: an empty list matches nothing", f"filters.{name}")
        values: list[Scalar] = list(raw)
        return values
    return raw


def parse_filters(filters: Mapping[str, FilterJson], expressions: Sequence[str]) -> Filters | None:
    parsed: dict[str, FilterValue] = {}
    for name, raw in filters.items():
        if not name.strip():
            raise ApiError(422, "filters: a field name is empty", "filters")
        parsed[name] = filter_value(name, raw)
    for position, expression in enumerate(expressions):
        try:
            name, value = parse_filter(expression)
        except ValueError as exc:
            raise ApiError(
                422, f"filter_expressions[{position}]: {exc}", f"filter_expressions[{position}]"
            ) from exc
        parsed[name] = value
    return parsed or None


def search_call(body: SearchBody, default_k: int, limits: ServiceLimits) -> SearchCall:
    check_query(body.query, limits)
    k = check_k(body.k, default_k, limits)
    if not 1 <= body.page <= limits.max_page:
        raise ApiError(
            422, f"page: must be between 1 and {limits.max_page} (SERVICE_MAX_PAGE), got {body.page}", "page"
        )
    if body.deadline_ms is not None and not 1 <= body.deadline_ms <= limits.max_deadline_ms:
        raise ApiError(
            422,
            f"deadline_ms: must be between 1 and {limits.max_deadline_ms}, got {body.deadline_ms}",
            "deadline_ms",
        )
    return SearchCall(
        body.query,
        k,
        (body.page - 1) * k,
        body.rerank,
        body.deadline_ms,
        parse_filters(body.filters, body.filter_expressions),
    )

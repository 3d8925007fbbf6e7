"""A reranker behind an HTTP endpoint, scored like a local cross-encoder: a text-embeddings-inference server
(`POST {base}/rerank`), Cohere (`POST {base}/v2/rerank`) or Jina (`POST {base}/v1/rerank`), this project's
own `hybrid-rerank serve` included, since it speaks all three.

Scores come back as logits in every dialect, as the local scorers give them: TEI is asked for raw scores,
and the 0..1 `relevance_score` of Cohere and Jina is mapped back through the logit function (monotone, so
the order is the provider's; z-scored interpolation then sees the same scale as a local model's).

Documents are sent `max_batch` per request (the provider's limit) and the scores merged back in input order.
A request is retried with exponential backoff on connection errors and timeouts, on 429 (after the server's
Retry-After when it gives one) and on 5xx, never on another 4xx: those would fail again. The API key goes
only into the Authorization header: never into a log, a repr or an error message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx

from hybrid_rerank.workers.errors import ConfigurationError, HybridRerankError, describe_exception
from hybrid_rerank.workers.protocol import Candidate
from hybrid_rerank.workers.scorer import ScoredCandidate

Dialect = Literal["tei", "cohere", "jina"]
DIALECTS: tuple[str, ...] = get_args(Dialect)
ENDPOINT_PATHS: dict[str, str] = {"tei": "/rerank", "cohere": "/v2/rerank", "jina": "/v1/rerank"}
# A relevance score of exactly 0 or 1 (Cohere rounds) has no finite logit: clamp it this far from the edge.
PROBABILITY_EPSILON = 1e-12
BODY_EXCERPT_CHARS = 300
log = logging.getLogger("hybrid_rerank.workers.remote")


class RemoteRerankError(HybridRerankError):
    """A remote rerank endpoint could not be reached, refused the request, or answered in another shape.
    `status` is the HTTP status (None when no answer came); the message names the URL, never the key."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


# --- pure parts: URLs, bodies, replies, batches, retry decisions -----------------------------------------


def endpoint_url(base_url: str, dialect: str) -> str:
    """Where the dialect posts: the base URL (scheme, host, optional path prefix) plus the rerank path."""
    if dialect not in ENDPOINT_PATHS:
        raise ConfigurationError(
            f"unknown remote rerank dialect {dialect!r}: use one of {', '.join(DIALECTS)}"
        )
    parts = urlsplit(base_url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(
            f"the remote reranker's base URL {redact_url(base_url)!r} is not an http(s) URL with a host and "
            "no query: "
            "set RERANK_REMOTE_URL to e.g. http://tei:8080 or https://api.cohere.com"
        )
    return base_url.strip().rstrip("/") + ENDPOINT_PATHS[dialect]


def redact_url(url: str) -> str:
    """The URL without user info and query string, which may carry credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:  # a malformed port: say nothing more than the scheme
        return url.split(":", 1)[0] + "://<malformed>"


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def request_body(dialect: str, query: str, texts: Sequence[str], model: str | None) -> dict[str, Any]:
    """The JSON body of one rerank request in the dialect's shape, asking for every document's score."""
    if dialect == "tei":
        return {"query": query, "texts": list(texts), "raw_scores": True, "truncate": True}
    body: dict[str, Any] = {"query": query, "documents": list(texts), "top_n": len(texts)}
    if model is not None:
        body["model"] = model
    if dialect == "jina":
        body["return_documents"] = False  # Jina's default is true: the texts would travel back for nothing
    return body


def logit(probability: float) -> float:
    p = min(max(probability, PROBABILITY_EPSILON), 1.0 - PROBABILITY_EPSILON)
    return math.log(p) - math.log1p(-p)


def scores_from_reply(dialect: str, payload: Any, count: int) -> list[float]:
    """Scores in the request's order from a reply (TEI: `[{index, score}]`; Cohere, Jina: `{results:
    [{index, relevance_score}]}`), each index once; raises ValueError naming what is wrong."""
    if dialect == "tei":
        items, field = payload, "score"
    else:
        items = payload.get("results") if isinstance(payload, Mapping) else None
        field = "relevance_score"
    if not isinstance(items, list):
        raise ValueError(f"expected {'a list' if dialect == 'tei' else 'an object with a results list'}")
    scores: list[float | None] = [None] * count
    for item in items:
        index = item.get("index") if isinstance(item, Mapping) else None
        value = item.get(field) if isinstance(item, Mapping) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise ValueError(f"a result with index {index!r}, not one of 0..{count - 1}")
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"result {index} has {field} {value!r}, not a finite number")
        if scores[index] is not None:
            raise ValueError(f"index {index} answered twice")
        scores[index] = float(value) if dialect == "tei" else logit(float(value))
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise ValueError(f"no score for {len(missing)} of {count} documents (first: index {missing[0]})")
    return [s for s in scores if s is not None]


def batch_ranges(count: int, max_batch: int) -> list[range]:
    """Consecutive slices of at most `max_batch` documents covering `count`, in order."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    return [range(start, min(start + max_batch, count)) for start in range(0, count, max_batch)]


def is_retryable(status: int | None) -> bool:
    """No answer (connection error, timeout), 429 and 5xx may pass; any other 4xx would fail again."""
    return status is None or status == 429 or status >= 500


def retry_after_s(header: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date); None if absent or unread."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_s(attempt: int, base_s: float, jitter: float) -> float:
    """Exponential backoff before retry `attempt` (1 for the first retry): base, 2 x base, 4 x base ...,
    scaled by 0.5-1.0 (`jitter` in [0, 1)) so that workers refused together do not return together."""
    return float(base_s * 2 ** (attempt - 1) * (0.5 + 0.5 * jitter))


# --- the scorer ------------------------------------------------------------------------------------------


class RemoteScorer:
    """The scorer interface of `CrossEncoderScorer` over an HTTP rerank endpoint. One connection pool per
    scorer, reused by every call; safe to share between threads (httpx.Client is)."""

    interpolation_weight: float | None = None  # a remote model carries no tuned weight: the setting's applies

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        dialect: Dialect = "tei",
        timeout_s: float = 10.0,
        retries: int = 2,
        max_batch: int = 32,
        model: str | None = None,
        *,
        name: str | None = None,
        backoff_base_s: float = 0.5,
        max_wait_s: float = 30.0,
    ) -> None:
        """`name` is the model name the workers serve under (their queue; default `model`, else the URL).
        A Retry-After longer than `max_wait_s` is not waited for: the call fails at once and says so."""
        self.url = endpoint_url(base_url, dialect)
        if timeout_s <= 0 or retries < 0 or max_batch < 1:
            raise ConfigurationError(
                f"remote reranker: timeout_s must be > 0 (got {timeout_s}), retries >= 0 (got {retries}), "
                f"max_batch >= 1 (got {max_batch})"
            )
        self.dialect = dialect
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_batch = max_batch
        self.model = model
        self.backoff_base_s = backoff_base_s
        self.max_wait_s = max_wait_s
        self.safe_url = redact_url(self.url)
        self.model_name = name or model or self.safe_url
        self._api_key = api_key or None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"RemoteScorer({self.safe_url!r}, dialect={self.dialect!r}, model={self.model!r}, api_key={key})"
        )

    @property
    def description(self) -> str:
        return f"remote {self.dialect} reranker at {self.safe_url} (model {self.model or 'default'})"

    @property
    def cache_key(self) -> str:
        """Everything that changes a score, for the score cache (never the key)."""
        return f"remote|{self.dialect}|{self.safe_url}|{self.model or ''}"

    def load(self) -> RemoteScorer:
        """Open the connection pool (idempotent); nothing is sent until the first score."""
        with self._lock:
            if self._client is None:
                headers = {"Accept": "application/json"}
                if self._api_key is not None:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._client = httpx.Client(headers=headers, timeout=self.timeout_s)
        return self

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def score(self, query: str, candidates: Sequence[Candidate]) -> list[ScoredCandidate]:
        """One score (a logit) per candidate, in the input order; higher is more relevant."""
        if not candidates:
            return []
        texts = [c.text for c in candidates]
        scores: list[float] = []
        for batch in batch_ranges(len(texts), self.max_batch):
            scores.extend(self._score_batch(query, texts[batch.start : batch.stop]))
        return [ScoredCandidate(c.id, s) for c, s in zip(candidates, scores, strict=True)]

    def _score_batch(self, query: str, texts: Sequence[str]) -> list[float]:
        payload = self._post(request_body(self.dialect, query, texts, self.model))
        try:
            return scores_from_reply(self.dialect, payload, len(texts))
        except ValueError as exc:
            raise RemoteRerankError(
                f"the remote reranker at {self.safe_url} answered in an unexpected shape for the "
                f"{self.dialect} dialect: {redact(str(exc), self._api_key)}; check RERANK_REMOTE_DIALECT",
                url=self.safe_url,
                status=200,
            ) from None

    def _post(self, body: dict[str, Any]) -> Any:
        """The reply's JSON, after up to `retries` retries; RemoteRerankError when none succeeded."""
        client = self.load()._client
        assert client is not None
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            wait_s: float | None = None
            try:
                reply = client.post(self.url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: no answer to read
                problem = redact(describe_exception(exc), self._api_key)
            else:
                if reply.is_success:
                    try:
                        return reply.json()
                    except ValueError:
                        status, problem = (
                            reply.status_code,
                            f"a body that is not JSON: {self._excerpt(reply)}",
                        )
                        raise self._failure(status, problem, attempt, retryable=False) from None
                status, problem = reply.status_code, self._excerpt(reply)
                if is_retryable(status):  # 429, and a 503 may say when to come back too
                    wait_s = retry_after_s(reply.headers.get("retry-after"))
            if not is_retryable(status) or attempt > self.retries:
                raise self._failure(status, problem, attempt, retryable=is_retryable(status))
            if wait_s is not None and wait_s > self.max_wait_s:
                raise self._failure(status, f"{problem} (asked to retry after {wait_s:.0f} s)", attempt, True)
            delay = wait_s if wait_s is not None else backoff_s(attempt, self.backoff_base_s, random.random())
            log.warning(
                "remote reranker %s: %s; retry %d of %d in %.2f s",
                self.safe_url,
                f"HTTP {status}" if status is not None else problem,
                attempt,
                self.retries,
                delay,
            )
            time.sleep(delay)

    def _excerpt(self, reply: httpx.Response) -> str:
        text = " ".join(reply.text.split())
        text = text[:BODY_EXCERPT_CHARS] + ("..." if len(text) > BODY_EXCERPT_CHARS else "")
        return redact(text, self._api_key) or "(empty body)"

    def _failure(self, status: int | None, problem: str, attempts: int, retryable: bool) -> RemoteRerankError:
        tries = f"after {attempts} attempt{'s' if attempts > 1 else ''}" if retryable else "(not retried)"
        if status is None:
            message = (
                f"could not reach the remote reranker at {self.safe_url} {tries}: {problem}; check "
                "RERANK_REMOTE_URL and that the server is up"
            )
        else:
            message = f"the remote reranker at {self.safe_url} answered HTTP {status} {tries}: {problem}"
            hint = _HINTS.get(status)
            if hint is not None:
                message += f"; {hint}"
        return RemoteRerankError(message, url=self.safe_url, status=status)


_HINTS = {
    401: "check RERANK_REMOTE_API_KEY",
    403: "check RERANK_REMOTE_API_KEY and that it may use this model",
    404: "check RERANK_REMOTE_URL (the base, without the rerank path) and RERANK_REMOTE_DIALECT",
    405: "check RERANK_REMOTE_DIALECT (tei posts to /rerank, jina to /v1/rerank, cohere to /v2/rerank)",
    413: "lower RERANK_REMOTE_MAX_BATCH to the provider's limit",
    422: "check RERANK_REMOTE_MODEL and RERANK_REMOTE_MAX_BATCH against the provider's limits",
}

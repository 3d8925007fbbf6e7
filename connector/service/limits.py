"""What one request may ask of the service, and the checks that answer a 4xx naming the field.

The body-size limit is an ASGI middleware: it refuses a declared Content-Length at once and counts a chunked
body as it arrives, so an oversized request is never read into memory whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hybrid_rerank.connector.service.errors import dialect_of, error_body


@dataclass(frozen=True)
class ServiceLimits:
    max_body_bytes: int = 4_000_000
    max_query_chars: int = 2_000
    max_documents: int = 1_000
    max_document_chars: int = 100_000
    max_k: int = 100
    max_page: int = 100
    max_job_queries: int = 10_000
    max_deadline_ms: int = 60_000


class BodySizeLimit:
    """Refuses a request body over `max_bytes` with a 413 in the route's error dialect."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            # Past the limit: answer 413 now and tell the app the client left, so it stops reading (an
            # exception here would become FastAPI's generic 400 "error parsing the body").
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the app's own answer to a refused request is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"the request body is over the limit of {self.max_bytes:,} bytes (SERVICE_MAX_BODY_BYTES)"
        body = json.dumps(error_body(dialect_of(scope.get("path", "")), 413, message, "body")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

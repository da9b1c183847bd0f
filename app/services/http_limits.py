"""Limits on what reaches the console over HTTP (issue 17, findings 1, 8 and 11), as one ASGI
middleware in front of Gradio:

- a request body over :data:`MAX_BODY_BYTES` is refused (413) before it is read to the end;
- file uploads (``/gradio_api/upload``) are refused (403): no feature of the console needs one
  (batch runs read server-side files under the data folder), so nothing lands in Gradio's temp
  folder where another user could fetch it;
- a JSON body nested deeper than the parser's stack (``[[[[...``) is refused (400) instead of
  ending in a RecursionError and a traceback;
- the login page served to anonymous visitors carries no API description (Gradio embeds it in
  ``/``'s HTML for everyone; ``/config`` and ``/gradio_api/info`` already answer 401).

Refusals answer JSON ``{"error": "<field>: <problem>"}`` naming the field at fault.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("policyops.requests")  # one line per refused request (app.ui.errors)
MAX_BODY_BYTES = 2_000_000  # a case or a corrected answer is a few kB; 2 MB: any field refused by name
MAX_UPLOAD_BYTES = "1mb"  # Gradio's own max_file_size, a second fence should uploads ever be enabled
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)
_NO_API_INFO = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'


async def _answer(send: Send, status: int, field: str, problem: str, scope: Scope | None = None) -> None:
    """Answer ``status`` with ``{"error": "<field>: <problem>"}``; the refusal is one line in the log."""
    # the path as repr: a client's "%0a" must not start a forged log line
    where = f" {scope.get('method', '')} {str(scope.get('path', ''))[:200]!r}" if scope is not None else ""
    log.info("request refused at the door (%d)%s: %s: %s", status, where, field, problem)
    body = json.dumps({"error": f"{field}: {problem}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_deep(body: bytes) -> bool:
    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:  # not JSON: the route answers that itself (422)
        return False
    return False


class RequestLimits:
    """The ASGI middleware; ``launch(app_kwargs={"middleware": [Middleware(RequestLimits)]})``."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body_bytes: int = MAX_BODY_BYTES,
                 uploads: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method == "GET" and path.rstrip("/") == scope.get("root_path", "").rstrip("/"):
            return await self.app(scope, receive, _login_page_without_api(send))
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if path.rstrip("/").endswith("/upload") and not self.uploads:
            return await _answer(send, 403, "file", "uploads are off: no feature of this console needs one",
                                 scope)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await _answer(send, 413, "body", f"at most {self.max_body_bytes} bytes", scope)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _answer(send, 413, "body", f"at most {self.max_body_bytes} bytes", scope)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body[:1] in (b"{", b"[") and _too_deep(body):
            return await _answer(send, 400, "data", "nested too deeply", scope)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _login_page_without_api(send: Send) -> Send:
    """A ``send`` that strips the API description from the page Gradio serves to anonymous visitors
    (its config then says ``"auth_required":true``); a logged-in user's page passes unchanged."""
    start: Message | None = None
    parts: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            return await send(message)
        parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(parts)
        if b'"auth_required":true' in body:
            body = _API_INFO.sub(lambda _: _NO_API_INFO, body)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped

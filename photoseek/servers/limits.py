"""Request bodies bounded before anything reads them: a declared Content-Length over the limit is
answered 413 at once, and a body that streams past it (chunked, or lying about its length) is cut off
as it arrives, before a multipart parser spools it to disk or a JSON parser holds it in memory. A body
that trickles in (no chunk for BODY_GAP_SECONDS, or under MIN_BODY_RATE once BODY_GRACE_SECONDS have
passed: one byte every few seconds would hold a worker for hours) is cut too, answered 408."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
BODY_GAP_SECONDS = 10.0
BODY_GRACE_SECONDS = 10.0
MIN_BODY_RATE = 1024  # bytes a second, on average, once the grace has passed


class BodyLimit:
    """ASGI middleware: `limit_for(path)` bytes at most per request body (0: no body allowed)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                await _answer(send, 400, "Content-Length is not a number")
                return
            if too_large:
                await _answer(send, 413, f"request body larger than {_size(limit)}")
                return
        received = 0
        exceeded = too_slow = body_done = started = False
        loop = asyncio.get_running_loop()
        opened = loop.time()

        async def counted_receive() -> Message:
            nonlocal received, exceeded, too_slow, body_done
            if exceeded or too_slow:
                return {"type": "http.disconnect"}
            if body_done:  # the app waits for a disconnect: no clock on that
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), BODY_GAP_SECONDS)
            except asyncio.TimeoutError:
                too_slow = True
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                elapsed = loop.time() - opened
                if received > limit:
                    exceeded = True  # the app sees a client that went away; the client gets 413
                    return {"type": "http.disconnect"}
                if not body_done and elapsed > BODY_GRACE_SECONDS and received < MIN_BODY_RATE * elapsed:
                    too_slow = True
                    return {"type": "http.disconnect"}
            return message

        def refusal() -> tuple[int, str]:
            if exceeded:
                return 413, f"request body larger than {_size(limit)}"
            return 408, f"request body too slow (under {MIN_BODY_RATE} bytes a second, or {BODY_GAP_SECONDS:.0f} s without any)"

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded or too_slow:
                if not started:
                    started = True
                    await _answer(send, *refusal())
                return  # whatever the app says after the cut is not sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not (exceeded or too_slow):
                raise
        if (exceeded or too_slow) and not started:
            await _answer(send, *refusal())


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

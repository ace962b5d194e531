"""What every response of `redline serve` goes through: GET/HEAD only, the bearer token,
and the security headers (a Content-Security-Policy that allows no script at all).

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a task per
request) so the guard is cheap enough to sit in front of every page, feed and API call.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ALLOWED_METHODS = ("GET", "HEAD")

# No script source at all: statement bodies are escaped, and even if an escaping bug let a
# <script> or an onerror= through, the browser would refuse to run it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


def bearer_token_matches(authorization: bytes | None, token: str) -> bool:
    """True when an Authorization header carries exactly `Bearer <token>` (constant time)."""
    if not authorization:
        return False
    scheme, _, given = authorization.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token.encode())


class Guard:
    """Refuses other methods (405) and requests without the token (401); adds the headers."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", [])
                           if h[0].lower() not in _SECURITY_NAMES]
                headers.extend(SECURITY_HEADERS)
                if self.token:
                    # a response someone needed a token for must not sit in a shared cache
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                    headers.append((b"cache-control", b"private, no-store"))
                message["headers"] = headers
            await send(message)

        if scope["method"] not in ALLOWED_METHODS:
            await _plain(send_with_headers, 405, b"405 Method Not Allowed: redline serve is "
                         b"read-only (GET and HEAD only)\n", [(b"allow", b"GET, HEAD")])
            return
        if self.token is not None:
            auth = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
            if not bearer_token_matches(auth, self.token):
                await _plain(send_with_headers, 401, b"401 Unauthorized: send the header "
                             b"'Authorization: Bearer <token>'\n",
                             [(b"www-authenticate", b'Bearer realm="redline"')])
                return
        await self.app(scope, receive, send_with_headers)


_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


async def _plain(send: Send, status: int, body: bytes,
                 extra: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]})
    await send({"type": "http.response.body", "body": body})

"""Webhook channel: POST the JSON body with the SPEC §7 headers, signed when a secret is set."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import httpx

from daemon import __version__
from daemon.config import ChannelConfig
from daemon.notify.channels import DeliveryFailed, Message


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The exact bytes that are sent and signed."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(secret: str, raw_body: bytes) -> str:
    """The X-Redline-Signature-256 value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def request_headers(message: Message, raw_body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"redline/{__version__}",
        "X-Redline-Event": message.kind,
        "X-Redline-Delivery": message.delivery_id,
    }
    if secret:
        headers["X-Redline-Signature-256"] = signature(secret, raw_body)
    return headers


class WebhookSender:
    """POSTs to one URL over a kept-alive connection; 2xx is success, 410 Gone is final."""

    def __init__(self, channel: ChannelConfig) -> None:
        self.url = str(channel.options["url"])
        self.secret = channel.secrets.get("secret")
        self.client = httpx.Client(timeout=channel.timeout_seconds, follow_redirects=False)

    def send(self, message: Message) -> None:
        raw = encode_body(message.body)
        try:
            response = self.client.post(self.url, content=raw,
                                        headers=request_headers(message, raw, self.secret))
        except httpx.TimeoutException as exc:
            raise DeliveryFailed(f"timed out ({type(exc).__name__})", timed_out=True) from None
        except httpx.TransportError as exc:
            raise DeliveryFailed(f"cannot reach the receiver: {exc or type(exc).__name__}"
                                 ) from None
        if 200 <= response.status_code < 300:
            return
        reason = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        detail = " ".join(response.text[:200].split())
        retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                       if response.status_code in (429, 503) else None)
        if retry_after is not None:
            reason += f" (Retry-After: {retry_after:g} s)"
        raise DeliveryFailed(f"{reason}: {detail}" if detail else reason,
                             permanent=response.status_code == 410, retry_after=retry_after)

    def close(self) -> None:
        self.client.close()


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110 10.2.3);
    None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())

"""Apprise channel: any Apprise URL (chat, push, …) via the optional `apprise` extra."""

from __future__ import annotations

import inspect
from typing import Any

from daemon.config import ChannelConfig
from daemon.notify import render
from daemon.notify.channels import DeliveryFailed, Message

# Apprise takes at most this many characters of body; longer text is cut, with a note.
BODY_LIMIT_CHARS = 30_000


def apprise_urls(channel: ChannelConfig) -> list[str]:
    """The channel's URLs: `urls` from the file plus the space-separated `urls_env` value."""
    urls = list(channel.options.get("urls", ()))
    urls += channel.secrets.get("urls", "").split()
    return urls


class AppriseSender:
    """Sends the plain-text rendering; every URL must accept it."""

    def __init__(self, channel: ChannelConfig) -> None:
        self.channel = channel
        self.urls = apprise_urls(channel)
        self._apprise: Any = None

    def _client(self) -> Any:
        if self._apprise is None:
            try:
                import apprise
            except ModuleNotFoundError:
                raise DeliveryFailed("the apprise extra is not installed: "
                                     "pip install 'redline[apprise]'", permanent=True) from None
            client = apprise.Apprise()
            for url in self.urls:
                if not client.add(url):
                    # never echo the URL: it usually carries a token
                    raise DeliveryFailed(f"channel {self.channel.name}: an Apprise URL is not "
                                         "valid (check urls / urls_env)", permanent=True)
            self._apprise = client
        return self._apprise

    def send(self, message: Message) -> None:
        client = self._client()
        body = render.text(message)
        if len(body) > BODY_LIMIT_CHARS:
            body = body[:BODY_LIMIT_CHARS] + f"\n[cut at {BODY_LIMIT_CHARS:,} characters]\n"
        kwargs: dict[str, Any] = {"body": body, "title": render.subject(message)}
        if "timeout" in inspect.signature(client.notify).parameters:
            kwargs["timeout"] = self.channel.timeout_seconds
        result = client.notify(**kwargs)
        if not result:
            raise DeliveryFailed(f"Apprise could not notify: {_reason(result)}")

    def close(self) -> None:
        pass


def _reason(result: Any) -> str:
    """The failure as Apprise >= 2 reports it, without the URLs (they carry tokens)."""
    status = getattr(result, "status", None)
    logs = getattr(result, "logs", None)
    messages: list[str] = []
    if callable(logs):
        try:
            messages = [str(getattr(e, "message", e)) for e in logs()]
        except Exception:  # noqa: BLE001 - diagnostics only
            messages = []
    detail = "; ".join(m for m in messages[-3:] if m)
    name = getattr(status, "name", None) or "failed"
    return f"{name.lower()}{': ' + detail if detail else ''}"

"""What every channel shares: the message handed to it, its one failure type, and the table
from a channel `type` to the code that sends.

A sender is built once per channel and used by one thread at a time. `send` returns when
the receiver has the message and raises `DeliveryFailed` otherwise; it never touches the
database (the dispatcher records the outcome).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.config import ChannelConfig
from daemon.errors import RedlineError

# uuid5 namespace of delivery ids (X-Redline-Delivery, the email Message-ID).
DELIVERY_NAMESPACE = uuid.UUID("6f1d3c52-8a57-4a59-9c43-55d6a1b5e0a7")


@dataclass(frozen=True)
class Message:
    """One thing to send: an event body, a digest, or a test message.

    `kind` is the event kind, "digest" or "test"; `delivery_id` is stable across retries.
    """

    kind: str
    delivery_id: str
    body: Mapping[str, Any] = field(repr=False)


class DeliveryFailed(RedlineError):
    """A receiver did not take a message.

    `permanent`: retrying cannot help (HTTP 410 Gone), the delivery goes dead at once.
    `timed_out`: the receiver did not answer in time; the dispatcher pauses the channel
    until the retry instead of waiting out the timeout on each of its next deliveries.
    `abandoned`: the send was still running when its time was up (see `send_within`); its
    sender is still busy and must be closed, not used again.
    `retry_after`: seconds the receiver asked to be left alone (HTTP 429 or 503 with
    Retry-After): no retry, and nothing else of the channel, comes before then.
    """

    def __init__(self, message: str, *, permanent: bool = False,
                 timed_out: bool = False, abandoned: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.timed_out = timed_out or abandoned
        self.abandoned = abandoned
        self.retry_after = retry_after


class Sender(Protocol):
    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


def send_within(sender: Sender, message: Message, seconds: float) -> None:
    """`sender.send(message)`, given up after `seconds` (the channel's timeout_seconds).

    The libraries' own timeouts bound one read or one write, not the attempt: a receiver
    that trickles its answer a byte at a time, or an SMTP server or file system that
    stalls between steps, would hold a channel for ever. The send runs on a daemon thread
    (never keeping the process alive); when the time is up it is abandoned with
    DeliveryFailed(abandoned=True), and the caller closes that sender and builds another.
    """
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def run() -> None:
        try:
            sender.send(message)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="redline-send").start()
    if not done.wait(seconds):
        raise DeliveryFailed(f"timed out: no complete answer within {seconds:g} s "
                             "(timeout_seconds)", abandoned=True)
    if outcome[0] is not None:
        raise outcome[0]


SenderFactory = Callable[[ChannelConfig], Sender]
_FACTORIES: dict[str, SenderFactory] = {}


def register_sender(channel_type: str, factory: SenderFactory) -> None:
    """Make `type = channel_type` channels deliverable (one line per channel module)."""
    _FACTORIES[channel_type] = factory


def make_sender(channel: ChannelConfig) -> Sender:
    """The sender of one configured channel (ConfigError if a secret it needs is not set:
    never a webhook sent unsigned, or a login left out, for want of a variable)."""
    channel.require_secrets()
    _load_builtin()
    try:
        factory = _FACTORIES[channel.type]
    except KeyError:
        raise DeliveryFailed(f"channel {channel.name}: type {channel.type!r} cannot deliver "
                             "notifications yet") from None
    return factory(channel)


def can_send(channel_type: str) -> bool:
    """Whether channels of this type have a sender (pg_notify has none: it is sent inside
    the event's transaction, see daemon.notify.outbox)."""
    _load_builtin()
    return channel_type in _FACTORIES


def delivery_uuid(delivery_row_id: int, created_at: str) -> str:
    """The X-Redline-Delivery id of a deliveries row: stable across retries and re-queues,
    and unlikely to repeat across databases (the row's creation time is part of it)."""
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"delivery:{delivery_row_id}:{created_at}"))


def _load_builtin() -> None:
    # imported late: the channel modules import this one
    from daemon.notify import apprise, email, jsonl, webhook

    for name, factory in (("webhook", webhook.WebhookSender), ("email", email.EmailSender),
                          ("jsonl", jsonl.JsonlSender), ("apprise", apprise.AppriseSender)):
        _FACTORIES.setdefault(name, factory)

"""DeliveryOutbox: one delivery row per matching channel, in the event's own transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.config import ChannelConfig
from daemon.store.records import EventRecord
from daemon.store.schema import deliveries


def channel_wants(channel: ChannelConfig, kind: str, changed_fields: Sequence[str]) -> bool:
    """A channel takes an event of one of its kinds, unless it is a metadata change of
    only ignored fields."""
    if kind not in channel.kinds:
        return False
    if kind == "metadata" and changed_fields and all(
            f in channel.ignore_fields for f in changed_fields):
        return False
    return True


class DeliveryOutbox:
    """Writes the outbox rows of an event; nothing about delivery lives only in memory."""

    def __init__(self, channels: Sequence[ChannelConfig]) -> None:
        # pg_notify is sent inside the event's own transaction (PostgreSQL delivers it on
        # commit, never before, never for a rolled-back event), so it needs no outbox row.
        self.channels = tuple(ch for ch in channels if ch.type != "pg_notify")
        self.pg_notify = tuple(ch for ch in channels if ch.type == "pg_notify")

    def enqueue(self, conn: Connection, event: EventRecord, now: dt.datetime) -> int:
        return self.enqueue_many(conn, [event], now)

    def enqueue_many(self, conn: Connection, events: Sequence[EventRecord], now: dt.datetime
                     ) -> int:
        """Write the delivery rows of these events with one executemany."""
        rows = [
            dict(event_id=event.event_id, channel=ch.name, mode=ch.mode, status="pending",
                 attempts=0, next_attempt_at=now, created_at=now)
            for event in events
            for ch in self.channels
            if channel_wants(ch, event.kind, event.changed_fields)
        ]
        if rows:
            conn.execute(deliveries.insert(), rows)
        notify = [{"id": str(event.event_id)} for event in events
                  if any(channel_wants(ch, event.kind, event.changed_fields)
                         for ch in self.pg_notify)]
        if notify and conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_notify('redline_events', :id)"), notify)
        return len(rows)

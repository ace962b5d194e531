"""The reads and writes of the `deliveries` table: claim, record an outcome, re-queue, list.

Each function runs on the caller's connection inside the caller's (short) transaction;
no transaction is ever held open while a receiver is being called.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.config import ChannelConfig
from daemon.notify.channels import delivery_uuid
from daemon.store.schema import deliveries, events, revisions

DUE_STATUSES = ("pending", "failed")
STATUSES = ("pending", "delivered", "failed", "dead")


@dataclass(frozen=True)
class ClaimedDelivery:
    """A deliveries row this instance holds until `claimed_until`."""

    id: int
    event_id: int
    attempts: int
    created_at: dt.datetime

    @property
    def delivery_id(self) -> str:
        return delivery_uuid(self.id, self.created_at.isoformat())


def backoff_delay(channel: ChannelConfig, attempts: int,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number `attempts` (>= 1): backoff_seconds doubled per attempt,
    capped at backoff_max_seconds, then jittered down by up to a quarter so instances that
    failed together do not retry together."""
    exponent = min(max(attempts - 1, 0), 62)
    delay = min(channel.backoff_max_seconds, channel.backoff_seconds * 2.0 ** exponent)
    return delay * (1.0 - 0.25 * rand())


def retry_delay(channel: ChannelConfig, attempts: int, retry_after: float | None = None,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number `attempts`: the backoff, or longer when the receiver
    asked for longer (Retry-After), up to backoff_max_seconds."""
    delay = backoff_delay(channel, attempts, rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, channel.backoff_max_seconds))
    return delay


def claim(conn: Connection, channel: str, instance: str, now: dt.datetime,
          lease: dt.timedelta, limit: int) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries of one channel for this instance.

    On PostgreSQL rows being claimed by another instance are skipped (SKIP LOCKED); a claim
    expires at `claimed_until`, so the rows of an instance that died are taken over.
    """
    query = (
        sa.select(deliveries.c.id, deliveries.c.event_id, deliveries.c.attempts,
                  deliveries.c.created_at)
        .where(deliveries.c.channel == channel,
               deliveries.c.status.in_(DUE_STATUSES),
               deliveries.c.next_attempt_at <= now,
               sa.or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < now))
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if not rows:
        return []
    conn.execute(deliveries.update().where(deliveries.c.id.in_([r.id for r in rows]))
                 .values(claimed_by=instance, claimed_until=now + lease))
    return [ClaimedDelivery(r.id, r.event_id, r.attempts, r.created_at) for r in rows]


def next_retry_at(conn: Connection, channel: str, now: dt.datetime) -> dt.datetime | None:
    """The earliest `next_attempt_at` after `now` among the channel's deliveries still due
    (a failed attempt's retry time); None when there is none."""
    return conn.execute(sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
        deliveries.c.channel == channel, deliveries.c.status.in_(DUE_STATUSES),
        deliveries.c.next_attempt_at > now)).scalar()  # type: ignore[no-any-return]


def record_delivered(conn: Connection, ids: Sequence[int], now: dt.datetime,
                     instance: str | None = None) -> int:
    """Mark deliveries delivered (one more attempt each) and drop their claim."""
    if not ids:
        return 0
    where = [deliveries.c.id.in_(list(ids)), deliveries.c.status != "delivered"]
    if instance is not None:
        where.append(deliveries.c.claimed_by == instance)
    return conn.execute(deliveries.update().where(*where).values(
        status="delivered", attempts=deliveries.c.attempts + 1, delivered_at=now,
        last_error=None, next_attempt_at=None, claimed_by=None, claimed_until=None)).rowcount


def record_failed(conn: Connection, delivery_id: int, attempts: int, error: str,
                  next_attempt_at: dt.datetime | None, instance: str | None = None) -> int:
    """Record a failed attempt: `failed` with a retry time, or `dead` when there is none."""
    where = [deliveries.c.id == delivery_id, deliveries.c.status != "delivered"]
    if instance is not None:
        where.append(deliveries.c.claimed_by == instance)
    return conn.execute(deliveries.update().where(*where).values(
        status="dead" if next_attempt_at is None else "failed", attempts=attempts,
        last_error=error[:2000], next_attempt_at=next_attempt_at, claimed_by=None,
        claimed_until=None)).rowcount


def release(conn: Connection, ids: Sequence[int], instance: str) -> None:
    """Give back claimed deliveries that were not attempted."""
    if ids:
        conn.execute(deliveries.update().where(
            deliveries.c.id.in_(list(ids)), deliveries.c.claimed_by == instance
        ).values(claimed_by=None, claimed_until=None))


def release_instances(conn: Connection, instances: Sequence[str]) -> int:
    """Drop every claim held by these (dead) instances."""
    if not instances:
        return 0
    return conn.execute(deliveries.update().where(
        deliveries.c.claimed_by.in_(list(instances))
    ).values(claimed_by=None, claimed_until=None)).rowcount


def claimants(conn: Connection) -> list[str]:
    """The instances holding claims now. Only rows waiting to be sent hold claims (every
    outcome clears them), and the status index finds those among all ever delivered: the
    dispatcher asks every DEAD_CLAIMS_EVERY."""
    return list(conn.execute(sa.select(deliveries.c.claimed_by).distinct().where(
        deliveries.c.status.in_(("pending", "failed")),
        deliveries.c.claimed_by.is_not(None))).scalars())


def requeue(conn: Connection, now: dt.datetime, status: str = "dead",
            channel: str | None = None) -> int:
    """Make dead (or failed) deliveries due now, their attempts counted afresh."""
    where = [deliveries.c.status == status]
    if channel:
        where.append(deliveries.c.channel == channel)
    return conn.execute(deliveries.update().where(*where).values(
        status="pending", attempts=0, next_attempt_at=now, claimed_by=None,
        claimed_until=None)).rowcount


def list_deliveries(conn: Connection, status: str | None = None, channel: str | None = None,
                    limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Newest first (`offset` of them skipped): the delivery_status columns plus the event's
    kind and URL."""
    query = (
        sa.select(deliveries.c.event_id, deliveries.c.channel, deliveries.c.status,
                  deliveries.c.attempts, deliveries.c.last_error,
                  deliveries.c.next_attempt_at, deliveries.c.delivered_at,
                  events.c.kind, revisions.c.source_url)
        .select_from(deliveries.join(events, events.c.id == deliveries.c.event_id)
                     .join(revisions, revisions.c.id == events.c.revision_id))
        .order_by(deliveries.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if status:
        query = query.where(deliveries.c.status == status)
    if channel:
        query = query.where(deliveries.c.channel == channel)
    return [dict(r) for r in conn.execute(query).mappings()]


def status_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """channel -> status -> number of deliveries."""
    out: dict[str, dict[str, int]] = {}
    for ch, st, n in conn.execute(
            sa.select(deliveries.c.channel, deliveries.c.status, sa.func.count())
            .group_by(deliveries.c.channel, deliveries.c.status)):
        out.setdefault(ch, {})[st] = n
    return out

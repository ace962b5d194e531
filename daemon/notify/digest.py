"""Digests: one message per `digest_cron` period listing the events a digest channel is owed.

The watermark (the end of the last period digested) lives in `job_state`, row
`digest:<channel>`, and moves in the same transaction that marks the period's deliveries
delivered: a restart neither repeats nor skips a period. A period's digest holds the
channel's undelivered events that occurred before the period's end (so a delivery
re-queued with `redline deliveries --retry` rides along with the next digest). Periods
without events send nothing. On PostgreSQL one instance at a time digests a channel
(a session advisory lock, held while sending, outside any transaction).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.engine import Connection, Engine

from daemon.config import ChannelConfig, Config
from daemon.notify import ledger
from daemon.notify.channels import (
    DELIVERY_NAMESPACE,
    DeliveryFailed,
    Message,
    can_send,
    make_sender,
    send_within,
)
from daemon.notify.payload import event_bodies
from daemon.query import iso
from daemon.store.schema import deliveries, events, job_state

log = structlog.get_logger(__name__)

# A digest lists at most this many events in full; the rest are counted and named in a note.
DIGEST_MAX_EVENTS = 500
# Diffs inside a digest are cut shorter than in single notifications.
DIGEST_DIFF_LIMIT_CHARS = 10_000
_MAX_PERIODS_PER_RUN = 1000
_LOOKBACKS = tuple(dt.timedelta(days=d) for d in (1 / 24, 1, 8, 32, 367, 4 * 366))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DigestSchedule:
    """The period boundaries of `digest_cron` in `timezone` (pure; APScheduler's trigger).

    Pass the daemon's own `trigger` so the digest periods and the digest job agree on how
    the crontab is read (APScheduler's from_crontab counts weekdays from Monday = 0).
    """

    def __init__(self, cron: str, timezone: str, trigger: CronTrigger | None = None) -> None:
        self.trigger = trigger or CronTrigger.from_crontab(cron, timezone=ZoneInfo(timezone))
        # a time of day named by its hour (`30 1 * * *`) comes once a day, as crontab(5)
        # runs it: not again in the hour that repeats when the clocks go back. An hour
        # field starting with `*` (`30 * * * *`, `*/2`) follows real time instead.
        hour = next(f for f in self.trigger.fields if f.name == "hour")
        self._once_a_day = not str(hour).startswith("*")

    def _fire_at_or_after(self, t: dt.datetime) -> dt.datetime | None:
        """The trigger's first time at or after `t`, in UTC, passing over the second
        occurrence of a repeated wall-clock time where the schedule names its hour."""
        while (found := self.trigger.get_next_fire_time(None, t)) is not None:
            found = found.astimezone(dt.UTC)
            if not (self._once_a_day and _repeated_wall_time(found, self.trigger.timezone)):
                return found
            t = found + dt.timedelta(microseconds=1)
        return None

    def next_after(self, t: dt.datetime) -> dt.datetime | None:
        """The first boundary strictly after `t`."""
        return self._fire_at_or_after(t + dt.timedelta(microseconds=1))

    def last_at_or_before(self, t: dt.datetime) -> dt.datetime | None:
        """The latest boundary at or before `t` (None if none in the last four years)."""
        for back in _LOOKBACKS:
            found = self._fire_at_or_after(t - back)
            if found is None or found > t:
                continue
            best = found
            while (nxt := self.next_after(best)) is not None and nxt <= t:
                best = nxt
            return best
        return None


def _repeated_wall_time(t: dt.datetime, zone: dt.tzinfo) -> bool:
    """Whether `t` is the second time its zone's clocks show its wall time (the hour that
    repeats when they go back)."""
    local = t.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


class DigestRunner:
    """Sends the due digests of every digest-mode channel."""

    def __init__(self, engine: Engine, config: Config,
                 clock: Callable[[], dt.datetime] = utcnow, *,
                 rand: Callable[[], float] = random.random,
                 trigger: CronTrigger | None = None) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.rand = rand
        self.schedule = DigestSchedule(config.schedule.digest_cron, config.schedule.timezone,
                                       trigger)
        self.channels = [c for c in config.channels if c.mode == "digest" and can_send(c.type)]
        # channel -> the last digest's error, while its digests fail: STATUS= says so
        self._failing: dict[str, str] = {}

    def run_due(self) -> int:
        """Send every digest whose period has ended; return how many were sent. Cheap when
        nothing is due, so it may be called often (a failed digest is retried with the
        channel's backoff)."""
        sent = 0
        for ch in self.channels:
            try:
                with self._exclusive(ch) as mine:
                    if mine:
                        sent += self._run_channel(ch)
            except Exception:  # noqa: BLE001 - one channel's trouble must not stop the others
                log.exception("digest_error", channel=ch.name)
        return sent

    def failing(self) -> dict[str, str]:
        """The digest channels whose last digest failed, each with how (for STATUS=)."""
        return dict(self._failing)

    def next_retry_at(self) -> dt.datetime | None:
        """When the earliest failed digest of these channels is due again (its retry_at in
        job_state); None when no digest waits for a retry. The digest job runs then."""
        if not self.channels:
            return None
        names = [_state_name(c.name) for c in self.channels]
        with self.engine.connect() as conn:
            values = conn.execute(sa.select(job_state.c.value).where(
                job_state.c.name.in_(names))).scalars().all()
        return min((_parse(v["retry_at"]) for v in values if v and v.get("retry_at")),
                   default=None)

    # ---- one channel --------------------------------------------------------------

    def _run_channel(self, ch: ChannelConfig) -> int:
        sent = 0
        for _ in range(_MAX_PERIODS_PER_RUN):
            now = self.clock()
            with self.engine.begin() as conn:
                state = _load_state(conn, ch.name)
                earliest = _earliest_owed(conn, ch.name)
                if state is None:
                    start = min(earliest, now) if earliest else now
                    state = {"until": _stamp(self.schedule.last_at_or_before(start) or start)}
                    _save_state(conn, ch.name, state, now)
            if state.get("retry_at") and now < _parse(state["retry_at"]):
                return sent
            since = _parse(state["until"])
            until = self.schedule.next_after(since)
            if until is None or until > now:
                log.debug("digest_not_due", channel=ch.name, next=iso(until))
                return sent
            if earliest is None or earliest >= until:
                # empty periods: move on to the last boundary before anything is owed
                target = self.schedule.last_at_or_before(min(now, earliest or now)) or until
                with self.engine.begin() as conn:
                    _save_state(conn, ch.name, {"until": _stamp(max(target, until))}, now)
                continue
            if not self._send_period(ch, state, since, until):
                return sent
            sent += 1
        return sent

    def _send_period(self, ch: ChannelConfig, state: dict[str, Any], since: dt.datetime,
                     until: dt.datetime) -> bool:
        """Send one period's digest; True when it was sent (or given up as dead)."""
        with self.engine.begin() as conn:
            owed = _owed(conn, ch.name, until)
            listed = [eid for _id, eid, _kind in owed[:DIGEST_MAX_EVENTS]]
            bodies = event_bodies(conn, listed, limit=DIGEST_DIFF_LIMIT_CHARS)
        counts = Counter(kind for _id, _eid, kind in owed)
        body: dict[str, Any] = {
            "type": "digest", "channel": ch.name, "since": iso(since), "until": iso(until),
            "counts": {**dict(sorted(counts.items())), "total": len(owed)},
            "events": [bodies[eid] for eid in listed],
        }
        if len(owed) > len(listed):
            body["note"] = (f"{len(owed) - len(listed)} more events are not listed (a digest "
                            f"lists at most {DIGEST_MAX_EVENTS}): `redline events --since "
                            f"{iso(since)}` shows them all")
        delivery_id = str(uuid.uuid5(DELIVERY_NAMESPACE,
                                     f"digest:{ch.name}:{_stamp(since)}:{_stamp(until)}"))
        sender = make_sender(ch)
        try:
            send_within(sender, Message("digest", delivery_id, body), ch.timeout_seconds)
            error = None
        except DeliveryFailed as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a sender bug is recorded, not fatal
            log.exception("digest_sender_raised", channel=ch.name)
            error = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        finally:
            sender.close()
        ids = [row_id for row_id, _eid, _kind in owed]
        now = self.clock()
        with self.engine.begin() as conn:
            if error is None:
                for chunk in _chunks(ids):
                    ledger.record_delivered(conn, chunk, now)
                _save_state(conn, ch.name, {"until": _stamp(until)}, now)
                log.info("digest_sent", channel=ch.name, events=len(owed), until=iso(until))
                self._failing.pop(ch.name, None)
                return True
            attempts = int(state.get("attempts", 0)) + 1
            dead = error.permanent or attempts >= ch.max_attempts
            retry_at = None if dead else now + dt.timedelta(
                seconds=ledger.retry_delay(ch, attempts, error.retry_after, self.rand))
            for row_id in ids:
                ledger.record_failed(conn, row_id, attempts, f"digest: {error}", retry_at)
            if dead:
                # given up: the deliveries are dead (visible, re-queueable), the period done
                _save_state(conn, ch.name, {"until": _stamp(until)}, now)
            else:
                _save_state(conn, ch.name, {"until": _stamp(since), "attempts": attempts,
                                            "retry_at": _stamp(retry_at)}, now)
        log.warning("digest_failed", channel=ch.name, error=str(error), attempts=attempts,
                    status="dead" if dead else "failed")
        self._failing[ch.name] = f"digest attempt {attempts} failed: {error}"
        return dead

    @contextlib.contextmanager
    def _exclusive(self, ch: ChannelConfig) -> Iterator[bool]:
        """One instance digests a channel at a time: a PostgreSQL session advisory lock
        (no transaction stays open while sending). SQLite has a single instance."""
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        key = zlib.crc32(f"redline:digest:{ch.name}".encode()) - (1 << 31)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


# ---- the watermark and the owed deliveries ------------------------------------------

def _state_name(channel: str) -> str:
    return f"digest:{channel}"


def _load_state(conn: Connection, channel: str) -> dict[str, Any] | None:
    value = conn.execute(sa.select(job_state.c.value).where(
        job_state.c.name == _state_name(channel))).scalar()
    return dict(value) if value is not None else None


def _save_state(conn: Connection, channel: str, value: dict[str, Any], now: dt.datetime
                ) -> None:
    updated = conn.execute(job_state.update().where(job_state.c.name == _state_name(channel))
                           .values(value=value, updated_at=now))
    if updated.rowcount == 0:
        conn.execute(job_state.insert().values(name=_state_name(channel), value=value,
                                               updated_at=now))


def _owed_filter(channel: str) -> list[Any]:
    return [deliveries.c.channel == channel, deliveries.c.status.in_(ledger.DUE_STATUSES)]


def _earliest_owed(conn: Connection, channel: str) -> dt.datetime | None:
    return conn.execute(
        sa.select(sa.func.min(events.c.occurred_at))
        .select_from(deliveries.join(events, events.c.id == deliveries.c.event_id))
        .where(*_owed_filter(channel))
    ).scalar()


def _owed(conn: Connection, channel: str, until: dt.datetime) -> list[tuple[int, int, str]]:
    """(delivery row id, event id, kind) of the events owed before `until`, oldest first."""
    rows = conn.execute(
        sa.select(deliveries.c.id, events.c.id, events.c.kind)
        .select_from(deliveries.join(events, events.c.id == deliveries.c.event_id))
        .where(*_owed_filter(channel), events.c.occurred_at < until)
        .order_by(events.c.occurred_at, events.c.id)
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def _stamp(value: dt.datetime) -> str:
    """A time as the watermark, the retry time and the delivery id keep it: to the
    microsecond (the outward `iso` stops at the second: a retry would come up to a second
    early, and a delivery id would change)."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]

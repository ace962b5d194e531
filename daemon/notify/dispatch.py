"""Delivering the outbox of immediate channels: claim due rows, send, record the outcome.

Each channel has its own worker thread, so a slow or dead receiver only ever delays its
own deliveries. `wake()` (called when events commit) and `dispatch_due()` (called on a
schedule) only start idle workers and return; a worker keeps claiming and sending until
nothing of its channel is due. No database transaction is open while a receiver is called:
claim (short transaction) → send → record the outcome (short transaction).

A worker that goes idle looks up its channel's next retry time (`next_attempt_at` of a
failed delivery, or the end of a pause after a timeout) and a timer wakes the channel
then, so a retry waits for its backoff, not for the next scheduled dispatch.

The workers are daemon threads: a send in flight at exit (a receiver that holds the
request) never keeps the process alive; its delivery stays claimed and is sent again,
with the same delivery id, after the claim is released (at least once).
"""

from __future__ import annotations

import datetime as dt
import heapq
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any

import structlog
from sqlalchemy.engine import Connection, Engine

from daemon.config import ChannelConfig, Config
from daemon.errors import first_line
from daemon.live import transient
from daemon.notify import ledger
from daemon.notify.channels import (
    DeliveryFailed,
    Message,
    Sender,
    can_send,
    make_sender,
    send_within,
)
from daemon.notify.payload import event_bodies

log = structlog.get_logger(__name__)

CLAIM_BATCH = 25
BODY_CACHE_SIZE = 2048
# a retry wake comes this long after the retry time, so the claim then finds the row due
RETRY_WAKE_MARGIN = 0.05
DEAD_CLAIMS_EVERY = dt.timedelta(seconds=30)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Dispatcher:
    """Delivers due deliveries of the immediate-mode channels, each channel isolated."""

    def __init__(self, engine: Engine, config: Config,
                 clock: Callable[[], dt.datetime] = utcnow,
                 instance_id: str | None = None, *,
                 rand: Callable[[], float] = random.random,
                 batch_size: int = CLAIM_BATCH) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.instance_id = instance_id or default_instance_id()
        self.rand = rand
        self.batch_size = batch_size
        self.channels = [c for c in config.channels if c.mode == "immediate"]
        # pg_notify is sent inside the event's own transaction; it has no outbox rows
        self.channels = [c for c in self.channels if c.type != "pg_notify"]
        for ch in self.channels:
            if not can_send(ch.type):
                log.warning("channel_cannot_deliver", detail="its deliveries stay pending",
                            channel=ch.name, type=ch.type)
        self.channels = [c for c in self.channels if can_send(c.type)]
        self._lock = threading.Condition()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._paused_until: dict[str, dt.datetime] = {}
        self._senders: dict[str, Sender] = {}
        self._bodies: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._bodies_lock = threading.Lock()
        # event id -> set when the worker building its body has put it in the cache
        self._building: dict[int, threading.Event] = {}
        self._attempts = 0
        self._stopping = threading.Event()
        # when claims of gone processes of this host were last looked for: at the first
        # dispatch (a predecessor's), then every DEAD_CLAIMS_EVERY (another instance of this
        # host that died while this one runs)
        self._dead_checked: dt.datetime | None = None
        # channel -> (delivery id, sent at) sent but not yet recorded (the database was away)
        self._unrecorded: dict[str, list[tuple[int, dt.datetime]]] = {}
        # channel -> delivery ids claimed and not sent, whose claims could not be given back
        # (the database was away): given back before the channel claims again
        self._unreleased: dict[str, list[int]] = {}
        # (time by self.clock, channel): when to wake a channel for a retry; one timer is
        # set for the earliest
        self._wakes: list[tuple[dt.datetime, str]] = []
        self._timer: threading.Timer | None = None
        self._timer_due: dt.datetime | None = None
        # channel -> (attempts failed in a row, the last error): STATUS= says so
        self._failing: dict[str, tuple[int, str]] = {}
        # channels whose last try found the database unreachable: said once, not at each
        # dispatch while it stays away (every dispatch_seconds, for hours maybe)
        self._unreachable: set[str] = set()

    # ---- the public surface: wake, dispatch_due, wait_idle, close ---------------------

    def wake(self) -> None:
        """Start every idle channel worker (safe from any thread; returns at once)."""
        self._start(None)

    def _start(self, names: Collection[str] | None) -> None:
        """Start the workers of these channels (None: all); one already running looks
        again before it stops."""
        with self._lock:
            if self._stopping.is_set():
                return
            for ch in self.channels:
                if names is not None and ch.name not in names:
                    continue
                if ch.name in self._running:
                    self._again.add(ch.name)
                else:
                    self._running.add(ch.name)
                    # a daemon thread: a send in flight must not hold up the exit
                    threading.Thread(target=self._drain, args=(ch,), daemon=True,
                                     name=f"redline-deliver-{ch.name}").start()

    def dispatch_due(self, wait: float = 0.0) -> int:
        """Deliver what is due now: start the channel workers, wait up to `wait` seconds
        for them to go idle, and return how many deliveries were attempted meanwhile.

        The default does not wait, so a slow receiver never holds up the caller (the
        scheduler); tests pass `wait` to see the outcome.
        """
        now = self.clock()
        if self._dead_checked is None or now - self._dead_checked >= DEAD_CLAIMS_EVERY:
            self._dead_checked = now
            self.release_dead_claims()
        with self._lock:
            before = self._attempts
        self.wake()
        if wait > 0:
            self.wait_idle(wait)
        with self._lock:
            return self._attempts - before

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no channel worker runs; False if `timeout` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop: no new attempts; an attempt in flight finishes (within its timeout) and its
        worker then gives back the rest of its batch and closes its sender."""
        self._stopping.set()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._timer_due = None
            self._wakes.clear()
        self.wait_idle(timeout)
        with self._lock:
            idle = [name for name in self._senders if name not in self._running]
            unsettled = [name for name in {*self._unrecorded, *self._unreleased}
                         if name not in self._running]
        for name in unsettled:  # a last try; if the database is still away, their claims
            self._settle(name)  # expire: the unsent are sent then, the sent sent again
        for name in idle:
            self._close_sender(name)

    def failing(self) -> dict[str, str]:
        """The channels whose last attempt failed, each with how (for STATUS=): a receiver
        down for hours is never silent."""
        return {name: _failing_text(n, error) for name, (n, error) in dict(self._failing).items()}

    def _close_sender(self, name: str) -> None:
        sender = self._senders.pop(name, None)
        if sender is not None:
            try:
                sender.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.warning("sender_close_failed", channel=name, exc_info=True)

    def release_dead_claims(self) -> int:
        """Drop claims of processes of this host that are gone (a crash or SIGKILL: this
        one's predecessor, or another instance beside it), so their deliveries need not
        wait for the claims to expire."""
        own = _host_pid(self.instance_id)
        if own is None:
            return 0
        with self.engine.begin() as conn:
            dead = [c for c in ledger.claimants(conn)
                    if c != self.instance_id and _is_dead_local(c, own[0])]
            released = ledger.release_instances(conn, dead)
        if released:
            log.info("stale_claims_released", instances=dead, count=released)
        return released

    # ---- one channel's worker ------------------------------------------------------

    def _drain(self, ch: ChannelConfig) -> None:
        running = True
        try:
            while not self._stopping.is_set():
                more = self._one_batch(ch)
                if more:
                    continue
                # before the last look at _again: a wake meanwhile is not lost
                self._wake_for_next_retry(ch)
                with self._lock:
                    if ch.name in self._again:
                        self._again.discard(ch.name)
                        continue
                    # the worker ends under the lock of its last look: a wake from now on
                    # starts a new worker (one between the two would be lost)
                    self._worker_ended(ch.name)
                    running = False
                    break
        except Exception as exc:  # noqa: BLE001 - a worker must not die silently; the next wake retries
            if transient(exc):
                self._database_away(ch.name, exc)
            else:
                log.exception("delivery_worker_failed", channel=ch.name)
        finally:
            if self._stopping.is_set():
                self._close_sender(ch.name)
            if running:
                with self._lock:
                    self._worker_ended(ch.name)

    def _database_away(self, channel: str, exc: BaseException) -> None:
        """The channel's try could not reach the database: a warning the first time, then
        quiet (debug) until a claim gets through again; the next wake tries again."""
        with self._lock:
            first = channel not in self._unreachable
            self._unreachable.add(channel)
        (log.warning if first else log.debug)(
            "delivery_database_unreachable", channel=channel, error=first_line(exc),
            detail="its deliveries wait; tried again at each dispatch")

    def _database_back(self, channel: str) -> None:
        with self._lock:
            if channel not in self._unreachable:
                return
            self._unreachable.discard(channel)
        log.info("delivery_database_reachable", channel=channel)

    def _worker_ended(self, name: str) -> None:
        """The channel has no worker now (called holding the lock)."""
        self._running.discard(name)
        self._again.discard(name)
        self._lock.notify_all()

    # ---- waking a channel at its next retry time ---------------------------------------

    def _wake_for_next_retry(self, ch: ChannelConfig) -> None:
        """Set a wake for the channel's earliest retry: a failed delivery's next attempt
        (this process's, or a predecessor's) or the end of a pause after a timeout."""
        now = self.clock()
        try:
            with self.engine.connect() as conn:
                nxt = ledger.next_retry_at(conn, ch.name, now)
        except Exception as exc:  # noqa: BLE001 - the database is away: the ticks go on
            log.debug("next_retry_unknown", channel=ch.name,
                      error=first_line(exc))
            nxt = None
        paused = self._paused_until.get(ch.name)
        times = [t for t in (nxt, paused) if t is not None and t > now]
        if times:
            self._wake_at(ch.name, min(times))

    def _wake_at(self, channel: str, when: dt.datetime) -> None:
        with self._lock:
            if self._stopping.is_set() or (when, channel) in self._wakes:
                return
            heapq.heappush(self._wakes, (when, channel))
            if self._timer_due is None or when < self._timer_due:
                self._arm()

    def _arm(self) -> None:
        """(Re)set the one timer for the earliest wake; called with the lock held."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_due = None
        if not self._wakes or self._stopping.is_set():
            return
        due = self._wakes[0][0]
        delay = max(0.0, (due - self.clock()).total_seconds()) + RETRY_WAKE_MARGIN
        timer = threading.Timer(delay, self._on_timer)
        timer.args = (timer,)
        timer.daemon = True
        timer.name = "redline-retry-wake"
        self._timer, self._timer_due = timer, due
        timer.start()

    def _on_timer(self, timer: threading.Timer) -> None:
        with self._lock:
            if timer is not self._timer:
                return  # replaced by an earlier one meanwhile
            self._timer = self._timer_due = None
            now = self.clock()
            names: set[str] = set()
            while self._wakes and self._wakes[0][0] <= now:
                names.add(heapq.heappop(self._wakes)[1])
            self._arm()
        if names:
            self._start(names)

    def _one_batch(self, ch: ChannelConfig) -> bool:
        """Claim and send one batch; True when all of it was delivered (more may be due)."""
        now = self.clock()
        paused = self._paused_until.get(ch.name)
        if paused is not None:
            if now < paused:
                return False
            del self._paused_until[ch.name]
        if not self._settle(ch.name):
            return False  # the database is still away: claim nothing until it answers
        lease = dt.timedelta(seconds=ch.timeout_seconds * self.batch_size + 60)
        claimed: list[ledger.ClaimedDelivery] = []
        try:
            with self.engine.begin() as conn:
                claimed = ledger.claim(conn, ch.name, self.instance_id, now, lease,
                                       self.batch_size)
        except Exception:
            # the connection dropped at COMMIT: the claims may have been taken all the same
            self._unsent(ch.name, [c.id for c in claimed])
            raise
        self._database_back(ch.name)
        if not claimed:
            return False
        delivered: list[int] = []
        try:
            sender = self._sender(ch)
            bodies = self._load_bodies([c.event_id for c in claimed])
            return self._send_batch(ch, sender, claimed, bodies, delivered)
        except Exception:
            # e.g. the database connection dropped after the claim: hand the rows not yet
            # delivered back at once instead of leaving them claimed for the whole lease
            self._unsent(ch.name, [c.id for c in claimed if c.id not in delivered])
            raise
        finally:
            # recorded once per batch: a crash before this line re-sends at most one batch,
            # with the same delivery ids (at least once)
            if delivered:
                self._record_delivered(ch.name, delivered)

    def _settle(self, channel: str) -> bool:
        """Record what the channel sent and give back what it claimed and did not send,
        where the database was away when that was due; False if it is still away."""
        return self._record_delivered(channel, []) and self._unsent(channel, [])

    def _unsent(self, channel: str, ids: list[int]) -> bool:
        """Give back the claims of deliveries not sent, with any the channel could not give
        back before; False if the database did not answer. Those are kept and given back
        before the channel claims again: left, they would wait for their lease (minutes)."""
        return self._write_or_keep(
            self._unreleased, channel, ids,
            lambda conn, pending: ledger.release(conn, pending, self.instance_id),
            "release_failed", "given back when the database answers again")

    def _record_delivered(self, channel: str, ids: list[int]) -> bool:
        """Record sent deliveries as delivered, with any that an earlier batch of the
        channel could not record; False if the database did not answer. Those are kept
        and recorded by the channel's next batch: left claimed, they would be sent again
        once their claim expired, minutes later."""
        def record(conn: Connection, pending: list[tuple[int, dt.datetime]]) -> None:
            for when in sorted({w for _i, w in pending}):
                ledger.record_delivered(conn, [i for i, w in pending if w == when], when,
                                        self.instance_id)

        now = self.clock()
        return self._write_or_keep(self._unrecorded, channel, [(i, now) for i in ids], record,
                                   "delivered_not_recorded",
                                   "sent; recorded when the database answers again")

    def _write_or_keep(self, kept: dict[str, list[Any]], channel: str, new: list[Any],
                       write: Callable[[Connection, list[Any]], None], event: str,
                       detail: str) -> bool:
        """Write the channel's `new` items with those `kept` from earlier tries in one
        transaction; if the database does not answer, keep them all for the next try."""
        with self._lock:
            pending = kept.pop(channel, []) + new
        if not pending:
            return True
        try:
            with self.engine.begin() as conn:
                write(conn, pending)
        except Exception as exc:  # noqa: BLE001 - above all a database outage: kept for later
            with self._lock:
                kept[channel] = pending + kept.get(channel, [])
            # said once per batch; the retries at each wake meanwhile are quiet
            (log.warning if new else log.debug)(
                event, channel=channel, count=len(pending),
                error=first_line(exc), detail=detail)
            return False
        return True

    def _send_batch(self, ch: ChannelConfig, sender: Sender,
                    claimed: Sequence[ledger.ClaimedDelivery], bodies: dict[int, dict[str, Any]],
                    delivered: list[int]) -> bool:
        all_delivered = True
        for i, item in enumerate(claimed):
            if self._stopping.is_set():
                self._unsent(ch.name, [c.id for c in claimed[i:]])
                return False
            body = bodies[item.event_id]
            error: DeliveryFailed | None = None
            try:
                send_within(sender, Message(body["kind"], item.delivery_id, body),
                            ch.timeout_seconds)
            except DeliveryFailed as exc:
                error = exc
                if exc.abandoned:  # still busy with the abandoned send: the next is new
                    self._close_sender(ch.name)
            except Exception as exc:  # noqa: BLE001 - a sender bug is recorded, not fatal
                log.exception("sender_raised", channel=ch.name)
                error = DeliveryFailed(f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._attempts += 1
            if error is None:
                delivered.append(item.id)
                self._failing.pop(ch.name, None)
                continue
            all_delivered = False
            self._failing[ch.name] = (self._failing.get(ch.name, (0, ""))[0] + 1, str(error))
            retry_at = self._record_failure(ch, item, error)
            if error.timed_out or error.retry_after is not None:
                # a hung receiver, or one that asked for a pause (429/503 with Retry-After):
                # pause the channel instead of trying (and timing out on) each row
                self._paused_until[ch.name] = retry_at or self.clock() + dt.timedelta(
                    seconds=ledger.retry_delay(ch, item.attempts + 1, error.retry_after,
                                               self.rand))
                self._unsent(ch.name, [c.id for c in claimed[i + 1:]])
                return False
        # after a failure, stop for now: what is due again waits for the next wake (at the
        # earliest retry time at the latest)
        return all_delivered

    def _record_failure(self, ch: ChannelConfig, item: ledger.ClaimedDelivery,
                        error: DeliveryFailed) -> dt.datetime | None:
        now = self.clock()
        attempts = item.attempts + 1
        retry_at: dt.datetime | None = None
        if not error.permanent and attempts < ch.max_attempts:
            retry_at = now + dt.timedelta(
                seconds=ledger.retry_delay(ch, attempts, error.retry_after, self.rand))
        with self.engine.begin() as conn:
            ledger.record_failed(conn, item.id, attempts, str(error), retry_at, self.instance_id)
        log.warning("delivery_failed", channel=ch.name, event_id=item.event_id,
                    attempts=attempts, error=str(error),
                    retry_at=retry_at.isoformat() if retry_at else None,
                    status="failed" if retry_at else "dead")
        return retry_at

    def _sender(self, ch: ChannelConfig) -> Sender:
        sender = self._senders.get(ch.name)
        if sender is None:
            sender = self._senders[ch.name] = make_sender(ch)
        return sender

    def _load_bodies(self, event_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Event bodies never change once committed: channels share one cache, and a body
        is built once. The workers of a commit's channels wake together and ask for the
        same events: those another worker is building meanwhile are waited for, not built
        again (a body's word diff is most of a delivery's work)."""
        found: dict[int, dict[str, Any]] = {}
        mine: list[int] = []
        theirs: list[tuple[int, threading.Event]] = []
        with self._bodies_lock:
            for eid in event_ids:
                if eid in self._bodies:
                    found[eid] = self._bodies[eid]
                    self._bodies.move_to_end(eid)
                elif eid in self._building:
                    theirs.append((eid, self._building[eid]))
                else:
                    self._building[eid] = threading.Event()
                    mine.append(eid)
        try:
            if mine:
                found.update(self._build_bodies(mine))
        finally:
            with self._bodies_lock:
                for eid in mine:
                    self._building.pop(eid).set()
        missing: list[int] = []
        for eid, built in theirs:
            built.wait()
            with self._bodies_lock:
                body = self._bodies.get(eid)
            if body is None:  # its builder failed (or the cache let it go): build it here
                missing.append(eid)
            else:
                found[eid] = body
        if missing:
            found.update(self._build_bodies(missing))
        return found

    def _build_bodies(self, event_ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            loaded = event_bodies(conn, event_ids)
        with self._bodies_lock:
            self._bodies.update(loaded)
            while len(self._bodies) > BODY_CACHE_SIZE:
                self._bodies.popitem(last=False)
        return loaded


def _failing_text(attempts: int, error: str) -> str:
    """How a channel fails, for STATUS=: `3 attempt(s) failed in a row, last: HTTP 500 …`."""
    short = " ".join(error.split())
    if len(short) > 160:
        short = short[:159] + "…"
    return f"{attempts} attempt(s) failed in a row, last: {short}"


def _host_pid(instance: str) -> tuple[str, int] | None:
    """The host and process of an instance id: `host:pid` (the default here) or
    `host:pid:random` (the daemon's); None for any other form."""
    parts = instance.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _is_dead_local(instance: str, host: str) -> bool:
    """An instance id of this host whose process is gone."""
    found = _host_pid(instance)
    if found is None or found[0] != host:
        return False
    try:
        os.kill(found[1], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

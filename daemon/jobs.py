"""The daemon's scheduled jobs on one APScheduler 3 BackgroundScheduler.

Jobs are defined in code and live in the memory job store (a job store must never be
shared between processes); work shared by several instances is coordinated in the database
by the jobs themselves. Every job has explicit misfire, coalescing and instance settings,
and a failing job logs and runs again at its next time: it never stops the daemon.

- reconcile    every `schedule.reconcile_minutes`: asks the live worker for a full rescan
- dispatch     every `schedule.dispatch_seconds`, and at once when events commit
- digest       on `schedule.digest_cron` in `schedule.timezone` (and once at start, to
               catch a period that ended while the daemon was down); after a failed
               digest, also at its retry time when that comes before the next cron time
- housekeeping every 10 minutes: SQLite WAL checkpoint and `PRAGMA optimize`, old heartbeats,
               memory freed by the daemon's threads given back to the system
- heartbeat    every 15 seconds: this instance's row in `heartbeats`
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from daemon.config import Config, ScheduleConfig
from daemon.errors import first_line
from daemon.store.schema import heartbeats

log = structlog.get_logger(__name__)

HOUSEKEEPING_MINUTES = 10.0
HEARTBEAT_SECONDS = 15.0
HEARTBEAT_KEEP = dt.timedelta(days=7)  # rows of instances gone longer are deleted
DISPATCH_ROUNDS = 50  # a dispatch run repeats while wakes keep arriving, up to this
# a digest retry runs this long after its retry time, so the runner finds it due
DIGEST_RETRY_MARGIN = 0.05
# a retry time the run left in the past (another instance holds the channel, or the channel
# raised) is looked at again after this long, not at once: the job must not spin
DIGEST_RETRY_PAST_SECONDS = 30.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class HandledSkip(logging.Filter):
    """APScheduler warns 'Execution of job "dispatch …" skipped: maximum number of running
    instances reached' whenever events commit while a dispatch runs (wake_dispatch moves
    the job to now). Nothing is skipped: the running dispatch goes round again for that
    wake, or _on_max_instances runs it 50 ms later. The soak logged 92 of those warnings in
    40 minutes of edits; they are dropped for the dispatch job (for any other job a skipped
    run is worth a warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (getattr(job, "id", None) == "dispatch"
                    and "maximum number of running instances" in str(record.msg))


logging.getLogger("apscheduler.scheduler").addFilter(HandledSkip())


# ---- triggers: pure functions of the configuration ----------------------------------------

def reconcile_trigger(schedule: ScheduleConfig) -> IntervalTrigger:
    return IntervalTrigger(seconds=schedule.reconcile_minutes * 60,
                           timezone=ZoneInfo(schedule.timezone))


def dispatch_trigger(schedule: ScheduleConfig) -> IntervalTrigger:
    return IntervalTrigger(seconds=schedule.dispatch_seconds, timezone=ZoneInfo(schedule.timezone))


def digest_trigger(schedule: ScheduleConfig) -> CronTrigger:
    return crontab_trigger(schedule.digest_cron, schedule.timezone)


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(expr: str, timezone: str) -> CronTrigger:
    """A CronTrigger that reads `expr` as crontab(5) does. APScheduler 3's from_crontab
    takes day-of-week 0 as Monday (its issue #286), so `1-5` would mean Tuesday to
    Saturday; here the weekday field is translated to day names first."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, dow = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_crontab_weekdays(dow), timezone=ZoneInfo(timezone))


def _crontab_weekdays(field: str) -> str:
    """crontab's day-of-week field (0 or 7 = Sunday, names allowed) -> day names."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        rng, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in day-of-week {field!r}")
        if rng == "*":
            first, last = 0, 6
        else:
            a, _, b = rng.partition("-")
            first = _crontab_day(a)
            last = _crontab_day(b) if b else (6 if step_text else first)
            if b and last == 0 and first > 0:
                last = 7  # "5-0" / "fri-sun": up to Sunday
            if last < first:
                raise ValueError(f"day-of-week range {rng!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def _crontab_day(text: str) -> int:
    if text in _CRON_DAYS:
        return _CRON_DAYS.index(text)
    value = int(text)
    if not 0 <= value <= 7:
        raise ValueError(f"day of week {value} is out of range 0-7")
    return value


def housekeeping_trigger(schedule: ScheduleConfig) -> IntervalTrigger:
    return IntervalTrigger(minutes=HOUSEKEEPING_MINUTES, timezone=ZoneInfo(schedule.timezone))


def heartbeat_trigger(schedule: ScheduleConfig) -> IntervalTrigger:
    return IntervalTrigger(seconds=HEARTBEAT_SECONDS, timezone=ZoneInfo(schedule.timezone))


@dataclass(frozen=True)
class JobSpec:
    """How one job is scheduled; APScheduler's defaults (a 1 s misfire grace) are never
    relied on."""

    trigger: Callable[[ScheduleConfig], BaseTrigger]
    misfire_grace_time: int | None  # seconds late a run may still start; None: any
    coalesce: bool = True  # several missed runs become one
    max_instances: int = 1
    run_at_start: bool = False


JOB_SPECS: dict[str, JobSpec] = {
    # a late rescan is still worth doing; the next one is an interval away anyway
    "reconcile": JobSpec(reconcile_trigger, misfire_grace_time=None),
    # deliveries are due however late we are; runs that pile up collapse into one
    "dispatch": JobSpec(dispatch_trigger, misfire_grace_time=None, run_at_start=True),
    # the runner keeps its watermark in the database, so a late or extra run is harmless
    "digest": JobSpec(digest_trigger, misfire_grace_time=None, run_at_start=True),
    "housekeeping": JobSpec(housekeeping_trigger, misfire_grace_time=int(
        HOUSEKEEPING_MINUTES * 60)),
    "heartbeat": JobSpec(heartbeat_trigger, misfire_grace_time=int(HEARTBEAT_SECONDS)),
}


# ---- job bodies: plain functions over an engine ------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    """One instance's row in `heartbeats`, read by `redline status`."""

    instance: str
    hostname: str
    pid: int
    started_at: dt.datetime
    seen_at: dt.datetime
    watching: bool
    status: str


def write_heartbeat(engine: Engine, beat: Heartbeat) -> None:
    """Insert or refresh this instance's heartbeat row."""
    values = dict(hostname=beat.hostname, pid=beat.pid, started_at=beat.started_at,
                  seen_at=beat.seen_at, watching=beat.watching, status=beat.status[:2000])
    with engine.begin() as conn:
        updated = conn.execute(heartbeats.update().where(heartbeats.c.instance == beat.instance)
                               .values(**values))
        if updated.rowcount == 0:
            conn.execute(heartbeats.insert().values(instance=beat.instance, **values))


def housekeep(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """Delete heartbeats of long-gone instances; on SQLite, checkpoint and truncate the WAL
    and let SQLite refresh its statistics (PostgreSQL's autovacuum needs no help); give the
    memory freed meanwhile back to the system (release_free_memory)."""
    with engine.begin() as conn:
        removed = conn.execute(heartbeats.delete().where(
            heartbeats.c.seen_at < now - HEARTBEAT_KEEP)).rowcount
    result: dict[str, Any] = {"heartbeats_removed": removed}
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            # outside any transaction: a checkpoint cannot run inside one
            cur = raw.driver_connection.cursor()  # type: ignore[union-attr]
            # optimize first: it may write (ANALYZE's statistics), and the checkpoint then
            # takes that too, leaving the WAL empty
            cur.execute("PRAGMA optimize")
            busy, wal_frames, moved = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cur.close()
        finally:
            raw.close()
        result.update(checkpoint_busy=bool(busy), wal_frames=wal_frames, checkpointed=moved)
    result["memory_trimmed"] = release_free_memory()
    return result


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> bool:
    """Give the memory the process has freed back to the system (glibc: malloc_trim).

    The daemon's short-lived threads (a delivery worker per channel and wake, the reader's
    feeder per pass, the checkpointer, the scheduler's pool) allocate in glibc's per-thread
    arenas, and glibc hands an arena's free pages back only from its top: the rest stays
    resident. The soak measured the resident size climbing with every change (69 to 131 MB
    over 4,800 events, 44 MB of it free in the arenas) while the memory in use stayed at 31
    MB; trimmed every 10 minutes it levels off. True if a trim ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class DispatchRunner(Protocol):
    def dispatch_due(self) -> int: ...


class DigestRunnerLike(Protocol):
    def run_due(self) -> int: ...

    # optional: `next_retry_at() -> datetime | None`, when a failed digest is due again


def default_dispatch(engine: Engine, config: Config, clock: Callable[[], dt.datetime],
                     instance_id: str) -> DispatchRunner:
    """The deliveries' runner: daemon.notify.dispatch.Dispatcher."""
    from daemon.notify.dispatch import Dispatcher

    return Dispatcher(engine, config, clock=clock, instance_id=instance_id)


def default_digest(engine: Engine, config: Config, clock: Callable[[], dt.datetime],
                   instance_id: str) -> DigestRunnerLike:
    """The digests' runner: daemon.notify.digest.DigestRunner."""
    from daemon.notify.digest import DigestRunner

    # the same reading of the crontab as the digest job's trigger (0 and 7 are Sunday)
    return DigestRunner(engine, config, clock=clock, trigger=digest_trigger(config.schedule))


RunnerFactory = Callable[[Engine, Config, Callable[[], dt.datetime], str], Any]


def _trigger_key(trigger: BaseTrigger) -> tuple[str, str, str]:
    """What makes two triggers fire alike: the kind, its fields or interval (`str()`:
    `interval[0:00:05]`, `cron[minute='0', hour='8', …]`) and the time zone; not the
    start time that an interval trigger takes from the moment it is made."""
    return type(trigger).__name__, str(trigger), str(getattr(trigger, "timezone", ""))


def _close(runner: Any, timeout: float) -> None:
    """Let a runner finish its in-flight work (Dispatcher.close), if it has a close()."""
    close = getattr(runner, "close", None)
    if close is None:
        return
    try:
        close(timeout)
    except Exception:  # noqa: BLE001 - closing is best effort
        log.warning("runner_close_failed", exc_info=True)


class Jobs:
    """The scheduler and its five jobs. `start(paused=True)` sets everything up without
    running anything (for tests); `wake_dispatch()` runs the dispatch job now."""

    def __init__(self, config: Config, engine: Engine, *, instance_id: str,
                 request_reconcile: Callable[[str], None],
                 heartbeat: Callable[[], Heartbeat],
                 dispatch_factory: RunnerFactory = default_dispatch,
                 digest_factory: RunnerFactory = default_digest,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.config = config
        self.engine = engine
        self.instance_id = instance_id
        self._request_reconcile = request_reconcile
        self._heartbeat = heartbeat
        self._dispatch_factory = dispatch_factory
        self._digest_factory = digest_factory
        self.clock = clock
        self.dispatch: DispatchRunner | None = None
        self.digest: DigestRunnerLike | None = None
        self._build_runners(config)
        self._wake = threading.Event()
        self._running = 0
        self._idle = threading.Condition()
        self.failures: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.digest_retry_at: dt.datetime | None = None  # found by the last digest run
        self.scheduler = BackgroundScheduler(timezone=ZoneInfo(config.schedule.timezone))
        self.scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        self.scheduler.add_listener(self._on_job_done, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        self.bodies: dict[str, Callable[[], Any]] = {
            "reconcile": self.run_reconcile,
            "dispatch": self.run_dispatch,
            "digest": self.run_digest,
            "housekeeping": self.run_housekeeping,
            "heartbeat": self.run_heartbeat,
        }

    def _build_runners(self, config: Config) -> None:
        old = self.dispatch
        args = (self.engine, config, self.clock, self.instance_id)
        self.dispatch = self._dispatch_factory(*args)  # a factory may give None
        self.digest = self._digest_factory(*args)
        if self.dispatch is None or self.digest is None:
            log.warning("notifications_unavailable",
                        detail="no dispatcher or digest runner: deliveries stay pending")
        if old is not None:
            _close(old, 0)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        now = dt.datetime.now(ZoneInfo(self.config.schedule.timezone))
        for name, spec in JOB_SPECS.items():
            extra = {"next_run_time": now} if spec.run_at_start else {}
            self.scheduler.add_job(
                self._guarded(name), spec.trigger(self.config.schedule), id=name, name=name,
                misfire_grace_time=spec.misfire_grace_time, coalesce=spec.coalesce,
                max_instances=spec.max_instances, replace_existing=True, **extra)
        self.scheduler.start(paused=paused)

    def reload(self, config: Config) -> None:
        """New runners for a reloaded configuration, and new triggers for the jobs whose
        schedule changed. Only those: rescheduling starts an interval afresh, so a daemon
        reloaded more often than every 10 minutes (a deploy tool, a cron job) would never
        run its housekeeping (the WAL never truncated), nor refresh its heartbeat when
        reloaded within 15 s, nor rescan when reloaded within reconcile_minutes."""
        self._build_runners(config)
        if config.schedule.timezone != self.config.schedule.timezone:
            log.warning("reload_timezone_ignored",
                        detail="schedule.timezone changes the scheduler's zone only at restart;"
                               " the digest trigger uses the new zone now")
        old = self.config.schedule
        self.config = config
        for name, spec in JOB_SPECS.items():
            trigger = spec.trigger(config.schedule)
            if _trigger_key(trigger) != _trigger_key(spec.trigger(old)):
                self.scheduler.reschedule_job(name, trigger=trigger)
        # rescheduling moved the digest job to its cron time: a pending retry comes first
        if self.digest_retry_at is not None:
            self.schedule_digest_retry(self.digest_retry_at)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def shutdown(self, timeout: float) -> bool:
        """Stop scheduling; wait up to `timeout` for running jobs. True if none is left."""
        deadline = time.monotonic() + timeout
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        with self._idle:
            done = self._idle.wait_for(lambda: self._running == 0, timeout)
        _close(self.dispatch, max(0.0, deadline - time.monotonic()))
        return done

    def failing_channels(self) -> dict[str, str]:
        """The channels whose deliveries (or digests) fail now, each with how."""
        out: dict[str, str] = {}
        for runner in (self.dispatch, self.digest):
            failing = getattr(runner, "failing", None)
            if failing is not None:
                out.update(failing())
        return out

    # ---- dispatch wake-up -----------------------------------------------------------------

    def wake_dispatch(self) -> None:
        """Events committed: run the dispatch job now instead of at its next interval."""
        self._wake.set()
        self._run_soon("dispatch")

    def _run_soon(self, job_id: str, delay: float = 0.0) -> None:
        if not self.scheduler.running:
            return
        when = dt.datetime.now(ZoneInfo(self.config.schedule.timezone)) + dt.timedelta(
            seconds=delay)
        try:
            self.scheduler.modify_job(job_id, next_run_time=when)
        except JobLookupError:
            pass

    def schedule_digest_retry(self, retry_at: dt.datetime) -> bool:
        """Run the digest job at `retry_at` (a failed digest's retry, by self.clock) when
        that comes before its next cron time; never later. True if the job was moved."""
        if not self.scheduler.running:
            return False
        tz = ZoneInfo(self.config.schedule.timezone)
        wait = (retry_at - self.clock()).total_seconds()
        wait = wait + DIGEST_RETRY_MARGIN if wait > 0 else DIGEST_RETRY_PAST_SECONDS
        when = dt.datetime.now(tz) + dt.timedelta(seconds=wait)
        job = self.scheduler.get_job("digest")
        if job is None or job.next_run_time is None or when >= job.next_run_time:
            return False
        self.scheduler.modify_job("digest", next_run_time=when)
        log.info("digest_retry_scheduled", at=when.isoformat(),
                 cron_time=job.next_run_time.isoformat())
        return True

    def _on_job_done(self, event: JobEvent) -> None:
        # called once the run no longer counts as a running instance, so a retry that is
        # due at once is not skipped as a second instance
        if event.job_id == "digest" and self.digest_retry_at is not None:
            try:
                self.schedule_digest_retry(self.digest_retry_at)
            except Exception:  # noqa: BLE001 - the cron time still comes
                log.warning("digest_retry_not_scheduled", exc_info=True)

    def _on_max_instances(self, event: JobExecutionEvent) -> None:
        # A wake that arrived while the job was finishing would wait a whole interval.
        if event.job_id == "dispatch" and self._wake.is_set():
            self._run_soon("dispatch", 0.05)

    # ---- the job bodies ---------------------------------------------------------------------

    def run_reconcile(self) -> None:
        self._request_reconcile("scheduled")

    def run_dispatch(self) -> int:
        if self.dispatch is None:
            return 0
        total = 0
        for _ in range(DISPATCH_ROUNDS):
            self._wake.clear()
            total += self.dispatch.dispatch_due()
            if not self._wake.is_set():
                break
        return total

    def run_digest(self) -> int:
        """Send the due digests; remember when a failed one is due again (the job is then
        moved earlier, see _on_job_done)."""
        self.digest_retry_at = None
        if self.digest is None:
            return 0
        sent = self.digest.run_due()
        next_retry = getattr(self.digest, "next_retry_at", None)
        if next_retry is not None:
            self.digest_retry_at = next_retry()
        return sent

    def run_housekeeping(self) -> dict[str, Any]:
        result = housekeep(self.engine, self.clock())
        log.debug("housekeeping", **result)
        return result

    def run_heartbeat(self) -> None:
        write_heartbeat(self.engine, self._heartbeat())

    def _guarded(self, name: str) -> Callable[[], None]:
        def job() -> None:
            with self._idle:
                self._running += 1
            try:
                self.bodies[name]()
                if self.last_error.pop(name, None) is not None:
                    log.info("job_recovered", job=name)
            except sa.exc.DBAPIError as exc:  # away, read-only, full: the server's words
                self._failed(name, f"database: {first_line(exc)}")
            except Exception as exc:  # noqa: BLE001 - a job must never take the daemon down
                log.exception("job_failed", job=name)
                self._failed(name, f"{type(exc).__name__}: {exc}", logged=True)
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        job.__name__ = f"redline_{name}"
        return job

    def _failed(self, name: str, error: str, logged: bool = False) -> None:
        self.failures[name] = self.failures.get(name, 0) + 1
        self.last_error[name] = error
        if not logged:
            log.error("job_failed", job=name, error=error, detail="it runs again at its next time")

"""Tests for daemon.jobs: triggers as pure functions, the wiring with start(paused=True),
job bodies as plain functions on real databases, and a real scheduler for failure and
wake-up behaviour (waiting on conditions, never sleeping)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from daemon.config import Config, ScheduleConfig, parse_config
from daemon.jobs import (
    HEARTBEAT_KEEP,
    JOB_SPECS,
    Heartbeat,
    Jobs,
    digest_trigger,
    dispatch_trigger,
    housekeep,
    reconcile_trigger,
    write_heartbeat,
)
from daemon.store.schema import heartbeats, job_state

UTC = dt.UTC
TIMEOUT = 10.0


def make_config(tmp_path: Path, **schedule: Any) -> Config:
    return parse_config({"watch": {"paths": [str(tmp_path)]}, "schedule": schedule},
                        base=tmp_path, environ={})


class Runner:
    """A dispatch/digest runner standing in for daemon.notify: counts calls, can fail or
    block, and lets a test wait for a number of calls."""

    def __init__(self, fail_first: int = 0, block_first: bool = False) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.release = threading.Event()
        if not block_first:
            self.release.set()
        self.cond = threading.Condition()

    def __call__(self) -> int:
        with self.cond:
            self.calls += 1
            n = self.calls
            self.cond.notify_all()
        if n == 1:
            self.release.wait(TIMEOUT)
        if n <= self.fail_first:
            raise RuntimeError(f"receiver exploded (call {n})")
        return 1

    dispatch_due = __call__
    run_due = __call__

    def wait_for(self, calls: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.calls >= calls, TIMEOUT)


def beat(instance: str = "host:1:abc", seen: dt.datetime | None = None) -> Heartbeat:
    now = seen or dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    return Heartbeat(instance, "host", 1, now, now, True, "watching 1 folder(s) (inotify)")


@pytest.fixture
def make_jobs(tmp_path: Path) -> Iterator[Callable[..., Jobs]]:
    """Build Jobs on a real SQLite file with stand-in runners; always shut down."""
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    built: list[Jobs] = []

    def build(config: Config | None = None, dispatch: Any = None, digest: Any = None,
              reconcile: Callable[[str], None] = lambda reason: None,
              dispatch_factory: Callable[..., Any] | None = None) -> Jobs:
        jobs = Jobs(config or make_config(tmp_path), engine, instance_id="test:1:x",
                    request_reconcile=reconcile, heartbeat=beat,
                    dispatch_factory=dispatch_factory or (lambda *a: dispatch),
                    digest_factory=lambda *a: digest)
        built.append(jobs)
        return jobs

    yield build
    for jobs in built:
        jobs.shutdown(5)
    engine.dispose()


# ---- triggers ----------------------------------------------------------------------------

def test_interval_triggers_follow_the_schedule() -> None:
    """The reconcile and dispatch triggers fire every reconcile_minutes / dispatch_seconds."""
    sched = ScheduleConfig(dispatch_seconds=2.5, reconcile_minutes=45)
    start = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rec = reconcile_trigger(sched)
    disp = dispatch_trigger(sched)
    assert rec.interval == dt.timedelta(minutes=45)
    assert disp.interval == dt.timedelta(seconds=2.5)
    first = rec.get_next_fire_time(None, start)
    assert rec.get_next_fire_time(first, first) - first == dt.timedelta(minutes=45)


def test_digest_trigger_fires_at_the_cron_time_in_the_configured_zone() -> None:
    """digest_cron is read in schedule.timezone, across a daylight-saving change."""
    trig = digest_trigger(ScheduleConfig(digest_cron="0 8 * * *", timezone="Europe/Berlin"))
    berlin = ZoneInfo("Europe/Berlin")
    winter = trig.get_next_fire_time(None, dt.datetime(2026, 3, 27, 9, 0, tzinfo=UTC))
    assert winter == dt.datetime(2026, 3, 28, 8, 0, tzinfo=berlin)
    assert winter.astimezone(UTC).hour == 7
    summer = trig.get_next_fire_time(winter, winter + dt.timedelta(minutes=1))
    assert summer == dt.datetime(2026, 3, 29, 8, 0, tzinfo=berlin)
    assert summer.astimezone(UTC).hour == 6


def test_weekday_digest_skips_the_weekend() -> None:
    """A Monday-to-Friday crontab goes from Friday to Monday."""
    trig = digest_trigger(ScheduleConfig(digest_cron="30 17 * * 1-5", timezone="UTC"))
    friday_evening = dt.datetime(2026, 3, 6, 18, 0, tzinfo=UTC)
    assert trig.get_next_fire_time(None, friday_evening) == dt.datetime(
        2026, 3, 9, 17, 30, tzinfo=ZoneInfo("UTC"))


# ---- wiring ------------------------------------------------------------------------------

def test_paused_scheduler_holds_every_job_with_explicit_settings(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """start(paused=True) registers the five jobs with explicit misfire/coalesce/instances,
    and dispatch and digest are due at once (catching up after a restart)."""
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=7, reconcile_minutes=30,
                                 digest_cron="15 6 * * *", timezone="America/New_York"))
    before = dt.datetime.now(UTC)
    jobs.start(paused=True)
    by_id = {j.id: j for j in jobs.scheduler.get_jobs()}
    assert set(by_id) == {"reconcile", "dispatch", "digest", "housekeeping", "heartbeat"}
    for name, spec in JOB_SPECS.items():
        job = by_id[name]
        assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (
            spec.misfire_grace_time, spec.coalesce, spec.max_instances)
    assert by_id["dispatch"].trigger.interval == dt.timedelta(seconds=7)
    assert by_id["reconcile"].trigger.interval == dt.timedelta(minutes=30)
    assert str(by_id["digest"].trigger.timezone) == "America/New_York"
    for name in ("dispatch", "digest"):
        assert by_id[name].next_run_time <= dt.datetime.now(UTC)
        assert by_id[name].next_run_time >= before - dt.timedelta(seconds=1)
    assert by_id["reconcile"].next_run_time > dt.datetime.now(UTC) + dt.timedelta(minutes=29)


def test_reload_reschedules_with_the_new_settings(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """Jobs.reload() puts new triggers on the existing jobs and rebuilds the runners."""
    built: list[Config] = []

    def factory(engine: sa.Engine, config: Config, clock: Any, instance_id: str) -> Runner:
        built.append(config)
        return Runner()

    jobs = make_jobs(dispatch_factory=factory)
    jobs.start(paused=True)
    new = make_config(tmp_path, dispatch_seconds=1, reconcile_minutes=5,
                      digest_cron="0 20 * * *")
    jobs.reload(new)
    by_id = {j.id: j for j in jobs.scheduler.get_jobs()}
    assert by_id["dispatch"].trigger.interval == dt.timedelta(seconds=1)
    assert by_id["reconcile"].trigger.interval == dt.timedelta(minutes=5)
    assert str(by_id["digest"].trigger.fields[5]) == "20"  # the hour field
    assert built[1:] == [new]


def test_a_reload_leaves_the_jobs_whose_schedule_did_not_change_alone(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """Rescheduling starts an interval afresh. A daemon reloaded every few minutes (a
    deploy tool, a cron job; the soak reloaded it every 6 s) never ran its 10-minute
    housekeeping, so its SQLite WAL was never truncated; reloaded within 15 s its heartbeat
    was never refreshed (`redline status`: "watcher: not running"), and reloaded within
    reconcile_minutes it never rescanned. A reload keeps the next run time of every job
    whose trigger is the same and moves only the one whose setting changed."""
    config = make_config(tmp_path, dispatch_seconds=7, reconcile_minutes=30)
    jobs = make_jobs(config)
    jobs.start(paused=True)

    def next_runs() -> dict[str, dt.datetime]:
        return {j.id: j.next_run_time for j in jobs.scheduler.get_jobs()}

    before = next_runs()
    for _ in range(3):
        threading.Event().wait(0.01)  # the clock moves on between the reloads
        jobs.reload(make_config(tmp_path, dispatch_seconds=7, reconcile_minutes=30))
    assert next_runs() == before
    jobs.reload(make_config(tmp_path, dispatch_seconds=7, reconcile_minutes=20))
    after = next_runs()
    assert after["reconcile"] < before["reconcile"]  # 20 minutes from the reload, not 30
    assert {k: v for k, v in after.items() if k != "reconcile"} == {
        k: v for k, v in before.items() if k != "reconcile"}


# ---- real scheduler: failures and wake-ups ---------------------------------------------------

def test_failing_job_logs_and_runs_again(make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """A dispatch run that raises is logged as job_failed and the next run still happens."""
    runner = Runner(fail_first=1)
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=0.1), dispatch=runner)
    with capture_logs() as logs:
        jobs.start()
        assert runner.wait_for(3)
    failed = [e for e in logs if e["event"] == "job_failed"]
    assert [e["job"] for e in failed] == ["dispatch"]
    assert jobs.failures == {"dispatch": 1}
    assert "recovered" in " ".join(e["event"] for e in logs)
    assert "dispatch" not in jobs.last_error


def test_database_error_in_a_job_is_reported_not_raised(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """An OperationalError in a job is logged with its database message and kept as the
    job's last error; the scheduler keeps running."""
    calls = threading.Semaphore(0)

    class Broken:
        def run_due(self) -> int:
            calls.release()
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the "
                                                                     "connection"))

    jobs = make_jobs(digest=Broken())
    with capture_logs() as logs:
        jobs.start()
        assert calls.acquire(timeout=TIMEOUT)
        with jobs._idle:
            assert jobs._idle.wait_for(lambda: "digest" in jobs.last_error, TIMEOUT)
    assert jobs.running
    assert jobs.last_error["digest"] == "database: server closed the connection"
    assert any(e["event"] == "job_failed" and e["job"] == "digest" for e in logs)


def test_wake_dispatch_runs_the_job_long_before_its_interval(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """With an hour between dispatch runs, wake_dispatch() still runs it at once."""
    runner = Runner()
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=3600), dispatch=runner)
    jobs.start()
    assert runner.wait_for(1)  # the run at start
    jobs.wake_dispatch()
    assert runner.wait_for(2)
    jobs.wake_dispatch()
    assert runner.wait_for(3)


def test_wake_during_a_running_dispatch_is_not_lost(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """Events committed while a dispatch run is in progress get a run of their own, even
    though only one instance of the job may run at a time."""
    runner = Runner(block_first=True)
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=3600), dispatch=runner)
    jobs.start()
    assert runner.wait_for(1)  # the first run is now blocked inside the runner
    jobs.wake_dispatch()
    runner.release.set()
    assert runner.wait_for(2)


def test_a_wake_during_a_running_dispatch_is_no_warning(
        make_jobs: Callable[..., Jobs], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """APScheduler warns that the woken dispatch was 'skipped' because one is running; it
    is not skipped (it runs next), so the journal must not say so at every commit that
    meets a running dispatch."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES

    runner = Runner(block_first=True)
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=3600), dispatch=runner)
    refused = threading.Event()
    jobs.scheduler.add_listener(lambda event: refused.set(), EVENT_JOB_MAX_INSTANCES)
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        jobs.start()
        assert runner.wait_for(1)  # the first run is now blocked inside the runner
        jobs.wake_dispatch()
        assert refused.wait(TIMEOUT)  # APScheduler turned the woken run away
        runner.release.set()
        assert runner.wait_for(2)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")] == []


def test_reconcile_job_asks_the_worker(make_jobs: Callable[..., Jobs]) -> None:
    """The reconcile job body hands a 'scheduled' request to the live worker."""
    asked: list[str] = []
    jobs = make_jobs(reconcile=asked.append)
    jobs.run_reconcile()
    assert asked == ["scheduled"]


def test_missing_notification_modules_leave_deliveries_pending(
        make_jobs: Callable[..., Jobs]) -> None:
    """Without a dispatcher or digest runner the jobs do nothing, and say so once."""
    with capture_logs() as logs:
        jobs = make_jobs()
    assert jobs.run_dispatch() == 0 and jobs.run_digest() == 0
    assert [e["event"] for e in logs] == ["notifications_unavailable"]


# ---- job bodies on both databases ---------------------------------------------------------------

def test_heartbeat_is_inserted_then_refreshed(engine: sa.Engine) -> None:
    """write_heartbeat inserts the instance's row once and refreshes it afterwards."""
    first = beat()
    write_heartbeat(engine, first)
    later = Heartbeat(first.instance, "host", 1, first.started_at,
                      first.seen_at + dt.timedelta(seconds=15), False, "stopped")
    write_heartbeat(engine, later)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(heartbeats)).all()
    assert len(rows) == 1
    assert rows[0].seen_at == later.seen_at
    assert (rows[0].watching, rows[0].status) == (False, "stopped")


def test_housekeeping_removes_old_heartbeats_only(engine: sa.Engine) -> None:
    """Heartbeats older than HEARTBEAT_KEEP are removed; recent ones stay."""
    now = dt.datetime(2026, 3, 10, tzinfo=UTC)
    write_heartbeat(engine, beat("old:1:a", now - HEARTBEAT_KEEP - dt.timedelta(hours=1)))
    write_heartbeat(engine, beat("new:1:b", now - dt.timedelta(hours=1)))
    result = housekeep(engine, now)
    assert result["heartbeats_removed"] == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(heartbeats.c.instance)).scalars().all() == ["new:1:b"]


def _resident_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def test_housekeeping_gives_memory_freed_by_threads_back(engine: sa.Engine) -> None:
    """Memory a thread that has ended allocated and freed stays resident in its glibc
    arena while anything above it is still in use: the daemon's short-lived threads made
    its resident size climb with every change, for as long as it ran. The housekeeping
    job gives those free pages back."""
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if not (libc and hasattr(ctypes.CDLL(libc), "malloc_trim")
            and Path("/proc/self/status").exists()):
        pytest.skip("needs glibc (malloc_trim) and /proc")
    kept: list[bytearray] = []

    def thread_that_comes_and_goes() -> None:
        blocks = [bytearray(4000) for _ in range(20_000)]  # 80 MB in this thread's arena
        kept.extend(blocks[::50])  # a few stay in use, spread over all of it

    worker = threading.Thread(target=thread_that_comes_and_goes)
    worker.start()
    worker.join()
    before = _resident_kib()
    result = housekeep(engine, dt.datetime(2026, 3, 10, tzinfo=UTC))
    assert result["memory_trimmed"] is True
    assert before - _resident_kib() > 40_000  # most of the 78 MB freed is given back
    assert len(kept) == 400


def test_housekeeping_truncates_the_sqlite_wal(tmp_path: Path) -> None:
    """On SQLite the housekeeping job checkpoints the WAL and truncates it to zero bytes."""
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    now = dt.datetime(2026, 3, 10, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(job_state.insert(), [
            {"name": f"k{i}", "value": {"i": i, "pad": "x" * 500}, "updated_at": now}
            for i in range(200)])
    wal = Path(f"{path}-wal")
    assert wal.stat().st_size > 0
    result = housekeep(engine, now)
    assert result["checkpoint_busy"] is False
    assert wal.stat().st_size == 0
    engine.dispose()


def test_housekeeping_on_postgresql_only_prunes(pg_url: str) -> None:
    """On PostgreSQL housekeeping does no SQLite work: it prunes (and trims memory)."""
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    result = housekeep(engine, dt.datetime.now(UTC))
    assert set(result) == {"heartbeats_removed", "memory_trimmed"}
    assert result["heartbeats_removed"] == 0
    engine.dispose()


def test_shutdown_waits_for_a_running_job(make_jobs: Callable[..., Jobs],
                                          tmp_path: Path) -> None:
    """shutdown() returns False while a job is still running past the timeout, True once
    it finished."""
    runner = Runner(block_first=True)
    jobs = make_jobs(make_config(tmp_path, dispatch_seconds=3600), dispatch=runner)
    jobs.start()
    assert runner.wait_for(1)
    assert jobs.shutdown(0.05) is False
    runner.release.set()
    assert jobs.shutdown(TIMEOUT) is True
    assert not jobs.running


@pytest.mark.parametrize(("cron", "fires_on"), [
    ("0 8 * * 1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0 8 * * 0", ["Sun"]),
    ("0 8 * * 7", ["Sun"]),
    ("0 8 * * 6,0", ["Sat", "Sun"]),
    ("0 8 * * 5-7", ["Fri", "Sat", "Sun"]),
    ("0 8 * * mon,wed", ["Mon", "Wed"]),
    ("0 8 * * */2", ["Sun", "Tue", "Thu", "Sat"]),
    ("0 8 * * *", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
])
def test_crontab_weekdays_mean_what_crontab_says(cron: str, fires_on: list[str]) -> None:
    """Weekday numbers follow crontab(5) (0 and 7 are Sunday), not APScheduler 3's
    Monday-first numbering."""
    trig = digest_trigger(ScheduleConfig(digest_cron=cron, timezone="UTC"))
    t = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a Sunday, after 08:00
    seen = []
    for _ in range(len(fires_on)):
        t = trig.get_next_fire_time(None, t + dt.timedelta(seconds=1))
        seen.append(t.strftime("%a"))
    assert sorted(seen) == sorted(fires_on)


def test_daemon_digest_periods_read_the_crontab_weekday_as_cron_does(tmp_path: Path) -> None:
    """The daemon's DigestRunner counts `0` as Sunday, like the digest job's trigger."""
    import datetime as dt

    from daemon.config import parse_config
    from daemon.jobs import default_digest
    from daemon.store.engine import make_engine

    config = parse_config({"schedule": {"digest_cron": "0 8 * * 0"}}, tmp_path, {})
    runner = default_digest(make_engine(f"sqlite:///{tmp_path / 'r.db'}"), config,
                            lambda: dt.datetime.now(dt.UTC), "test")
    assert runner is not None
    boundary = runner.schedule.next_after(dt.datetime(2026, 11, 25, tzinfo=dt.UTC))
    assert boundary == dt.datetime(2026, 11, 29, 8, tzinfo=dt.UTC)
    assert boundary.weekday() == 6  # Sunday


def test_a_digest_retry_moves_the_digest_job_earlier_never_later(
        make_jobs: Callable[..., Jobs], tmp_path: Path) -> None:
    """A failed digest's retry time runs the digest job then when it comes before the next
    cron time; a retry after the cron time leaves the cron time; one already past is looked
    at again later, not at once."""
    jobs = make_jobs(make_config(tmp_path, digest_cron="0 8 * * *"))
    jobs.start(paused=True)
    job = jobs.scheduler.get_job("digest")
    cron_time = job.trigger.get_next_fire_time(None, dt.datetime.now(UTC))
    jobs.scheduler.modify_job("digest", next_run_time=cron_time)  # as after the start run

    now = dt.datetime.now(UTC)
    assert jobs.schedule_digest_retry(now + dt.timedelta(seconds=5)) is True
    moved = jobs.scheduler.get_job("digest").next_run_time
    assert now + dt.timedelta(seconds=4.9) <= moved <= now + dt.timedelta(seconds=10)

    jobs.scheduler.modify_job("digest", next_run_time=cron_time)
    assert jobs.schedule_digest_retry(cron_time + dt.timedelta(hours=1)) is False
    assert jobs.scheduler.get_job("digest").next_run_time == cron_time

    now = dt.datetime.now(UTC)
    assert jobs.schedule_digest_retry(now - dt.timedelta(seconds=5)) is True
    assert jobs.scheduler.get_job("digest").next_run_time >= now + dt.timedelta(seconds=29)

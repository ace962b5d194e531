"""Tests for daemon.notify.digest: one message per digest_cron period, exactly once, with the
watermark in the database; real receivers, real events, a clock moved by hand."""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from notify_support import (
    FakeClock,
    HttpReceiver,
    SmtpReceiver,
    config_for,
    copy_statements,
    edit_one_word,
    ingestor,
    rows,
    wait_until,
)

from daemon.jobs import Heartbeat, Jobs, default_digest, default_dispatch
from daemon.notify.digest import DigestRunner, DigestSchedule

UTC = dt.UTC
# 08:00 in New York is 13:00 UTC in early March 2026 (EST)
SCHEDULE = 'digest_cron = "0 8 * * *"\ntimezone = "America/New_York"'
MAR2_0930 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def digest_webhook(url: str, **keys: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return (f'[[channels]]\nname = "daily"\ntype = "webhook"\nurl = "{url}"\n'
            f'mode = "digest"\n{extra}\n')


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_each_period_is_digested_once_across_a_restart(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """Events are listed in the digest of the period they occurred in, each digest is sent
    once, and a new runner on the same database (a restart) repeats nothing."""
    clock = FakeClock(MAR2_0930)
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url), schedule=SCHEDULE)
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(p) for p in paths])          # period ending Mar 2 13:00 UTC
        assert DigestRunner(engine, config, clock).run_due() == 0  # that period is not over
        clock.set(at(2, 14))
        edit_one_word(paths[0])
        ing.process_paths([str(paths[0])])                  # period ending Mar 3 13:00 UTC
        runner = DigestRunner(engine, config, clock)
        assert runner.run_due() == 1
        assert runner.run_due() == 0
        assert DigestRunner(engine, config, clock).run_due() == 0  # restart: no repeat
        clock.set(at(3, 13, 0) + dt.timedelta(seconds=1))
        assert DigestRunner(engine, config, clock).run_due() == 1
        assert DigestRunner(engine, config, clock).run_due() == 0
        got = rx.wait_for(2)
    assert len(got) == 2
    first, second = (json.loads(r.body) for r in got)
    assert all(r.headers["X-Redline-Event"] == "digest" for r in got)
    assert first["type"] == "digest" and first["until"] == "2026-03-02T13:00:00Z"
    assert first["since"] == "2026-03-01T13:00:00Z"
    assert [e["kind"] for e in first["events"]] == ["added", "added"]
    assert first["counts"] == {"added": 2, "total": 2}
    assert (second["since"], second["until"]) == ("2026-03-02T13:00:00Z", "2026-03-03T13:00:00Z")
    assert [e["kind"] for e in second["events"]] == ["revised"]
    assert second["events"][0]["diff"]["words"]
    assert {r[0] for r in rows(engine, "SELECT status FROM delivery_status")} == {"delivered"}
    assert got[0].headers["X-Redline-Delivery"] != got[1].headers["X-Redline-Delivery"]


def test_periods_missed_while_down_are_each_sent(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """Back after two periods ended, the runner sends one digest per period, in order, each
    with its own events; an empty period between them sends nothing."""
    clock = FakeClock(MAR2_0930)
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url), schedule=SCHEDULE)
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(paths[0])])                  # period ending Mar 2
        clock.set(at(4, 10))
        ing.process_paths([str(paths[1])])                  # period ending Mar 4 (Mar 3 empty)
        clock.set(at(5, 9))
        assert DigestRunner(engine, config, clock).run_due() == 2
        got = rx.wait_for(2)
    bodies = [json.loads(r.body) for r in got]
    assert [b["until"] for b in bodies] == ["2026-03-02T13:00:00Z", "2026-03-04T13:00:00Z"]
    assert [len(b["events"]) for b in bodies] == [1, 1]
    # the empty period moved the watermark: each digest spans exactly its own period
    assert [b["since"] for b in bodies] == ["2026-03-01T13:00:00Z", "2026-03-03T13:00:00Z"]


def test_an_empty_period_sends_nothing_and_moves_the_watermark(
        engine: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """No events: nothing is sent, and the stored watermark is the last period end."""
    clock = FakeClock(MAR2_0930)
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url), schedule=SCHEDULE)
        assert DigestRunner(engine, config, clock).run_due() == 0
        clock.set(at(4, 14))
        assert DigestRunner(engine, config, clock).run_due() == 0
        assert rx.requests == []
    (value,) = rows(engine, "SELECT value FROM job_state WHERE name = 'digest:daily'")[0]
    state = json.loads(value) if isinstance(value, str) else value
    assert state == {"until": "2026-03-04T13:00:00Z"}


def test_a_failed_digest_is_retried_with_backoff_then_sent_once(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A receiver failing once: the digest is retried after backoff_seconds with the same
    delivery id and the same events; the deliveries record both attempts."""
    clock = FakeClock(MAR2_0930)
    with HttpReceiver(statuses=[503]) as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url, backoff_seconds=60),
                            schedule=SCHEDULE)
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        clock.set(at(2, 14))
        runner = DigestRunner(engine, config, clock, rand=lambda: 0.0)
        assert runner.run_due() == 0
        assert rows(engine, "SELECT status, attempts FROM delivery_status")[0] == ("failed", 1)
        clock.advance(59)
        assert DigestRunner(engine, config, clock).run_due() == 0  # not yet
        clock.advance(1)
        assert DigestRunner(engine, config, clock).run_due() == 1
        got = rx.wait_for(2)
    assert len(got) == 2
    assert got[0].body == got[1].body
    assert got[0].headers["X-Redline-Delivery"] == got[1].headers["X-Redline-Delivery"]
    assert rows(engine, "SELECT status, attempts FROM delivery_status")[0] == ("delivered", 2)


def test_the_digest_job_retries_a_failed_digest_after_the_backoff_not_the_next_cron_time(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """The daemon's jobs on a real scheduler, the real runner and a receiver failing once:
    the digest sent at start fails and is sent again about backoff_seconds later, not at
    the next 08:00; the digest job then waits for its cron time again."""
    now = dt.datetime.now(UTC)
    with HttpReceiver(statuses=[503]) as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url, backoff_seconds=1),
                            schedule='digest_cron = "0 8 * * *"\ntimezone = "UTC"')
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        # an event two days ago: its period has ended whatever the time of day
        ingestor(engine, config, FakeClock(now - dt.timedelta(days=2))).process_paths(
            [str(path)])
        jobs = Jobs(config, engine, instance_id="test:1:x", request_reconcile=lambda r: None,
                    heartbeat=lambda: Heartbeat("test:1:x", "test", 1, now, now, True, ""),
                    dispatch_factory=default_dispatch, digest_factory=default_digest)
        try:
            jobs.start()                     # the digest job runs at start
            first, second = rx.wait_for(2, 30)
            wait_until(lambda: rows(engine, "SELECT status, attempts FROM delivery_status")
                       == [("delivered", 2)], 10, "the retried digest recorded")
            job = jobs.scheduler.get_job("digest")
            back_to_cron = job.next_run_time == job.trigger.get_next_fire_time(
                None, dt.datetime.now(UTC))
        finally:
            jobs.shutdown(5)
    assert 0.7 <= second.at - first.at < 20  # 0.75-1 s of backoff, not the next 08:00
    assert first.body == second.body
    assert first.headers["X-Redline-Delivery"] == second.headers["X-Redline-Delivery"]
    assert back_to_cron


def test_an_email_digest_is_one_message(engine: sa.Engine, db_url: str, sample: Path,
                                        tmp_path: Path) -> None:
    """An email channel in digest mode gets one message listing every event of the period,
    with a text and an HTML part."""
    clock = FakeClock(MAR2_0930)
    with SmtpReceiver() as smtp:
        channel = (f'[[channels]]\nname = "desk"\ntype = "email"\nhost = "127.0.0.1"\n'
                   f'port = {smtp.port}\nstarttls = false\nfrom = "r@example.org"\n'
                   f'to = ["desk@example.org"]\nmode = "digest"\n')
        config = config_for(tmp_path, db_url, channel, schedule=SCHEDULE)
        paths = copy_statements(sample, tmp_path / "statements", 3)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        clock.set(at(2, 14))
        assert DigestRunner(engine, config, clock).run_due() == 1
        (msg,) = smtp.wait_for(1)
    assert msg["Subject"] == "[redline] digest: 3 changes until 2026-03-02T13:00:00Z"
    plain = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    titles = [r[0] for r in rows(engine, "SELECT title FROM current_statements")]
    assert plain.count("added: ") == 3 and html.count("<h3>added: ") == 3
    assert all(t.split()[0] in plain for t in titles)


def test_only_one_instance_sends_a_digest(engine: sa.Engine, db_url: str, sample: Path,
                                          tmp_path: Path) -> None:
    """On PostgreSQL a second instance running while the first is sending sends nothing."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite deployments run a single instance")
    clock = FakeClock(MAR2_0930)
    with HttpReceiver(hold=True) as rx:
        config = config_for(tmp_path, db_url, digest_webhook(rx.url), schedule=SCHEDULE)
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        clock.set(at(2, 14))
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(DigestRunner(engine, config, clock).run_due()))
        first.start()
        rx.wait_for(1)                       # the first instance is sending, lock held
        assert DigestRunner(engine, config, clock).run_due() == 0
        rx.release()
        first.join(10)
    assert results == [1] and len(rx.requests) == 1


def test_schedule_boundaries_follow_the_time_zone() -> None:
    """Period ends are cron times in the configured zone, across a DST change."""
    s = DigestSchedule("0 8 * * *", "America/New_York")
    assert s.next_after(at(2, 13)) == at(3, 13)
    assert s.last_at_or_before(at(2, 13)) == at(2, 13)
    assert s.last_at_or_before(at(2, 12, 59)) == at(1, 13)
    # DST starts on Mar 8 2026 in New York: 08:00 EDT is 12:00 UTC
    assert s.next_after(at(8, 0)) == at(8, 12)
    hourly = DigestSchedule("0 * * * *", "UTC")
    assert hourly.last_at_or_before(at(2, 9, 30)) == at(2, 9)


def test_a_time_of_day_in_the_hour_the_clocks_repeat_ends_one_period_not_two() -> None:
    """On 1 Nov 2026 New York's clocks go back from 02:00 EDT to 01:00 EST, so 01:30 comes
    twice (05:30 and 06:30 UTC). A daily digest at 01:30 ends its period once that day, as
    crontab(5) runs such a job (a second, one-hour digest was sent); a schedule whose hour
    is `*` follows real time and ends a period at both."""
    nov = functools.partial(dt.datetime, 2026, 11, tzinfo=dt.UTC)
    daily = DigestSchedule("30 1 * * *", "America/New_York")
    assert daily.next_after(nov(1, 0)) == nov(1, 5, 30)
    assert daily.next_after(nov(1, 5, 30)) == nov(2, 6, 30)
    assert daily.last_at_or_before(nov(1, 6, 45)) == nov(1, 5, 30)
    assert daily.last_at_or_before(nov(2, 7)) == nov(2, 6, 30)
    hourly = DigestSchedule("30 * * * *", "America/New_York")
    assert hourly.next_after(nov(1, 5, 30)) == nov(1, 6, 30)
    assert hourly.last_at_or_before(nov(1, 6, 45)) == nov(1, 6, 30)

"""Tests for daemon.notify.dispatch with the webhook channel: real HTTP receivers on
127.0.0.1, real events from real files, on SQLite and PostgreSQL; only the clock is fake."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from notify_support import (
    START,
    FakeClock,
    HttpReceiver,
    TrickleReceiver,
    closed_port,
    config_for,
    copy_statements,
    edit_one_word,
    ingestor,
    rows,
    wait_until,
)

from daemon.config import ChannelConfig
from daemon.notify import ledger
from daemon.notify.dispatch import Dispatcher
from daemon.notify.webhook import parse_retry_after, signature
from daemon.store.schema import UTCDateTime, deliveries

SECRET = "s3cret-for-tests"


def webhook(name: str, url: str, **keys: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    return f'[[channels]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n{extra}\n'


def status_of(engine: sa.Engine, channel: str) -> list[sa.Row]:
    """The channel's rows of the SPEC §4 delivery_status view, times as aware datetimes."""
    query = sa.text("SELECT event_id, status, attempts, last_error, next_attempt_at, "
                    "delivered_at FROM delivery_status WHERE channel = :c ORDER BY event_id"
                    ).columns(next_attempt_at=UTCDateTime, delivered_at=UTCDateTime)
    with engine.connect() as conn:
        return list(conn.execute(query, {"c": channel}))


def test_fails_twice_then_accepts_with_one_delivery_id_and_valid_signatures(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A receiver answering 500, 500, then 200 gets three POSTs of the same SPEC §7 body with
    the same delivery id and a valid signature; the row records three attempts, the backoff
    between them, and the delivery time."""
    clock = FakeClock()
    with HttpReceiver(statuses=[500, 500]) as rx:
        config = config_for(tmp_path, db_url, webhook(
            "newsroom", rx.url, secret_env="HOOK_SECRET", kinds=["revised"],
            backoff_seconds=2, max_attempts=5), environ={"HOOK_SECRET": SECRET})
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(path)])
        old_word = edit_one_word(path, "Zanzibar")
        ing.process_paths([str(path)])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1", rand=lambda: 0.0)
        try:
            assert d.dispatch_due(wait=10) == 1
            (row,) = status_of(engine, "newsroom")
            assert (row.status, row.attempts) == ("failed", 1)
            assert "HTTP 500" in row.last_error
            assert row.next_attempt_at == clock.now + dt.timedelta(seconds=2)
            assert d.dispatch_due(wait=10) == 0  # not due yet: nothing is sent
            clock.advance(2)
            assert d.dispatch_due(wait=10) == 1
            (row,) = status_of(engine, "newsroom")
            assert (row.status, row.attempts) == ("failed", 2)
            clock.advance(3)
            assert d.dispatch_due(wait=10) == 0  # the second retry waits 4 s, not 2
            clock.advance(1)
            assert d.dispatch_due(wait=10) == 1
        finally:
            d.close()
        got = rx.wait_for(3)
    (row,) = status_of(engine, "newsroom")
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    assert row.delivered_at == clock.now
    assert len(got) == 3
    ids = {r.headers["X-Redline-Delivery"] for r in got}
    assert len(ids) == 1
    for r in got:
        expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(r.headers["X-Redline-Signature-256"], expected)
        assert r.headers["X-Redline-Event"] == "revised"
        assert r.headers["Content-Type"] == "application/json"
    body = json.loads(got[-1].body)
    assert body["kind"] == "revised" and body["revision"] == 2
    assert body["statement"]["source_url"].startswith("https://")
    ops = {(w["op"], w["text"].strip()) for w in body["diff"]["words"]}
    assert ("delete", old_word) in ops and ("insert", "Zanzibar") in ops


def test_closed_port_goes_dead_while_other_channels_are_delivered(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A channel whose receiver is down retries with backoff and goes dead after
    max_attempts; the healthy channel gets every event on the first pass."""
    clock = FakeClock()
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, webhook("good", rx.url) + webhook(
            "down", f"http://127.0.0.1:{closed_port()}/", max_attempts=3, backoff_seconds=1))
        paths = copy_statements(sample, tmp_path / "statements", 3)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1", rand=lambda: 0.0)
        try:
            d.dispatch_due(wait=10)
            rx.wait_for(3)
            assert {r.status for r in status_of(engine, "good")} == {"delivered"}
            for _ in range(6):
                clock.advance(60)
                d.dispatch_due(wait=10)
        finally:
            d.close()
        assert len(rx.requests) == 3  # delivered once each, never again
    down = status_of(engine, "down")
    assert [(r.status, r.attempts) for r in down] == [("dead", 3)] * 3
    assert all("cannot reach the receiver" in r.last_error for r in down)
    assert all(r.next_attempt_at is None and r.delivered_at is None for r in down)


def test_a_hanging_receiver_does_not_delay_other_channels(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """While one channel's receiver holds its request unanswered, the other channel's
    deliveries all arrive; the held one completes once its receiver answers."""
    clock = FakeClock()
    with HttpReceiver(hold=True) as slow, HttpReceiver() as fast:
        config = config_for(tmp_path, db_url, webhook("slow", slow.url, timeout_seconds=30)
                            + webhook("fast", fast.url))
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due()  # returns at once: the workers deliver
            slow.wait_for(1)
            fast.wait_for(2)
            wait_until(lambda: [r.status for r in status_of(engine, "fast")] == [
                "delivered", "delivered"], what="the fast channel's deliveries")
            assert len(slow.requests) == 1  # still held
            assert [r.status for r in status_of(engine, "slow")] == ["pending", "pending"]
            slow.release()
            assert d.wait_idle(10)
        finally:
            d.close()
    assert [r.status for r in status_of(engine, "slow")] == ["delivered", "delivered"]


def test_a_timeout_fails_the_attempt_and_pauses_the_channel(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A receiver that never answers fails the attempt at timeout_seconds; the channel's next
    delivery is not tried until the retry time (no timeout paid per delivery)."""
    clock = FakeClock()
    with HttpReceiver(hold=True) as slow:
        config = config_for(tmp_path, db_url, webhook("slow", slow.url, timeout_seconds=0.5))
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due(wait=10)
            d.dispatch_due(wait=10)
        finally:
            d.close()
        assert len(slow.requests) == 1
    rows_ = status_of(engine, "slow")
    assert [(r.status, r.attempts) for r in rows_] == [("failed", 1), ("pending", 0)]
    assert "timed out" in rows_[0].last_error


def test_a_receiver_trickling_its_answer_is_given_up_at_timeout_seconds(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """timeout_seconds limits the whole attempt, not each read: a receiver that answers a
    byte at a time (each read well within the timeout) and never finishes fails the attempt
    and pauses the channel, instead of holding it for ever."""
    clock = FakeClock()
    with TrickleReceiver() as slow:
        config = config_for(tmp_path, db_url, webhook("slow", slow.url, timeout_seconds=1))
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            # the answer never ends: the worker going idle at all proves the limit
            d.dispatch_due(wait=30)
            assert d.wait_idle(0)
        finally:
            d.close()
        assert slow.requests == 1
    rows_ = status_of(engine, "slow")
    assert [(r.status, r.attempts) for r in rows_] == [("failed", 1), ("pending", 0)]
    assert "timed out" in rows_[0].last_error


def test_notify_test_gives_up_on_a_trickling_receiver(tmp_path: Path, db_url: str) -> None:
    """`redline notify test` reports the channel as failed (timed out) instead of hanging."""
    from click.testing import CliRunner

    from daemon.cli import cli

    with TrickleReceiver() as slow:
        config = config_for(tmp_path, db_url, webhook("slow", slow.url, timeout_seconds=1))
        result = CliRunner().invoke(cli, ["--config", str(config.path), "notify", "test",
                                          "--json"])
        assert slow.requests == 1
    assert result.exit_code == 1, result.output
    (got,) = json.loads(result.output)
    assert got["ok"] is False and "timed out" in got["error"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_and_pauses_the_channel(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path, status: int) -> None:
    """A receiver answering 429 (or 503) with Retry-After: 120 is left alone for 120 s,
    not retried after the 1 s backoff; the channel's other deliveries wait too."""
    clock = FakeClock()
    with HttpReceiver(statuses=[status], failure_headers={"Retry-After": "120"}) as rx:
        config = config_for(tmp_path, db_url, webhook("busy", rx.url, backoff_seconds=1,
                                                      max_attempts=3))
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due(wait=10)
            first = status_of(engine, "busy")
            clock.advance(60)
            d.dispatch_due(wait=10)
            assert len(rx.requests) == 1
            clock.advance(61)
            d.dispatch_due(wait=10)
        finally:
            d.close()
        assert len(rx.requests) == 3
    assert [(r.status, r.attempts) for r in first] == [("failed", 1), ("pending", 0)]
    assert first[0].next_attempt_at == START + dt.timedelta(seconds=120)
    assert "Retry-After: 120 s" in first[0].last_error
    assert [r.status for r in status_of(engine, "busy")] == ["delivered", "delivered"]


def test_retry_after_is_capped_at_backoff_max_and_read_as_a_date() -> None:
    now = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
    assert parse_retry_after("Mon, 02 Mar 2026 09:32:30 GMT", now) == 150
    assert parse_retry_after("Mon, 02 Mar 2026 09:00:00 GMT", now) == 0
    assert parse_retry_after(" 30 ") == 30
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    ch = ChannelConfig(name="x", type="webhook", backoff_seconds=2, backoff_max_seconds=600)
    assert ledger.retry_delay(ch, 1, 86400, rand=lambda: 0.0) == 600
    assert ledger.retry_delay(ch, 1, 1, rand=lambda: 0.0) == 2


def test_410_gone_is_dead_at_once(engine: sa.Engine, db_url: str, sample: Path,
                                  tmp_path: Path) -> None:
    """A receiver answering 410 Gone is not retried."""
    clock = FakeClock()
    with HttpReceiver(default_status=410) as rx:
        config = config_for(tmp_path, db_url, webhook("gone", rx.url, max_attempts=8))
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due(wait=10)
            clock.advance(7200)
            d.dispatch_due(wait=10)
        finally:
            d.close()
        assert len(rx.requests) == 1
    (row,) = status_of(engine, "gone")
    assert (row.status, row.attempts) == ("dead", 1) and "410" in row.last_error


def test_two_instances_deliver_each_event_exactly_once(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """Two dispatchers on one database, racing: every delivery is taken by exactly one."""
    clock = FakeClock()
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, webhook("hook", rx.url))
        paths = copy_statements(sample, tmp_path / "statements", 20)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        a = Dispatcher(engine, config, clock=clock, instance_id="host-a:1", batch_size=3)
        b = Dispatcher(engine, config, clock=clock, instance_id="host-b:1", batch_size=3)
        try:
            go = threading.Barrier(2)

            def run(d: Dispatcher) -> None:
                go.wait()
                d.dispatch_due(wait=20)

            threads = [threading.Thread(target=run, args=(x,)) for x in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            a.close()
            b.close()
        got = rx.wait_for(20)
        assert len(got) == 20
    assert len({r.headers["X-Redline-Delivery"] for r in got}) == 20
    assert len({json.loads(r.body)["event_id"] for r in got}) == 20
    assert {r.status for r in status_of(engine, "hook")} == {"delivered"}


def test_claims_of_a_killed_process_are_released_and_foreign_claims_expire(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A claim left by a process of this host that is gone is dropped at start; a claim of
    another host is respected until it expires."""
    clock = FakeClock()
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, webhook("hook", rx.url))
        paths = copy_statements(sample, tmp_path / "statements", 2)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock)
        host = d.instance_id.rpartition(":")[0]
        with engine.begin() as conn:
            dead_pid = 2 ** 22 + 12345  # above pid_max: no such process
            ledger.claim(conn, "hook", f"{host}:{dead_pid}", clock.now,
                         dt.timedelta(hours=1), 1)
            ledger.claim(conn, "hook", "elsewhere:1", clock.now,
                         dt.timedelta(seconds=600), 1)
        try:
            d.dispatch_due(wait=10)
            rx.wait_for(1)
            assert len(rx.requests) == 1  # the other host's claim still holds
            clock.advance(601)
            d.dispatch_due(wait=10)
            rx.wait_for(2)
        finally:
            d.close()
    assert {r.status for r in status_of(engine, "hook")} == {"delivered"}


def test_backoff_doubles_caps_and_jitters_down() -> None:
    """The retry delay doubles from backoff_seconds, stops at backoff_max_seconds, and jitter
    only shortens it by up to a quarter."""
    ch = ChannelConfig("c", "webhook", backoff_seconds=2, backoff_max_seconds=60)
    assert [ledger.backoff_delay(ch, n, lambda: 0.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [
        2, 4, 8, 16, 32, 60, 60]
    assert ledger.backoff_delay(ch, 3, lambda: 1.0) == 6.0
    assert ledger.backoff_delay(ch, 500, lambda: 0.0) == 60


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    """The signature header verifies with the standard library in a few lines."""
    raw = b'{"event_id":1}'
    expected = hmac.new(b"k", raw, hashlib.sha256).hexdigest()
    assert signature("k", raw) == f"sha256={expected}"


@pytest.mark.parametrize("status", [301, 404, 503])
def test_non_2xx_is_a_failure(engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path,
                              status: int) -> None:
    """Redirects and errors are failures to retry (only 2xx is success)."""
    clock = FakeClock()
    with HttpReceiver(default_status=status) as rx:
        config = config_for(tmp_path, db_url, webhook("hook", rx.url))
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due(wait=10)
        finally:
            d.close()
    (row,) = status_of(engine, "hook")
    assert (row.status, row.attempts) == ("failed", 1)
    assert f"HTTP {status}" in row.last_error


def test_close_lets_the_attempt_in_flight_finish_and_gives_back_the_rest(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """close() returns at once if asked to; the attempt in flight still completes and is
    recorded, and the rest of the claimed batch is released unattempted."""
    clock = FakeClock()
    with HttpReceiver(hold=True) as rx:
        config = config_for(tmp_path, db_url, webhook("hook", rx.url))
        paths = copy_statements(sample, tmp_path / "statements", 3)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        d.dispatch_due()
        rx.wait_for(1)
        d.close(timeout=0)
        rx.release()
        assert d.wait_idle(10)
        assert len(rx.requests) == 1
    assert [r.status for r in status_of(engine, "hook")] == ["delivered", "pending", "pending"]
    with engine.connect() as conn:
        claimed = conn.execute(sa.text(
            "SELECT count(*) FROM deliveries WHERE claimed_by IS NOT NULL")).scalar_one()
    assert claimed == 0


def test_a_delivery_sent_while_the_database_goes_away_is_recorded_when_it_is_back(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """The receiver takes the POST; before the dispatcher can record it, PostgreSQL stops
    accepting connections to the database. Once it accepts them again, the next dispatch
    records the delivery as delivered at the time it was sent — it is not left claimed
    until the claim expires and then sent a second time."""
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    database = engine.url.database
    admin = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    clock = FakeClock()
    try:
        with HttpReceiver(hold=True) as rx:
            config = config_for(tmp_path, pg_url, webhook("hook", rx.url))
            (path,) = copy_statements(sample, tmp_path / "statements", 1)
            ingestor(engine, config, clock).process_paths([str(path)])
            sent_at = clock.now
            d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
            try:
                d.dispatch_due()
                rx.wait_for(1)  # sent, not yet answered: the database goes away now
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{database}'")
                rx.release()
                assert d.wait_idle(10)
                clock.advance(5)
                assert d.dispatch_due(wait=10) == 0  # still away: nothing claimed or sent
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                clock.advance(5)
                assert d.dispatch_due(wait=10) == 0  # recorded, not sent again
            finally:
                d.close()
            assert len(rx.requests) == 1
        (row,) = status_of(engine, "hook")
        assert (row.status, row.attempts, row.delivered_at) == ("delivered", 1, sent_at)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM deliveries "
                                        "WHERE claimed_by IS NOT NULL")).scalar_one() == 0
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.dispose()
        engine.dispose()


def test_a_database_outage_is_logged_once_per_channel_not_at_every_dispatch(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """While the database is away, every dispatch (each `dispatch_seconds`, for hours
    maybe) finds it away again. That is said once per channel, a warning without a
    traceback, and once more when a claim gets through again; it was a
    `delivery_worker_failed` error with a 7 KB traceback per channel at every dispatch
    (260 MB of log a day for two channels)."""
    from structlog.testing import capture_logs

    from daemon.store import migrate
    from daemon.store.engine import make_engine

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    database = engine.url.database
    admin = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    clock = FakeClock()
    try:
        with HttpReceiver() as rx:
            config = config_for(tmp_path, pg_url, webhook("hook", rx.url) + (
                '[[channels]]\nname = "archive"\ntype = "jsonl"\npath = "events.jsonl"\n'))
            (path,) = copy_statements(sample, tmp_path / "statements", 1)
            ingestor(engine, config, clock).process_paths([str(path)])
            d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{database}'")
                with capture_logs() as logs:
                    for _ in range(5):  # the scheduled dispatches meanwhile
                        clock.advance(5)
                        d.wake()
                        assert d.wait_idle(10)
                    with admin.connect() as conn:
                        conn.exec_driver_sql(
                            f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                    clock.advance(5)
                    assert d.dispatch_due(wait=10) == 2
            finally:
                d.close()
            assert len(rx.requests) == 1
        said = sorted((e["event"], e["channel"]) for e in logs
                      if e["log_level"] in ("info", "warning", "error"))
        assert said == [("delivery_database_reachable", "archive"),
                        ("delivery_database_reachable", "hook"),
                        ("delivery_database_unreachable", "archive"),
                        ("delivery_database_unreachable", "hook")]
        assert not any("exc_info" in e for e in logs)
        assert len([e for e in logs if e["event"] == "delivery_database_unreachable"]) == 10
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.dispose()
        engine.dispose()


def test_claims_the_dispatcher_could_not_give_back_are_given_back_when_the_database_is(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """The dispatcher has claimed two deliveries and waits to read their events (held by a
    table lock); then PostgreSQL drops every connection and refuses new ones, so it can
    neither read the events nor give the claims back. Once the database accepts connections
    again, the next dispatch gives the claims back and sends both, each once — within
    seconds, not after the claims' lease (310 s here). A PostgreSQL restart in the middle of
    a burst left deliveries claimed like this in the multi-instance restart test."""
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    database = engine.url.database
    admin = sa.create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    locker = sa.create_engine(engine.url, poolclass=sa.pool.NullPool).connect()
    clock = FakeClock()

    def claimed_by() -> list[str | None]:
        return [r.claimed_by for r in rows(engine, "SELECT claimed_by FROM deliveries ORDER BY id")]

    def waiting_on_the_lock() -> bool:
        with admin.connect() as conn:
            return bool(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s "
                "AND wait_event_type = 'Lock'", {"db": database}).scalar_one())

    try:
        with HttpReceiver() as rx:
            config = config_for(tmp_path, pg_url, webhook("hook", rx.url))
            paths = copy_statements(sample, tmp_path / "statements", 2)
            ingestor(engine, config, clock).process_paths([str(p) for p in paths])
            d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
            try:
                locker.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
                d.dispatch_due()
                wait_until(waiting_on_the_lock, 10, "the dispatcher to wait for the events")
                assert claimed_by() == ["test:1", "test:1"]
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{database}'")
                assert d.wait_idle(10)
                clock.advance(5)
                assert d.dispatch_due(wait=10) == 0  # still away: nothing claimed or sent
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                assert claimed_by() == ["test:1", "test:1"]  # not given back while away
                clock.advance(5)
                assert d.dispatch_due(wait=10) == 2
                assert d.dispatch_due(wait=10) == 0
            finally:
                d.close()
            assert len({json.loads(r.body)["event_id"] for r in rx.requests}) == 2
            assert len(rx.requests) == 2
        assert [r.status for r in status_of(engine, "hook")] == ["delivered", "delivered"]
        assert claimed_by() == [None, None]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        locker.invalidate()
        admin.dispose()
        engine.dispose()


def test_each_event_body_is_built_once_across_channels_and_retries(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a body (the word diff above all) is most of a delivery's work. Channel
    workers woken together by one commit must not each build the same bodies (seen: 825
    builds for 300 events and four channels, a 300-file burst taking 2.7 s after its last
    commit instead of 1.7 s), and a retry reuses the body too: each event's body is built
    once."""
    from daemon.notify import dispatch as dispatch_module

    built: list[int] = []
    real = dispatch_module.event_bodies

    def counting(conn: sa.Connection, event_ids: list[int], *args: object) -> dict:
        ids = list(event_ids)
        built.extend(ids)
        # a build takes this long: the workers woken together are all at work by then
        threading.Event().wait(0.2)
        return real(conn, ids, *args)

    monkeypatch.setattr(dispatch_module, "event_bodies", counting)
    clock = FakeClock()
    with HttpReceiver() as a, HttpReceiver() as b, HttpReceiver(statuses=[500, 500]) as c:
        config = config_for(tmp_path, db_url, webhook("a", a.url) + webhook("b", b.url)
                            + webhook("c", c.url, backoff_seconds=1)
                            + f'[[channels]]\nname = "log"\ntype = "jsonl"\n'
                              f'path = "{tmp_path / "events.jsonl"}"\n')
        paths = copy_statements(sample, tmp_path / "statements", 5)
        ingestor(engine, config, clock).process_paths([str(p) for p in paths])
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1", rand=lambda: 0.0)
        try:
            d.dispatch_due(wait=10)
            for _ in range(3):  # channel c's retries
                clock.advance(10)
                d.dispatch_due(wait=10)
        finally:
            d.close()
        a.wait_for(5)
        b.wait_for(5)
        c.wait_for(7)
    assert {r.status for ch in "abc" for r in status_of(engine, ch)} == {"delivered"}
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 5
    assert sorted(built) == [r.event_id for r in status_of(engine, "a")]


def test_a_word_diff_is_computed_once_between_recording_and_sending(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Recording a revised event computes its word diff (its counts and summary); sending
    it needs the same word diff for its body, moments later in the same process: it is
    computed once (seen: twice, the second most of the time of a burst's deliveries, 1.5-2 s
    after the last commit of 300 edited statements instead of 0.5 s). A metadata or
    formatting event changes no word: its body needs no word diff at all."""
    from daemon import diffs

    computed: list[str] = []
    real = diffs._compute_word_diff

    def counting(*args: str) -> tuple:
        computed.append(args[3])
        return real(*args)

    monkeypatch.setattr(diffs, "_compute_word_diff", counting)
    diffs.clear_memo()
    clock = FakeClock()
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, webhook("all", rx.url, kinds=[
            "added", "revised", "metadata", "formatting", "deleted", "restored"]))
        paths = copy_statements(sample, tmp_path / "statements", 3)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(p) for p in paths])
        for path in paths[:2]:
            edit_one_word(path)
        text = paths[2].read_text(encoding="utf-8")
        paths[2].write_text(text.replace("\ntitle:", "\nextra_key: added\ntitle:", 1),
                            encoding="utf-8")
        ing.process_paths([str(p) for p in paths])
        assert len(computed) == 2  # the two revised events, recorded
        d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
        try:
            d.dispatch_due(wait=10)
        finally:
            d.close()
        got = rx.wait_for(6)
    kinds = sorted(json.loads(r.body)["kind"] for r in got)
    assert kinds == ["added"] * 3 + ["metadata"] + ["revised"] * 2
    revised = [json.loads(r.body) for r in got if json.loads(r.body)["kind"] == "revised"]
    assert all(("insert", "Zanzibar") in {(w["op"], w["text"].strip())
                                          for w in b["diff"]["words"]} for b in revised)
    assert len(computed) == 2


def test_claims_of_a_process_of_this_host_that_dies_later_are_released_soon(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """Two instances on one host (one per watched tree): one dies holding claims while the
    other runs. The survivor gives those claims back within a minute and delivers them.
    Before, only a dispatcher's first dispatch looked for claims of dead processes, so
    the survivor left them until they expired (`timeout_seconds` × 25 + 60 s): seen with
    two `redline run` on one PostgreSQL database, one killed -9 in the middle of a burst
    (25 deliveries sent five minutes late)."""
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:0dead000"
    clock = FakeClock()
    with HttpReceiver() as rx:
        config = config_for(tmp_path, db_url, webhook("hook", rx.url))
        d = Dispatcher(engine, config, clock=clock,
                       instance_id=f"{socket.gethostname()}:{os.getpid()}:5urv1v0r")
        try:
            assert d.dispatch_due(wait=10) == 0  # its first dispatch: nothing claimed yet
            paths = copy_statements(sample, tmp_path / "statements", 2)
            ingestor(engine, config, clock).process_paths([str(p) for p in paths])
            with engine.begin() as conn:  # the other instance claims them, then dies
                assert conn.execute(deliveries.update().values(
                    claimed_by=dead, claimed_until=clock.now + dt.timedelta(hours=1))
                ).rowcount == 2
            clock.advance(60)
            assert d.dispatch_due(wait=10) == 2
        finally:
            d.close()
    assert len(rx.requests) == 2
    assert [r.status for r in status_of(engine, "hook")] == ["delivered", "delivered"]

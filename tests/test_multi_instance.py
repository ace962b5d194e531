"""Several `redline run` processes on one real PostgreSQL database (SPEC §9): one shared
record, each event delivered once, and no change lost when PostgreSQL drops connections.

PostgreSQL only (`pg_url`): SQLite is one machine, one writer. The daemons are real
subprocesses watching real folders; the webhook receiver is a real HTTP server."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import write_config
from multi_support import (
    PG_RESTART_ENV,
    DaemonProcess,
    RecordState,
    delivery_statuses,
    distinct_statements,
    event_ids,
    observer_engine,
    pick_edits,
    restart_postgres,
    settled,
    terminate_backends,
    undelivered,
    wait_for,
    waiting_on_a_lock,
    write_like_an_editor,
)
from notify_support import HttpReceiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("daemon.service") is None,
                       reason="`redline run` (daemon/service.py, issue 3) is not in this tree"),
]

STOP_SECONDS = 10.0  # SPEC §8: SIGTERM to exit
# The start of the dispatcher's event-body query (pg_stat_activity.query keeps only the
# first track_activity_query_size bytes of it).
BODY_QUERY = "SELECT events.id, events.revision_id"


def daemon_config(home: Path, db_url: str, folder: Path, hook_url: str) -> Path:
    """A config for one instance: its own folder, the shared database, one webhook."""
    return write_config(home, db_url, [folder], extra=(
        "[schedule]\ndispatch_seconds = 0.5\n\n"
        '[log]\nformat = "json"\n\n'
        f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "{hook_url}"\n'
        "backoff_seconds = 0.5\n"))


def write_all_at_once(jobs: dict[Path, list[tuple[str, str]]]) -> None:
    """One thread per folder, released together, each writing its files like an editor."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def writer(folder: Path, files: list[tuple[str, str]]) -> None:
        try:
            barrier.wait(10)
            for name, text in files:
                write_like_an_editor(folder / name, text)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def stop_all(daemons: list[DaemonProcess]) -> list[tuple[int | None, float]]:
    """SIGTERM every daemon at once; (exit status or None, seconds to exit) for each."""
    started = time.monotonic()
    for d in daemons:
        d.terminate()
    out = []
    for d in daemons:
        rc = d.wait_exit(max(0.0, STOP_SECONDS - (time.monotonic() - started)))
        out.append((rc, time.monotonic() - started))
    return out


def burst_then_settle(daemon: DaemonProcess, engine: sa.Engine, folder: Path,
                      burst: Callable[[], None], timeout: float, what: str) -> None:
    """Run a burst of writes (with its outage); then every file is in the record and the
    daemon still runs."""
    burst()
    wait_for(lambda: settled(engine, [folder]), timeout, what)
    assert daemon.alive(), daemon.tail()


def outages_then_stop(daemon: DaemonProcess) -> tuple[tuple[list[dict[str, Any]], ...],
                                                      tuple[int | None, float]]:
    """The daemon's database_unreachable and database_reachable log events; then SIGTERM
    and its (exit status, seconds to exit)."""
    outages = (daemon.events("database_unreachable"), daemon.events("database_reachable"))
    (stopped,) = stop_all([daemon])
    return outages, stopped


def test_two_daemons_share_one_record_and_deliver_each_event_once(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """Two `redline run` on one fresh database, each watching its own folder, get the same
    50 statements at once and then the same one-word revision of 10: revision numbers run
    1..n, one event per revision, the receiver gets each event exactly once, and both
    daemons exit 0 within 10 s of SIGTERM."""
    folders = [tmp_path / "a" / "statements", tmp_path / "b" / "statements"]
    statements = distinct_statements(sample, 50)
    edits = pick_edits(statements, 10, tmp_path / "scratch.md")
    assert len(edits) == 10
    engine = observer_engine(pg_url)
    daemons: list[DaemonProcess] = []
    try:
        with HttpReceiver() as rx:
            for folder in folders:
                cfg = daemon_config(folder.parent, pg_url, folder, rx.url)
                daemons.append(DaemonProcess(cfg))  # both start (and migrate) at once
            for d in daemons:
                d.wait_ready(60)

            write_all_at_once({f: statements for f in folders})
            wait_for(lambda: settled(engine, folders), 60, "100 files in the record")
            write_all_at_once({f: edits for f in folders})
            wait_for(lambda: settled(engine, folders), 60, "the 20 edited files recorded")
            wait_for(lambda: (ids := event_ids(engine)) and set(
                delivery_statuses(engine, "hook").values()) == {"delivered"}
                and len(delivery_statuses(engine, "hook")) == len(ids), 60,
                "every delivery delivered")
            assert all(d.alive() for d in daemons)
            stopped = stop_all(daemons)
            received = list(rx.requests)

        record = RecordState.read(engine)
    finally:
        for d in daemons:
            d.kill()
        engine.dispose()

    record.assert_added_and_revised(50, 10)
    edited_urls = {u for u, k in record.kinds.items() if k == ["added", "revised"]}
    assert len(edited_urls) == 10

    got = Counter(json.loads(r.body)["event_id"] for r in received)
    assert got == Counter(record.ids)  # each event id exactly once, none missing
    assert len({r.headers["X-Redline-Delivery"] for r in received}) == 60
    assert all(r.headers["X-Redline-Event"] == json.loads(r.body)["kind"] for r in received)

    assert [rc for rc, _ in stopped] == [0, 0], [d.tail() for d in daemons]
    assert all(seconds < STOP_SECONDS for _, seconds in stopped)


def test_connection_kills_during_a_burst_lose_and_duplicate_nothing(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """PostgreSQL drops the daemon's connections (pg_terminate_backend) three times while
    100 statements arrive, then three times while 20 of them are revised: the daemon keeps
    running, every file ends in the record with exactly the expected revisions, one event
    and one delivery row each, and it exits 0 on SIGTERM."""
    folder = tmp_path / "statements"
    statements = distinct_statements(sample, 100)
    edits = pick_edits(statements, 20, tmp_path / "scratch.md")
    assert len(edits) == 20
    engine = observer_engine(pg_url)
    admin = observer_engine(pg_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    daemon: DaemonProcess | None = None
    killed: list[int] = []

    def burst(files: list[tuple[str, str]], kill_at: set[int], pause: float) -> None:
        gap = threading.Event()
        for i, (name, text) in enumerate(files):
            if i in kill_at:
                killed.append(terminate_backends(admin))
            write_like_an_editor(folder / name, text)
            gap.wait(pause)

    try:
        with HttpReceiver() as rx:
            daemon = DaemonProcess(daemon_config(tmp_path, pg_url, folder, rx.url))
            daemon.wait_ready(60)
            burst_then_settle(daemon, engine, folder,
                              lambda: burst(statements, {25, 50, 75}, 0.02), 45,
                              "the 100 files in the record")
            burst_then_settle(daemon, engine, folder, lambda: burst(edits, {5, 10, 15}, 0.05),
                              45, "the 20 edits in the record")
            outbox = delivery_statuses(engine, "hook")
            outages, stopped = outages_then_stop(daemon)
            received = list(rx.requests)

        record = RecordState.read(engine)
    finally:
        if daemon is not None:
            daemon.kill()
        engine.dispose()
        admin.dispose()

    assert len(killed) == 6 and all(n >= 1 for n in killed)  # the daemon's connections died
    record.assert_added_and_revised(100, 20)
    # every event got its delivery row in its own transaction: nothing lost to the outbox
    # (whether each is sent soon after is the next test's question)
    assert sorted(outbox) == sorted(record.ids)
    assert {json.loads(r.body)["event_id"] for r in received} <= set(record.ids)
    # each time live ingest lost its connection it said so, and said when it was back
    assert len(outages[0]) == len(outages[1])
    assert stopped[0] == 0, daemon.tail()
    assert stopped[1] < STOP_SECONDS


def test_a_postgres_restart_during_a_burst_loses_and_duplicates_nothing(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """PostgreSQL restarts (every connection dropped, new ones refused until it is up) while
    60 statements arrive, and again while 15 of them are revised: the daemon keeps running,
    logs when the database went away and when it was back, every file ends in the record
    with exactly the expected revisions and one event each, and the webhook gets every
    event exactly once."""
    if not os.environ.get(PG_RESTART_ENV):
        pytest.skip(f"restarting the PostgreSQL server drops everyone's connections: it runs "
                    f"where {PG_RESTART_ENV}=1 (.ci/run sets it)")
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        pytest.fail(f"{PG_RESTART_ENV} is set but pg_ctlcluster is not here to restart with")
    folder = tmp_path / "statements"
    statements = distinct_statements(sample, 60)
    edits = pick_edits(statements, 15, tmp_path / "scratch.md")
    assert len(edits) == 15
    engine = observer_engine(pg_url)
    daemon: DaemonProcess | None = None
    restarts: list[float] = []

    def burst(files: list[tuple[str, str]], restart_at: int, pause: float) -> None:
        restarter = threading.Thread(target=lambda: restarts.append(restart_postgres()))
        for i, (name, text) in enumerate(files):
            if i == restart_at:
                restarter.start()  # the writes go on while the server is down
            write_like_an_editor(folder / name, text)
            time.sleep(pause)
        restarter.join(150)

    try:
        with HttpReceiver() as rx:
            daemon = DaemonProcess(daemon_config(tmp_path, pg_url, folder, rx.url))
            daemon.wait_ready(60)
            burst_then_settle(daemon, engine, folder, lambda: burst(statements, 20, 0.05), 90,
                              "the 60 files in the record")
            burst_then_settle(daemon, engine, folder, lambda: burst(edits, 5, 0.1), 90,
                              "the 15 edits in the record")
            wait_for(lambda: set(delivery_statuses(engine, "hook").values()) == {"delivered"}
                     and len(rx.requests) >= 75, 60, "every delivery delivered",
                     state=lambda: f"{undelivered(engine)}\n{daemon.tail(60)}")
            outages, stopped = outages_then_stop(daemon)
            received = list(rx.requests)

        record = RecordState.read(engine)
    finally:
        if daemon is not None:
            daemon.kill()
        engine.dispose()

    assert len(restarts) == 2  # both restarts happened, during the bursts
    record.assert_added_and_revised(60, 15)
    assert Counter(json.loads(r.body)["event_id"] for r in received) == Counter(record.ids)
    # it noticed the database going away and said when it was back, as often
    assert len(outages[0]) >= 1 and len(outages[0]) == len(outages[1]), daemon.tail()
    assert stopped[0] == 0, daemon.tail()
    assert stopped[1] < STOP_SECONDS


def test_delivery_claimed_when_the_connection_drops_is_sent_soon_after(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """The dispatcher's connection is killed after it claimed a due delivery and while it
    reads the event's body (held there by a table lock the test takes): once PostgreSQL
    answers again the delivery is sent within seconds, not after its claim's lease."""
    folder = tmp_path / "statements"
    ((name, text),) = distinct_statements(sample, 1)
    engine = observer_engine(pg_url)
    admin = observer_engine(pg_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    daemon: DaemonProcess | None = None
    try:
        with HttpReceiver(statuses=[500]) as rx, admin.connect() as locker:
            daemon = DaemonProcess(daemon_config(tmp_path, pg_url, folder, rx.url))
            daemon.wait_ready(60)
            write_like_an_editor(folder / name, text)
            wait_for(lambda: list(delivery_statuses(engine, "hook").values()) == ["failed"],
                     30, "the first attempt to fail")
            locker.exec_driver_sql("BEGIN")
            locker.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            daemon.proc.send_signal(signal.SIGHUP)  # a new dispatcher: no cached body
            wait_for(lambda: bool(daemon.events("reloaded")), 15, "the reload")
            wait_for(lambda: waiting_on_a_lock(admin, BODY_QUERY), 30,
                     "the retry to claim the row and wait to read its event")
            assert terminate_backends(admin) >= 1
            locker.exec_driver_sql("ROLLBACK")
            wait_for(lambda: list(delivery_statuses(engine, "hook").values()) == [
                "delivered"], 10, "the delivery after the connection drop")
            assert daemon.alive(), daemon.tail()
            (stopped,) = stop_all([daemon])
        assert [json.loads(r.body)["kind"] for r in rx.requests] == ["added", "added"]
        assert stopped[0] == 0
    finally:
        if daemon is not None:
            daemon.kill()
        engine.dispose()
        admin.dispose()

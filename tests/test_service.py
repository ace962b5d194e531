"""Tests for daemon.service and `redline run`: the daemon as a subprocess talking to a real
notify socket (start-up catch-up, the sd_notify sequence, SIGHUP, SIGTERM), and in-process
with a scripted observer (the one fake: the OS event source) for watcher errors, plus a
real PostgreSQL outage."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import unprivileged, write_config
from structlog.testing import capture_logs
from test_watch import Live, doc, live_config
from watchdog.events import FileClosedEvent

from daemon.cli import cli
from daemon.store.schema import heartbeats
from daemon.watch import inotify_watches

TIMEOUT = 30.0
URL = "https://www.whitehouse.gov/articles/2025/07/s{}/"


def count(db_url: str, sql: str, **params: Any) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql), params).scalar_one())
    finally:
        engine.dispose()


def statements(db_url: str) -> int:
    return count(db_url, "SELECT count(*) FROM current_statements WHERE deleted_at IS NULL")


# ---- the daemon as a subprocess --------------------------------------------------------------

class Daemon:
    """`python -m daemon --config ... run` with NOTIFY_SOCKET bound in tmp_path; collects
    the datagrams and the JSON log lines."""

    def __init__(self, tmp_path: Path, config: Path, prefix: tuple[str, ...] = (),
                 **env: str) -> None:
        self.sock_path = str(tmp_path / f"notify-{time.monotonic_ns()}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(TIMEOUT)
        self.received: list[str] = []
        self.lines: list[dict[str, Any]] = []
        self._lines_changed = threading.Condition()
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "daemon", "--config", str(config), "run"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**environ, "NOTIFY_SOCKET": self.sock_path, **env})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": "raw", "text": line}
            with self._lines_changed:
                self.lines.append(entry)
                self._lines_changed.notify_all()

    def next_message(self) -> str:
        try:
            msg = self.sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no notification in {TIMEOUT} s; log: {self.lines[-20:]}"
                                 ) from None
        self.received.append(msg)
        return msg

    def wait_message(self, prefix: str, containing: str = "") -> str:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            msg = self.next_message()
            if msg.startswith(prefix) and containing in msg:
                return msg
        raise AssertionError(f"no {prefix!r} with {containing!r} in {TIMEOUT} s: "
                             f"{self.received[-10:]}")

    def wait_log(self, event: str) -> dict[str, Any]:
        with self._lines_changed:
            found = self._lines_changed.wait_for(
                lambda: any(e.get("event") == event for e in self.lines), TIMEOUT)
            assert found, f"no {event!r} log line; got {self.lines[-20:]}"
            return next(e for e in self.lines if e.get("event") == event)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self) -> int:
        return self.proc.wait(TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self.sock.close()


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, prefix: tuple[str, ...] = (), **env: str) -> Daemon:
        d = Daemon(tmp_path, config, prefix, **env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_changes_made_while_stopped_are_ingested_before_ready(
        tmp_path: Path, db_url: str, run_daemon: Callable[..., Daemon]) -> None:
    """Files added, edited and deleted while the daemon was down are all in the database
    by the time READY=1 arrives."""
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [root])
    for i in (1, 2, 3):
        (root / f"s{i}.md").write_text(doc(i))
    first = run_daemon(cfg)
    first.wait_message("READY=1")
    assert statements(db_url) == 3
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0
    # while it is down
    (root / "s1.md").write_text(doc(1, body="An entirely different body of words."))
    (root / "s2.md").unlink()
    # words of its own: with s2's words and a new URL, in the pass that finds s2 gone,
    # it would be s2 moved and re-addressed (one metadata revision, README)
    (root / "s4.md").write_text(doc(4, body="A statement of its own, in new words."))
    second = run_daemon(cfg)
    second.wait_message("READY=1")
    kinds = count(db_url, "SELECT count(*) FROM statement_revisions WHERE "
                  "(source_url = :a AND kind = 'revised') OR (source_url = :b AND kind = "
                  "'deleted') OR (source_url = :c AND kind = 'added')",
                  a=URL.format(1), b=URL.format(2), c=URL.format(4))
    assert kinds == 3
    starting = [m for m in second.received if m.startswith("STATUS=starting")]
    assert any("reconciling" in m for m in starting)
    second.send(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_a_file_still_being_written_at_start_is_recorded_once_whole(
        tmp_path: Path, db_url: str, run_daemon: Callable[..., Daemon]) -> None:
    """A writer that began a file before the daemon started (a restart, a kill -9 and
    systemd's restart) and pauses between its pieces still has it open at the start-up
    reconcile: the half is not recorded; the file is recorded once, whole, at its close.
    Before, the reconcile recorded the half as `added` (a body cut short, notified), then
    the whole as `revised` (seen by killing `redline run` during random edits)."""
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [root])
    text = doc(1, body=" ".join(f"word{i}" for i in range(400)))
    writer = open(root / "s1.md", "w", encoding="utf-8")  # noqa: SIM115
    try:
        writer.write(text[:len(text) // 2])
        writer.flush()
        d = run_daemon(cfg)
        d.wait_message("READY=1")
        assert count(db_url, "SELECT count(*) FROM statement_revisions") == 0
        writer.write(text[len(text) // 2:])
    finally:
        writer.close()
    wait_until(lambda: statements(db_url) == 1, "the whole file to be recorded")
    d.send(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert count(db_url, "SELECT count(*) FROM statement_revisions") == 1
    assert count(db_url, "SELECT count(*) FROM current_statements WHERE body_text LIKE "
                 "'%word399'") == 1


def test_status_says_when_a_channel_fails_and_clears_when_it_delivers(
        tmp_path: Path, db_url: str, run_daemon: Callable[..., Daemon]) -> None:
    """A receiver that is down is never silent: STATUS= names the failing channel and its
    last error while its attempts fail, and drops it once a delivery gets through."""
    from notify_support import HttpReceiver

    root = tmp_path / "statements"
    with HttpReceiver(statuses=[500, 500]) as rx:
        cfg = write_config(tmp_path, db_url, [root], extra=(
            f'[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "{rx.url}"\n'
            'backoff_seconds = 0.5\n\n'))
        (root / "s1.md").write_text(doc(1))
        daemon = run_daemon(cfg)
        daemon.wait_message("READY=1")
        failing = daemon.wait_message("STATUS=", "DELIVERIES FAILING: channel hook: ")
        assert "attempt(s) failed in a row, last: HTTP 500 Internal Server Error" in failing
        rx.wait_for(3)  # the third attempt is delivered: the next STATUS= is clear
        while "FAILING" in daemon.next_message():
            pass
        assert daemon.received[-1].startswith("STATUS=watching")
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit() == 0
    assert count(db_url, "SELECT count(*) FROM delivery_status WHERE status = 'delivered'"
                 ) == 1


def test_an_unreadable_folder_is_reported_kept_and_cleared_once_readable(
        tmp_path: Path, db_url: str, run_daemon: Callable[..., Daemon]) -> None:
    """A folder below the watched one that the daemon may not list (nor watch) is an error
    in STATUS=, not the deletion of its statements, nor a reason to poll; once its
    permissions are mended, it is watched, a reconcile runs by itself and clears the
    error, and nothing was deleted or restored."""
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [root])
    (root / "sub").mkdir()
    for i, folder in ((1, root), (2, root / "sub"), (3, root / "sub")):
        (folder / f"s{i}.md").write_text(doc(i))
    prefix = tuple(unprivileged())
    first = run_daemon(cfg, prefix)
    first.wait_message("READY=1")
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0 and statements(db_url) == 3
    (root / "sub").chmod(0)
    try:
        second = run_daemon(cfg, prefix)
        ready = second.wait_message("READY=1")
        assert f"{root / 'sub'}: folder cannot be read (Permission denied); its 2 known " \
               "files are kept, not deleted" in ready
        assert statements(db_url) == 3
    finally:
        (root / "sub").chmod(0o755)
    status = second.wait_message("STATUS=watching")
    while "cannot be read" in status:  # until the reconcile that follows the mending
        status = second.wait_message("STATUS=watching")
    assert status.startswith("STATUS=watching 1 folder(s) (inotify)")
    (root / "sub" / "s4.md").write_text(doc(4))  # an event from the folder: it is watched
    second.wait_message("STATUS=", containing="1 change(s) since start")
    assert count(db_url, "SELECT count(*) FROM statement_revisions WHERE kind <> 'added'") == 0
    assert not [e for e in second.lines if e.get("level") in ("error", "critical")
                and e.get("event") != "watched_folder_error"]
    second.send(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_a_watched_folder_unreadable_at_start_is_watched_once_readable(
        tmp_path: Path, db_url: str, run_daemon: Callable[..., Daemon]) -> None:
    """The watched folder itself cannot be read when the daemon starts (it gets no inotify
    watch): an error, nothing deleted; once readable, it is reconciled and watched, and a
    file written then is ingested live."""
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [root])
    (root / "s1.md").write_text(doc(1))
    prefix = tuple(unprivileged())
    first = run_daemon(cfg, prefix)
    first.wait_message("READY=1")
    first.send(signal.SIGTERM)
    assert first.wait_exit() == 0
    root.chmod(0)
    try:
        second = run_daemon(cfg, prefix)
        assert "folder cannot be read" in second.wait_message("READY=1")
    finally:
        root.chmod(0o755)
    status = second.wait_message("STATUS=watching")
    while "cannot be read" in status:
        status = second.wait_message("STATUS=watching")
    (root / "s2.md").write_text(doc(2))
    second.wait_message("STATUS=", containing="1 change(s) since start")
    assert statements(db_url) == 2
    assert count(db_url, "SELECT count(*) FROM statement_revisions WHERE kind <> 'added'") == 0
    assert inotify_watches(str(second.proc.pid)) == 1  # inotify on the folder, not polling
    second.send(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_notify_sequence(tmp_path: Path, run_daemon: Callable[..., Daemon]) -> None:
    """READY, WATCHDOG, STATUS, RELOADING (with MONOTONIC_USEC), READY, STOPPING arrive
    in that order over the real datagram socket."""
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    (tmp_path / "statements" / "s1.md").write_text(doc(1))
    d = run_daemon(cfg, WATCHDOG_USEC="200000")
    ready = d.wait_message("READY=1")
    assert "STATUS=watching 1 folder(s) (inotify)" in ready
    assert d.wait_message("WATCHDOG=1") == "WATCHDOG=1"
    (tmp_path / "statements" / "s2.md").write_text(doc(2))
    d.wait_message("STATUS=", containing="2 change(s) since start")  # it says what it does
    d.send(signal.SIGHUP)
    reloading = d.wait_message("RELOADING=1")
    usec = int(reloading.split("MONOTONIC_USEC=")[1].split("\n")[0])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < TIMEOUT * 1e6
    assert d.wait_message("READY=1").startswith("READY=1\nSTATUS=watching")
    d.send(signal.SIGTERM)
    d.wait_message("STOPPING=1")
    assert d.wait_exit() == 0
    order = [m.split("=")[0] for m in d.received
             if m.split("=")[0] in ("READY", "WATCHDOG", "RELOADING", "STOPPING")]
    firsts = list(dict.fromkeys(order))
    assert firsts == ["READY", "WATCHDOG", "RELOADING", "STOPPING"]
    assert order.count("READY") == 2
    assert order.index("RELOADING") < len(order) - 1 - order[::-1].index("READY")


def test_sighup_watches_a_newly_added_path(tmp_path: Path,
                                           run_daemon: Callable[..., Daemon]) -> None:
    """After SIGHUP with a second folder in watch.paths, files there are ingested (both
    those already present and new ones)."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    first_root, second_root = tmp_path / "statements", tmp_path / "more"
    cfg = write_config(tmp_path, db, [first_root], extra='[log]\nlevel = "warning"\n')
    (first_root / "s1.md").write_text(doc(1))
    second_root.mkdir()
    (second_root / "s2.md").write_text(doc(2))
    d = run_daemon(cfg)
    d.wait_message("READY=1")
    assert statements(db) == 1
    write_config(tmp_path, db, [first_root, second_root])  # and the default level, info
    d.send(signal.SIGHUP)
    d.wait_message("RELOADING=1")
    d.wait_message("READY=1")
    (second_root / "s3.md").write_text(doc(3))
    wait_until(lambda: statements(db) == 3, "s2 and s3 from the new folder")
    assert d.wait_log("reloaded")["roots"] == [str(first_root), str(second_root)]
    # the old level (warning) hid the start-up's info lines; the new one (info) shows them
    assert not any(e.get("event") == "ready" for e in d.lines)
    d.send(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_invalid_config_on_sighup_keeps_the_old_one(
        tmp_path: Path, run_daemon: Callable[..., Daemon]) -> None:
    """A broken config.toml on SIGHUP is logged with its reason, reported in STATUS, and
    the daemon keeps watching with the configuration it had."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db, [root])
    d = run_daemon(cfg)
    d.wait_message("READY=1")
    cfg.write_text(cfg.read_text().replace("debounce_ms = 50", "debounce_ms = -5"))
    d.send(signal.SIGHUP)
    d.wait_message("RELOADING=1")
    ready = d.wait_message("READY=1")
    assert "reload failed, previous configuration kept: watch.debounce_ms" in ready
    failed = d.wait_log("reload_failed")
    assert "watch.debounce_ms: must be between 0 and 60000, got -5" in failed["error"]
    assert failed["level"] == "error"
    (root / "s1.md").write_text(doc(1))
    wait_until(lambda: statements(db) == 1, "a file ingested with the old configuration")
    d.send(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_sigterm_exits_zero_within_ten_seconds_and_nothing_is_lost(
        tmp_path: Path, run_daemon: Callable[..., Daemon]) -> None:
    """SIGTERM in the middle of a burst: exit status 0 within 10 s; every file is in the
    database after the next start's READY=1."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db, [root])
    d = run_daemon(cfg)
    d.wait_message("READY=1")
    for i in range(200):
        (root / f"s{i}.md").write_text(doc(i))
    started = time.monotonic()
    d.send(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert time.monotonic() - started < 10
    assert "STOPPING=1" in "".join(d.received) or d.wait_message("STOPPING=1")
    again = run_daemon(cfg)
    again.wait_message("READY=1")
    assert statements(db) == 200
    again.send(signal.SIGINT)
    assert again.wait_exit() == 0


def test_a_sqlite_write_lock_held_by_another_program_delays_but_loses_nothing(
        tmp_path: Path, run_daemon: Callable[..., Daemon]) -> None:
    """Another program (here the sqlite3 module, as a user's `sqlite3 redline.db` shell
    would) holds the database's write lock for 3 s while 20 statements arrive: the daemon
    waits for the lock (busy timeout) and then records every one, once."""
    import sqlite3

    path = tmp_path / "r.db"
    db = f"sqlite:///{path}"
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db, [root])
    d = run_daemon(cfg)
    d.wait_message("READY=1")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock, as a shell's open transaction
        for i in range(20):
            (root / f"s{i}.md").write_text(doc(i))
        time.sleep(3)
        assert statements(db) == 0  # nothing could be written meanwhile (readers still read)
        other.execute("COMMIT")
    finally:
        other.close()
    wait_until(lambda: statements(db) == 20, "the 20 statements after the lock was released")
    assert count(db, "SELECT count(*) FROM change_log") == 20
    assert d.proc.poll() is None
    d.send(signal.SIGTERM)
    assert d.wait_exit() == 0


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_while_running_stops_the_daemon(
        tmp_path: Path, run_daemon: Callable[..., Daemon], how: str) -> None:
    """The SQLite file deleted (`rm redline.db`), or a backup moved over it, while the
    daemon runs: it used to go on writing into the file it had open, which nothing else
    could read any more, and STATUS counted those changes; each was lost. It says so and
    exits 1 (systemd restarts it), and the next start records on the file now at that
    path what the lost writes held."""
    import sqlite3

    path = tmp_path / "r.db"
    db = f"sqlite:///{path}"
    root = tmp_path / "statements"
    cfg = write_config(tmp_path, db, [root])
    (root / "s1.md").write_text(doc(1))
    d = run_daemon(cfg)
    d.wait_message("READY=1")
    if how == "deleted":
        path.unlink()
    else:  # a copy of the record as it is now, moved over the file
        backup = tmp_path / "backup.db"
        with sqlite3.connect(path) as src, sqlite3.connect(backup) as dest:
            src.backup(dest)
        os.replace(backup, path)
    line = d.wait_log("database_file_replaced")
    # (a connection opened after the `rm` creates an empty file at the path at once)
    assert line["path"] == str(path) and line["what"] in (
        ("deleted", "replaced by another file") if how == "deleted"
        else ("replaced by another file",))
    assert d.wait_exit() == 1
    (root / "s2.md").write_text(doc(2))
    again = run_daemon(cfg)
    again.wait_message("READY=1")
    assert statements(db) == 2
    again.send(signal.SIGTERM)
    assert again.wait_exit() == 0


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """`redline run` with an invalid configuration exits 2 naming the key."""
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}",
                       extra="[schedule]\ndispatch_seconds = 0\n")
    result = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "run"],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "redline: error: schedule.dispatch_seconds: must be at least 0.05, got 0"]


def test_run_help_has_an_example() -> None:
    """`redline run --help` explains the command and shows an example."""
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "redline --config config.toml run" in result.output


# ---- in-process: stop, heartbeat, a scripted observer, a database outage -------------------

@pytest.fixture
def daemons() -> Iterator[Callable[..., Live]]:
    """Start in-process daemons for a test and always stop them."""
    started: list[Live] = []

    def start(*args: Any, **kwargs: Any) -> Live:
        live = Live(*args, **kwargs).start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


def test_stop_ingests_settled_changes_without_waiting_for_the_debounce(
        tmp_path: Path, db_url: str, daemons: Callable[..., Live]) -> None:
    """Files whose write completed are ingested at stop even though their (long) debounce
    has not passed: in-flight work is finished, not dropped."""
    root = tmp_path / "w"
    live = daemons(live_config(tmp_path, db_url, [root], debounce_ms=60_000))
    for i in range(5):
        (root / f"s{i}.md").write_text(doc(i))
    live.wait_for(lambda: live.service.collector.pending_count() == 5, "5 queued paths")
    assert statements(db_url) == 0
    live.stop()
    assert statements(db_url) == 5


def test_heartbeat_row_says_whether_the_watcher_runs(
        tmp_path: Path, db_url: str, daemons: Callable[..., Live]) -> None:
    """The instance's heartbeat row is written at READY (watching) and at stop (stopped)."""
    live = daemons(live_config(tmp_path, db_url, [tmp_path / "w"]))
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(heartbeats)).one()
    assert row.watching is True and row.pid == os.getpid()
    assert row.status.startswith("watching 1 folder(s)")
    assert row.instance == live.service.instance_id
    live.stop()
    with engine.connect() as conn:
        row = conn.execute(sa.select(heartbeats)).one()
    engine.dispose()
    assert (row.watching, row.status) == (False, "stopped")
    # and `redline status` says so at once, not "running … stopped" for two minutes
    cfg = write_config(tmp_path, db_url, [tmp_path / "w"])
    out = CliRunner().invoke(cli, ["--config", str(cfg), "status"]).output
    seen = f"{row.seen_at:%Y-%m-%dT%H:%M:%SZ}"
    assert out.splitlines()[-1] == f"watcher: not running (last heartbeat {seen})"
    out = CliRunner().invoke(cli, ["--config", str(cfg), "status", "--json"]).output
    assert json.loads(out)["watcher"]["running"] is False


class ScriptedObserver:
    """Stands in for watchdog's observer (the OS event source): records the watches,
    emits what the test tells it to, and can overflow or die like the real one."""

    made: list[ScriptedObserver] = []

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.alive = False
        self.watches: dict[str, SimpleNamespace] = {}
        self.handler: Any = None
        ScriptedObserver.made.append(self)

    def schedule(self, handler: Any, path: str, *, recursive: bool,
                 event_filter: Any) -> SimpleNamespace:
        self.handler = handler
        watch = SimpleNamespace(path=path, emitter_alive=True)
        self.watches[path] = watch
        return watch

    def unschedule(self, watch: SimpleNamespace) -> None:
        self.watches.pop(watch.path, None)

    @property
    def emitters(self) -> list[Any]:
        return [SimpleNamespace(watch=w, is_alive=lambda w=w: w.emitter_alive)
                for w in self.watches.values()]

    def start(self) -> None:
        self.alive = True

    def stop(self) -> None:
        self.alive = False

    def join(self, timeout: float | None = None) -> None:
        pass

    def is_alive(self) -> bool:
        return self.alive

    def overflow(self) -> None:
        """What watchdog 7.1 does on IN_Q_OVERFLOW: a warning on its logger, no event."""
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")


@pytest.fixture
def scripted(tmp_path: Path, db_url: str, daemons: Callable[..., Live]
             ) -> tuple[Live, Path, Callable[[], ScriptedObserver]]:
    root = tmp_path / "w"
    root.mkdir()
    (root / "s1.md").write_text(doc(1))
    ScriptedObserver.made.clear()
    live = daemons(live_config(tmp_path, db_url, [root]), observer_factory=ScriptedObserver,
                   own_watches=lambda: None)  # the scripted source holds no inotify watches
    assert statements(db_url) == 1
    return live, root, lambda: ScriptedObserver.made[-1]


def test_scripted_events_are_ingested(scripted: tuple[Live, Path, Callable[[], Any]],
                                      db_url: str) -> None:
    """The scripted observer feeds the same handler: a close event gets a file ingested."""
    live, root, observer = scripted
    (root / "s2.md").write_text(doc(2))
    observer().handler.dispatch(FileClosedEvent(str(root / "s2.md")))
    live.wait_for(lambda: statements(db_url) == 2, "s2")


def test_inotify_overflow_triggers_a_reconcile(
        scripted: tuple[Live, Path, Callable[[], Any]], db_url: str) -> None:
    """Events lost to a queue overflow are found by the reconcile that follows it."""
    live, root, observer = scripted
    (root / "s2.md").write_text(doc(2))  # no event will ever say so
    assert live.service.wait_idle(TIMEOUT) and statements(db_url) == 1
    before = live.service.reconciles
    with capture_logs() as logs:
        observer().overflow()
        live.wait_for(lambda: statements(db_url) == 2, "the reconcile to find s2")
    reasons = [e["reason"] for e in logs if e["event"] == "reconciled"]
    assert reasons == ["watcher: Inotify queue overflowed; filesystem events were lost"]
    assert live.service.reconciles == before + 1


def test_dead_watch_is_restarted_and_reconciled(
        scripted: tuple[Live, Path, Callable[[], Any]], db_url: str) -> None:
    """An emitter that died (the watched folder still there) is scheduled again and a
    reconcile covers the gap."""
    live, root, observer = scripted
    (root / "s2.md").write_text(doc(2))
    obs = observer()
    next(iter(obs.watches.values())).emitter_alive = False
    live.wait_for(lambda: statements(db_url) == 2, "the reconcile after the restart")
    assert obs.watches[str(root)].emitter_alive is True  # a fresh watch


def test_dead_observer_is_replaced_and_reconciled(
        scripted: tuple[Live, Path, Callable[[], Any]], db_url: str) -> None:
    """An observer thread that died (e.g. an exception in dispatching) is replaced by a
    new one, and a reconcile covers the gap."""
    live, root, observer = scripted
    first = observer()
    (root / "s2.md").write_text(doc(2))
    first.alive = False
    live.wait_for(lambda: statements(db_url) == 2, "the reconcile after the restart")
    assert observer() is not first and observer().is_alive()
    assert live.service.healthy()


def test_a_database_turned_read_only_is_said_in_status_until_it_is_writable(
        tmp_path: Path, pg_url: str, daemons: Callable[..., Live]) -> None:
    """A database that takes reads but refuses writes (a replica promoted wrongly, a disk
    mounted read-only, PostgreSQL's default_transaction_read_only) left STATUS= clean while
    every heartbeat failed: the failing job and the server's words are now in it, without
    a traceback, until a run succeeds."""
    root = tmp_path / "w"
    live = daemons(live_config(tmp_path, pg_url, [root]))
    (root / "keep.md").write_text(doc("keep"))
    live.settle(root)
    jobs = live.service.jobs
    assert jobs is not None
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(sa.engine.make_url(pg_url).set(database="postgres"),
                             isolation_level="AUTOCOMMIT")

    def heartbeat_now() -> None:
        jobs.scheduler.get_job("heartbeat").modify(next_run_time=dt.datetime.now(dt.UTC))

    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only '
                                 "= on")
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        with capture_logs() as logs:
            heartbeat_now()
            live.wait_for(lambda: "JOB FAILING: heartbeat: database: " in
                          live.service.status_text(), "the failing heartbeat in STATUS")
        assert "read-only transaction" in live.service.status_text()
        failed = [e for e in logs if e["event"] == "job_failed"]
        assert failed and all("exc_info" not in e for e in failed), failed
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        admin.dispose()
    heartbeat_now()
    live.wait_for(lambda: "JOB FAILING" not in live.service.status_text(),
                  "the heartbeat working again")


def test_database_outage_is_survived(tmp_path: Path, pg_url: str,
                                     daemons: Callable[..., Live]) -> None:
    """PostgreSQL refusing connections: the worker reports it in STATUS and retries;
    when the database is back the held change is ingested and a reconcile runs."""
    root = tmp_path / "w"
    live = daemons(live_config(tmp_path, pg_url, [root]))
    (root / "keep.md").write_text(doc("keep"))
    live.settle(root)
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(sa.engine.make_url(pg_url).set(database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{name}'")
    try:
        (root / "s1.md").write_text(doc(1))
        live.wait_for(lambda: "DATABASE UNREACHABLE" in live.service.status_text(),
                      "the outage in STATUS")
        before = live.service.reconciles
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.dispose()
    live.wait_for(lambda: statements(pg_url) == 2, "the held change")
    live.wait_for(lambda: live.service.reconciles > before, "the reconcile after recovery")
    assert "DATABASE" not in live.service.status_text()
    assert live.service.healthy()


# ---- logging ------------------------------------------------------------------------------

class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_logs_are_json_lines_when_not_a_terminal(logging_reset: None) -> None:
    """On a pipe, our events and the stdlib loggers of the libraries come out as one JSON
    object per line through the same chain; library info lines are held back."""
    import structlog

    from daemon.logs import configure_logging

    out = io.StringIO()
    configure_logging("info", "auto", out)
    structlog.get_logger("daemon.test").info("ingested", path="/w/a.md", ms=1.5)
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
    # Alembic's migrations are shown; its "setup plugin" lines at every schema check are not
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0002 -> 0003")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.types")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["level"], e["logger"]) for e in lines] == [
        ("ingested", "info", "daemon.test"),
        ("Run time of job was missed", "warning", "apscheduler.scheduler"),
        ("Inotify queue overflowed", "warning", "watchdog.observers.inotify_c"),
        ("Running upgrade 0002 -> 0003", "info", "alembic.runtime.migration")]
    assert lines[0]["path"] == "/w/a.md" and lines[0]["timestamp"].endswith("Z")


def test_log_level_and_console_on_a_terminal(logging_reset: None) -> None:
    """On a terminal the console renderer is used; below the level nothing is written,
    and watchdog's warnings are not printed at level error."""
    import structlog

    from daemon.logs import configure_logging

    out = Terminal()
    configure_logging("error", "auto", out)
    log = structlog.get_logger("daemon.test")
    log.info("quiet")
    log.warning("quiet too")
    logging.getLogger("watchdog").warning("not shown")
    log.error("reload_failed", error="watch.debounce_ms: must be between 0 and 60000")
    text = out.getvalue()
    assert "quiet" not in text and "not shown" not in text
    assert "reload_failed" in text and not text.lstrip().startswith("{")


def test_console_logs_show_control_characters_of_a_file_name(logging_reset: None) -> None:
    """`redline run` on a terminal logs each file it ingests by path: a file named with an
    escape sequence (`a\x1b]0;PWNED\x07.md`) retitled the terminal, as the read commands'
    output did. The console shows it as `\x1b`; JSON lines escape it as JSON does."""
    import structlog

    from daemon.logs import configure_logging

    out = Terminal()
    configure_logging("info", "auto", out)
    structlog.get_logger("daemon.test").info("ingested", path="/w/a\x1b]0;PWNED\x07.md")
    logging.getLogger("watchdog").warning("odd \x1b[2J name")
    text = out.getvalue()
    assert "/w/a\\x1b]0;PWNED\\x07.md" in text and "odd \\x1b[2J name" in text
    assert "]0;PWNED\x07" not in text and "\x1b[2J" not in text


_SIGNAL_INSIDE_THE_EVENT = """
import os, signal, sys
from daemon.service import SignalInbox

inbox = SignalInbox()
inbox.install()
for sig, event in ((signal.SIGHUP, inbox.reload), (signal.SIGTERM, inbox.stop)):
    # the main loop inside wake.clear() or wake.wait() holds the event's lock: a signal
    # handled there (Python runs handlers between the main thread's bytecodes) sets it
    with inbox.wake._cond:
        os.kill(os.getpid(), sig)
        sum(range(1000))
    assert event.is_set() and inbox.wake.wait(0), sig
    inbox.wake.clear()
print("both handled")
"""


def test_a_signal_landing_while_the_main_loop_holds_its_wake_event_does_not_hang() -> None:
    """SIGHUP and SIGTERM handled while the main thread is inside the wake event (its
    loop clears it every tick) are recorded, and nothing deadlocks: the handler runs in
    that same thread, and a plain threading.Event's lock is not re-entrant."""
    done = subprocess.run([sys.executable, "-c", _SIGNAL_INSIDE_THE_EVENT],
                          capture_output=True, text=True, timeout=20,
                          cwd=Path(__file__).resolve().parent.parent)
    assert (done.returncode, done.stdout, done.stderr) == (0, "both handled\n", "")


def test_an_idle_thread_pool_is_not_a_thread_left_behind_at_exit() -> None:
    """At the end of `redline run`, a worker of a thread pool that nobody shut down but
    that has nothing to do (Apprise keeps one for its sends) would end at once at exit: it
    is not reported as `exiting_without_threads` (seen at every stop of a daemon whose
    Apprise channel had sent something: "what they were sending is sent again"). A worker
    still busy is. Run in a child process: the check shuts the pools down."""
    script = """
import threading
from concurrent.futures import ThreadPoolExecutor
from daemon.service import lingering_threads
idle = ThreadPoolExecutor(thread_name_prefix="idle-pool")
idle.submit(lambda: None).result()
release = threading.Event()
busy = ThreadPoolExecutor(thread_name_prefix="busy-pool")
busy.submit(release.wait, 30)
print(sorted(t.name.split("_")[0] for t in lingering_threads(grace=0.5)))
release.set()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['busy-pool']"

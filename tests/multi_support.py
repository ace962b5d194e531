"""What the multi-instance tests share: real `redline run` processes, real statement files
written the way editors write them, and reads of the shared record through the SPEC views."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from notify_support import edit_one_word

from daemon.store.engine import make_engine

SOURCE_URL = re.compile(r"^source_url: *(.*?) *$", re.M)


class DaemonProcess:
    """One `redline run` subprocess (NOTIFY_SOCKET unset), its JSON log lines collected."""

    def __init__(self, cfg: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(cfg), "run"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log records with this `event` name (lines that are not JSON are skipped)."""
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Wait (bounded) for the `ready` log line; fail at once if the process exits."""
        wait_for(lambda: bool(self.events("ready")) or not self.alive(), timeout,
                 "the daemon to be ready")
        assert self.alive(), f"redline run exited with {self.proc.returncode}:\n{self.tail()}"

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status, or None if the process is still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL if still running (the tests' `finally`), then reap."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.1,
             state: Any = None) -> None:
    """Poll `predicate` every `every` seconds until it is true, at most `timeout` seconds;
    on a timeout the message ends with `state()`, what the test can tell about why."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f"\n{state()}" if state else ""))
        pause.wait(every)


def distinct_statements(sample: Path, n: int) -> list[tuple[str, str]]:
    """`n` real statement files of the sample as (file name, text), each with its own
    source_url: the sample's files with distinct URLs, then the same files again under a
    `?copy=K` URL (a real URL variant a scraper could produce) until there are `n`."""
    by_url: dict[str, tuple[str, str]] = {}
    for p in sorted((sample / "current").rglob("*.md")):
        text = p.read_text(encoding="utf-8")
        m = SOURCE_URL.search(text)
        assert m is not None, p
        by_url.setdefault(m.group(1), (p.name, text))
    originals = list(by_url.values())
    out: list[tuple[str, str]] = []
    for i in range(n):
        name, text = originals[i % len(originals)]
        copy = i // len(originals)
        if copy:
            text = SOURCE_URL.sub(lambda m, k=copy: f"source_url: {m.group(1)}?copy={k}",
                                  text, count=1)
        out.append((f"{i:03d}-{name}", text))
    return out


def write_like_an_editor(path: Path, text: str) -> None:
    """Write a hidden temp file next to `path`, flush it to disk, rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def one_word_changed(text: str, scratch: Path) -> str | None:
    """`text` with one word a reader sees replaced (via a scratch file outside the watched
    folders), or None when the statement has no such word."""
    scratch.write_text(text, encoding="utf-8")
    try:
        edit_one_word(scratch)
    except AssertionError:
        return None
    return scratch.read_text(encoding="utf-8")


def pick_edits(statements: list[tuple[str, str]], n: int,
               scratch: Path) -> list[tuple[str, str]]:
    """The first `n` statements that have a word to change, each with that one-word edit."""
    edits: list[tuple[str, str]] = []
    for name, text in statements:
        changed = one_word_changed(text, scratch)
        if changed is not None and len(edits) < n:
            edits.append((name, changed))
    return edits


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disk_state(folders: list[Path]) -> dict[str, str]:
    """Every statement file under the folders (hidden temp files excluded) and its SHA-256."""
    return {str(p): sha256_of(p) for f in folders for p in f.rglob("*.md")
            if not p.name.startswith(".")}


def recorded_files(engine: sa.Engine) -> dict[str, str]:
    """What the record says each file holds: path -> SHA-256."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT path, file_sha256 FROM files")).all())


def settled(engine: sa.Engine, folders: list[Path]) -> bool:
    """Every file on disk is in the record with its current bytes, and nothing else is."""
    return recorded_files(engine) == disk_state(folders)


def _per_url(engine: sa.Engine, column: str) -> dict[str, list[Any]]:
    """source_url -> one statement_revisions column of its revisions, in order."""
    out: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for url, value in conn.execute(sa.text(
                f"SELECT c.source_url, r.{column} FROM statement_revisions r "
                "JOIN current_statements c ON c.statement_id = r.statement_id "
                "ORDER BY c.source_url, r.revision_number")):
            out.setdefault(url, []).append(value)
    return out


def revision_numbers(engine: sa.Engine) -> dict[str, list[int]]:
    """source_url -> its revision numbers in order (statement_revisions)."""
    return _per_url(engine, "revision_number")


def revision_kinds(engine: sa.Engine) -> dict[str, list[str]]:
    """source_url -> the kinds of its revisions in order."""
    return _per_url(engine, "kind")


def events_per_revision(engine: sa.Engine) -> Counter[tuple[int, int]]:
    """(statement_id, to_revision) -> how many change_log events name it."""
    with engine.connect() as conn:
        return Counter((sid, rev) for sid, rev in conn.execute(sa.text(
            "SELECT statement_id, to_revision FROM change_log")))


def revision_keys(engine: sa.Engine) -> set[tuple[int, int]]:
    with engine.connect() as conn:
        return {(sid, n) for sid, n in conn.execute(sa.text(
            "SELECT statement_id, revision_number FROM statement_revisions"))}


@dataclass(frozen=True)
class RecordState:
    """What the record holds after a test's writes, read through the SPEC §4 views."""

    numbers: dict[str, list[int]]
    kinds: dict[str, list[str]]
    per_revision: Counter[tuple[int, int]]
    keys: set[tuple[int, int]]
    ids: list[int]

    @classmethod
    def read(cls, engine: sa.Engine) -> RecordState:
        return cls(revision_numbers(engine), revision_kinds(engine),
                   events_per_revision(engine), revision_keys(engine), event_ids(engine))

    def assert_added_and_revised(self, statements: int, revised: int) -> None:
        """Exactly `statements` statements, `revised` of them revised once and the rest only
        added: revision numbers 1..n without gaps or duplicates, one event per revision."""
        assert len(self.numbers) == statements
        assert all(ns == list(range(1, len(ns) + 1)) for ns in self.numbers.values())
        assert sorted(Counter(tuple(k) for k in self.kinds.values()).items()) == [
            (("added",), statements - revised), (("added", "revised"), revised)]
        assert set(self.per_revision) == self.keys and set(self.per_revision.values()) == {1}
        assert len(self.ids) == statements + revised


def delivery_statuses(engine: sa.Engine, channel: str) -> dict[int, str]:
    """event_id -> delivery status for one channel (delivery_status view)."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(
            "SELECT event_id, status FROM delivery_status WHERE channel = :c"),
            {"c": channel}).all())


def undelivered(engine: sa.Engine) -> str:
    """The deliveries not delivered, a line each, for a failure message."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, event_id, channel, status, attempts, next_attempt_at, claimed_by, "
            "claimed_until, last_error FROM deliveries WHERE status <> 'delivered' "
            "ORDER BY id")).all()
    return "\n".join(str(tuple(r)) for r in rows) or "(every delivery is delivered)"


def event_ids(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT event_id FROM change_log")).scalars())


TEST_APP = "redline-test"  # application_name of the tests' own connections


def observer_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for the test's own reads and kills, its connections marked as the test's."""
    return make_engine(url, connect_args={"application_name": TEST_APP}, **kwargs)


def daemon_backends(admin: sa.Engine) -> int:
    """How many connections to this database are not the test's own (the daemons')."""
    with admin.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name <> :app"), {"app": TEST_APP}).scalar_one())


def terminate_backends(admin: sa.Engine, timeout: float = 10.0) -> int:
    """Wait (bounded) until a daemon holds a connection, then kill every connection to the
    database but the test's own, as the issue's SQL does; how many were killed."""
    wait_for(lambda: daemon_backends(admin) > 0, timeout, "a daemon connection to kill",
             every=0.01)
    with admin.connect() as conn:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name <> :app"), {"app": TEST_APP}).all())


def waiting_on_a_lock(admin: sa.Engine, query_part: str) -> bool:
    """A daemon connection running a query containing `query_part` waits on a lock."""
    with admin.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name <> :app AND wait_event_type = 'Lock' "
            "AND strpos(query, :part) > 0"),
            {"app": TEST_APP, "part": query_part}).scalar_one())


PG_RESTART_ENV = "REDLINE_TEST_PG_RESTART"


def restart_postgres() -> float:
    """Restart the local PostgreSQL cluster (fast shutdown: every connection is dropped and
    new ones are refused until it is up again); the seconds the restart took."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    started = time.monotonic()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, capture_output=True, timeout=120)
    return time.monotonic() - started


"""Engines for SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE) and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import structlog
from sqlalchemy import event
from sqlalchemy.engine import Engine

from daemon.errors import DatabaseError

log = structlog.get_logger(__name__)

BUSY_TIMEOUT_MS = 30_000


def require_sqlite_file(url: str, first: str) -> None:
    """Fail clearly when a SQLite database file is not there, rather than let the first
    connection create an empty one (at a mistyped path, or where nothing may migrate it);
    `first` says what to run first."""
    if not url.startswith("sqlite"):
        return
    path = sa.engine.make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:") and \
            not os.path.exists(path):
        raise DatabaseError(f"database {path} does not exist yet: run {first} first")


def make_engine(url: str | sa.URL, *, readonly: bool = False, **kwargs: Any) -> Engine:
    """Create an engine; writers on SQLite take the write lock at BEGIN (one writer, no
    'database is locked' on a read-to-write upgrade), readers never block the writer."""
    try:
        sa_url = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}") from None
    if sa_url.get_backend_name() == "postgresql" and sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    if sa_url.get_backend_name() == "sqlite":
        return _sqlite_engine(sa_url, readonly=readonly, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    try:
        return sa.create_engine(sa_url, **kwargs)
    except ModuleNotFoundError as exc:
        raise DatabaseError(f"the driver for {sa_url.drivername} is not installed ({exc.name}):"
                            " pip install 'redline[postgres]'") from None


def _sqlite_engine(url: sa.URL, *, readonly: bool, **kwargs: Any) -> Engine:
    db = url.database or ""
    if readonly and db != ":memory:" and db and not db.startswith("file:"):
        # A reader opens the file read-only (`mode=ro`), which matters beyond refusing
        # writes: the last connection to close a WAL database checkpoints the WAL into the
        # file and deletes it; a read-only connection cannot take the lock that needs, so
        # the file (its bytes, its mtime) and the WAL stay as the writer left them. A URI
        # filename: %, #, ? and spaces in the path are escaped, not parsed.
        url = sa.engine.URL.create(url.drivername, database="file:" + quote(
            os.path.abspath(db)), query={"uri": "true", "mode": "ro"})
    kwargs.setdefault("connect_args", {})["timeout"] = BUSY_TIMEOUT_MS / 1000
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite (SQLAlchemy's documented recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if url.database not in (None, "", ":memory:") and not readonly:
            # (readers find the mode in the file; setting it could need a write)
            cur.execute("PRAGMA journal_mode = WAL")
            # Checkpoints run beside the writer (Checkpointer); a writer checkpoints itself
            # only if the WAL reaches ~40 MB, e.g. when no checkpointer is running.
            cur.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


WRITER_CHECKPOINT_PAGES = 10_000
CHECKPOINT_WAL_BYTES = 4 << 20  # the WAL size from which the checkpointer copies it back
CHECKPOINT_IDLE_SECONDS = 10.0  # a checkpointer with nothing to do for this long ends

_checkpointers: dict[str, Checkpointer] = {}
_checkpointers_lock = threading.Lock()


class Checkpointer:
    """SQLite: WAL checkpoints on a thread and a connection of their own.

    SQLite checkpoints in the committing thread once the WAL passes wal_autocheckpoint:
    about a seventh of the writer's time in a large ingest, spent copying pages and
    fsyncing while the next transaction waits. A PASSIVE checkpoint on another connection
    runs beside the writer (sqlite3 releases the GIL) and never blocks it; the writers'
    own autocheckpoint stays as a bound on the WAL should this thread fall behind."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.runs = 0
        self._nudged = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="redline-checkpoint",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def nudge_for(cls, engine: Engine) -> None:
        """A transaction committed on `engine`: checkpoint soon if the WAL has grown."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or path in (None, "", ":memory:"):
            return
        with _checkpointers_lock:
            checkpointer = _checkpointers.get(path)
            if checkpointer is None:
                checkpointer = _checkpointers[path] = cls(path)
            checkpointer._nudged.set()

    def _loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            while True:
                if not self._nudged.wait(CHECKPOINT_IDLE_SECONDS):
                    with _checkpointers_lock:
                        if not self._nudged.is_set():
                            del _checkpointers[self.path]
                            return
                self._nudged.clear()
                try:
                    if os.path.getsize(self.path + "-wal") < CHECKPOINT_WAL_BYTES:
                        continue
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except (OSError, sqlite3.Error) as exc:  # gone, or busy: the next nudge
                    log.debug("checkpoint_skipped", path=self.path, error=str(exc))
        finally:
            conn.close()

"""Serving: a read-only engine, the app, and uvicorn on a loopback address by default."""

from __future__ import annotations

import ipaddress
import logging
import math
import signal
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
import uvicorn
from sqlalchemy import event
from sqlalchemy.engine import Engine

from daemon.errors import DatabaseError, QueryTimeout, RedlineError
from daemon.store import migrate
from daemon.store.engine import make_engine
from daemon.systemd import SystemdNotifier
from daemon.web.app import create_app

log = structlog.get_logger(__name__)


# Every query of the site is answered in milliseconds; one that runs this long is stopped
# (SQLite: a progress handler; PostgreSQL: statement_timeout) and answered 503, so that no
# request can hold a CPU, or a worker thread that a stop must wait for, for long.
QUERY_SECONDS = 5.0
# On SIGTERM, requests in progress get this long to finish before they are cancelled.
GRACEFUL_SHUTDOWN_SECONDS = 5


def read_only_engine(url: str, query_seconds: float = QUERY_SECONDS) -> Engine:
    """An engine that cannot write: SQLite files are opened read-only (`mode=ro`, see
    make_engine, and `query_only`), PostgreSQL sessions are `default_transaction_read_only`.
    The schema must already be at head (the server never migrates, and never creates an
    empty SQLite file)."""
    sa_url = sa.engine.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        db = sa_url.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise DatabaseError(f"redline serve needs a database file, not {url!r}")
        if not Path(db).is_file():
            raise DatabaseError(f"no database at {db}: run `redline ingest` or `redline run` "
                                "first (redline serve only reads)")
        engine = make_engine(sa_url, readonly=True)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA query_only = ON")
            cur.close()
            deadline = record.info[_DEADLINE] = [math.inf]
            # called every 1,000 SQLite VM steps; a true value interrupts the statement
            dbapi_conn.set_progress_handler(lambda: time.monotonic() > deadline[0], 1000)

        @event.listens_for(engine, "before_cursor_execute")
        def _start_clock(conn: Any, *_args: Any) -> None:
            deadline = conn.info.get(_DEADLINE)
            if deadline is not None:
                deadline[0] = time.monotonic() + query_seconds
    else:
        engine = make_engine(url, readonly=True, connect_args={
            "options": "-c default_transaction_read_only=on "
                       f"-c statement_timeout={max(1, round(query_seconds * 1000))}"})

    @event.listens_for(engine, "handle_error")
    def _timed_out(context: Any) -> None:
        if _is_timeout(context.original_exception):
            raise QueryTimeout(f"the query ran longer than {query_seconds:g} s and was "
                               "stopped: ask for less (fewer words, longer prefixes, a "
                               "smaller limit) or try again") from None

    migrate.require_current(engine)
    return engine


_DEADLINE = "redline_query_deadline"


def _is_timeout(exc: BaseException) -> bool:
    """SQLite interrupted by the progress handler, or PostgreSQL's query_canceled."""
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc) == "interrupted"
    return getattr(exc, "sqlstate", None) == "57014"


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _LastError(logging.Handler):
    """The last error uvicorn logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


class _NotifyingServer(uvicorn.Server):
    """uvicorn that tells systemd READY=1 once the socket is bound, STOPPING=1 on the way out."""

    def __init__(self, config: uvicorn.Config, notifier: SystemdNotifier, url: str) -> None:
        super().__init__(config)
        self.notifier = notifier
        self.url = url

    async def startup(self, sockets: Any = None) -> None:
        # uvicorn logs why it cannot listen (port taken, no such address) and exits 3,
        # which is redline's "ingest finished but some files were rejected": say it as
        # every other failure is, one line and exit 1
        reason = _LastError()
        logging.getLogger("uvicorn.error").addHandler(reason)
        try:
            await super().startup(sockets)
        except SystemExit:
            raise RedlineError(f"cannot listen on {self.url}: "
                               f"{reason.message or 'see the log above'}") from None
        finally:
            logging.getLogger("uvicorn.error").removeHandler(reason)
        if self.started:
            log.info("serving", url=self.url)
            self.notifier.ready(f"serving {self.url}")

    async def shutdown(self, sockets: Any = None) -> None:
        self.notifier.stopping("stopping")
        await super().shutdown(sockets)


def serve(engine: Engine, host: str, port: int, token: str | None,
          environ: Mapping[str, str], access_log: bool = False) -> None:
    """Run the site until SIGINT/SIGTERM."""
    if not is_loopback(host) and not token:
        log.warning("serving_without_token", host=host,
                    hint="anyone who can reach this address can read the record; "
                         "set [serve] token_env")
    config = uvicorn.Config(create_app(engine, token), host=host, port=port, log_config=None,
                            access_log=access_log, server_header=False, proxy_headers=False,
                            lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    shown = f"[{host}]" if ":" in host else host
    server = _NotifyingServer(config, SystemdNotifier(environ), f"http://{shown}:{port}/")
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that
    # was there before it: this one, so a clean stop (systemd's) exits 0, not "killed".
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)

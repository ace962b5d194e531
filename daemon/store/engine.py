"""Engines for SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE) and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from daemon.errors import DatabaseError

BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, *, readonly: bool = False, **kwargs: Any) -> Engine:
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
    kwargs.setdefault("connect_args", {})["timeout"] = BUSY_TIMEOUT_MS / 1000
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite (SQLAlchemy's documented recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"

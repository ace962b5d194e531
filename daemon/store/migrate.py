"""Alembic, run in-process on our own engine: `redline db upgrade` and `redline db current`."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from daemon.errors import DatabaseError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _alembic_config(engine: Engine) -> AlembicConfig:
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise DatabaseError(f"migrations not found at {MIGRATIONS_DIR}: install redline from "
                            "its source tree (pip install -e .)")
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None


def upgrade(engine: Engine) -> str | None:
    """Bring the schema to the newest migration; return the revision reached."""
    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Several instances may start at once: one migrates, the others wait.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7246135)")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot migrate the database: {exc.orig}") from None
    return current_revision(engine)


def require_current(engine: Engine) -> None:
    """Fail clearly when the schema is not at head (auto_migrate = false)."""
    have, want = current_revision(engine), head_revision(engine)
    if have != want:
        raise DatabaseError(f"database schema is at {have or 'nothing'}, this redline needs "
                            f"{want}: run `redline db upgrade`")

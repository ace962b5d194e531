"""Alembic, run in-process on our own engine: `redline db upgrade` and `redline db current`.

Alembic is imported only when a migration actually has to run: the common start-up (schema
already at head) reads the `alembic_version` table and compares it with `SCHEMA_HEAD`, which
a test keeps equal to the newest migration in `migrations/versions/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from daemon.errors import DatabaseError, SchemaTooNew
from daemon.store import SCHEMA_HEAD

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    if not (MIGRATIONS_DIR / "env.py").exists():
        raise DatabaseError(f"migrations not found at {MIGRATIONS_DIR}: install redline from "
                            "its source tree (pip install -e .)")
    cfg = AlembicConfig()
    # configparser values: a "%" (a path's own, or one that URL quoting made of "#") must
    # be doubled, or it is read as interpolation and the migration fails with a traceback
    for key, value in (("script_location", str(MIGRATIONS_DIR)),
                       ("sqlalchemy.url", engine.url.render_as_string(hide_password=False))):
        cfg.set_main_option(key, value.replace("%", "%%"))
    return cfg


def head_revision(engine: Engine) -> str | None:
    """The newest migration on disk (what `redline db upgrade` would reach)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def is_newer(engine: Engine, revision: str) -> bool:
    """True when `revision` is not among this redline's migrations: a newer redline put
    the database there (an older one, or a rolled-back upgrade, now meets it)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(_alembic_config(engine)).get_revision(revision)
    except CommandError:
        return True
    return False


def is_foreign(engine: Engine) -> bool:
    """True when the database has no `statements` table: with an `alembic_version` that
    names no redline migration, it is another application's Alembic database (a wrong
    database.url), not one a newer redline upgraded."""
    with engine.connect() as conn:
        return not sa.inspect(conn).has_table("statements")


def unmigrated_tables(engine: Engine) -> list[str]:
    """The tables in a database no redline migration has touched (no schema revision)
    that make it another application's: on SQLite any table (a file is one application's
    store: a wrong path names another's); on PostgreSQL, where a database is often shared
    (and extensions add tables of their own), those and views named like redline's."""
    from daemon.store.schema import VIEW_NAMES, metadata

    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        found = [*inspector.get_table_names(), *inspector.get_view_names()]
    if engine.dialect.name == "sqlite":  # (an empty alembic_version: downgraded to nothing)
        return sorted(t for t in found if t != "alembic_version")
    ours = {*metadata.tables, *VIEW_NAMES, "statement_search"}
    return sorted(t for t in found if t in ours)


def _refuse_unmigrated_tables(engine: Engine) -> None:
    tables = unmigrated_tables(engine)
    if tables:
        raise SchemaTooNew(f"not a redline database: it has no redline schema but holds "
                           f"{shown_tables(tables)}; redline adds its tables only to an empty "
                           "database: check database.url")


def shown_tables(tables: list[str]) -> str:
    more = f" and {len(tables) - 5} more" if len(tables) > 5 else ""
    return f"{'a table' if len(tables) == 1 else 'tables'} ({', '.join(tables[:5])}{more})"


def _newer_schema(have: str, engine: Engine | None = None) -> SchemaTooNew:
    if engine is not None and is_foreign(engine):
        return SchemaTooNew(f"not a redline database: its schema is at {have}, which is no "
                            "redline migration, and it has no redline tables; check "
                            "database.url")
    return SchemaTooNew(f"database schema is at {have}, newer than this redline knows "
                        f"(up to {SCHEMA_HEAD}): a newer redline has upgraded it; run that "
                        "version, or point this one at another database")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None for an empty database)."""
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DatabaseError as exc:  # OperationalError, or SQLite's "file is not a
        # database" (a DatabaseError only): a wrong path or a damaged file, not a traceback
        where = f" {_sqlite_path(engine)}" if engine.dialect.name == "sqlite" else ""
        # one line: libpq adds its hints on lines of their own
        reason = "; ".join(line.strip() for line in str(exc.orig).splitlines() if line.strip())
        raise DatabaseError(f"cannot open the database{where}: {reason}") from None


def _sqlite_path(engine: Engine) -> str:
    """The file a SQLite engine opens, also when a reader opens it as a URI
    (`file:/path?mode=ro`, escaped)."""
    from urllib.parse import unquote

    db = engine.url.database or ""
    return unquote(db.removeprefix("file:")) if db.startswith("file:") else db


def upgrade(engine: Engine) -> str | None:
    """Bring the schema to the newest migration; return the revision reached."""
    have = current_revision(engine)
    if have == SCHEMA_HEAD:  # the common case: nothing to do
        return SCHEMA_HEAD
    from alembic import command

    if have is not None and is_newer(engine, have):
        raise _newer_schema(have, engine)
    if have is None:
        _refuse_unmigrated_tables(engine)
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
    have = current_revision(engine)
    if have is not None and have != SCHEMA_HEAD and is_newer(engine, have):
        raise _newer_schema(have, engine)
    if have is None:
        _refuse_unmigrated_tables(engine)
    if have != SCHEMA_HEAD:
        raise DatabaseError(f"database schema is at {have or 'nothing'}, this redline needs "
                            f"{SCHEMA_HEAD}: run `redline db upgrade`")

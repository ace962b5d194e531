"""`redline db upgrade` and `redline db current`."""

from __future__ import annotations

import click

from daemon.cli.app import App
from daemon.store import migrate
from daemon.store.engine import make_engine


@click.group()
def db() -> None:
    """Database schema migrations (Alembic).

    \b
    Example:
      redline db upgrade && redline db current
    """


@db.command()
@click.pass_obj
def upgrade(app: App) -> None:
    """Create or upgrade the schema to the newest migration.

    \b
    Example:
      REDLINE_DATABASE_URL=sqlite:////tmp/r.db redline db upgrade
    """
    engine = make_engine(app.config.database.url)
    reached = migrate.upgrade(engine)
    click.echo(f"database at revision {reached} (head)")


@db.command()
@click.pass_obj
def current(app: App) -> None:
    """Show the schema revision of the database and the newest one available.

    \b
    Example:
      redline db current
    """
    app.require_database()
    engine = make_engine(app.config.database.url, readonly=True)
    have, want = migrate.current_revision(engine), migrate.head_revision(engine)
    if have == want:
        state = "up to date"
    elif have is not None and migrate.is_newer(engine, have):
        state = ("not a redline database: no redline migration, no redline tables"
                 if migrate.is_foreign(engine) else
                 "newer than this redline: run the redline that upgraded it")
    else:
        state = "needs `redline db upgrade`"
    click.echo(f"current: {have or 'none'}  head: {want}  ({state})")

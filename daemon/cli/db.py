"""`redline db upgrade` and `redline db current`."""

from __future__ import annotations

import click

from daemon.cli.app import App, echo_json
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")
@click.pass_obj
def current(app: App, as_json: bool) -> None:
    """Show the schema revision of the database and the newest one available.

    `--json` prints {"current", "head", "state"}, state one of up_to_date,
    needs_upgrade, newer, not_redline.

    \b
    Example:
      redline db current
      redline db current --json | jq -r .state
    """
    app.require_database()
    engine = make_engine(app.config.database.url, readonly=True)
    have, want = migrate.current_revision(engine), migrate.head_revision(engine)
    if have == want:
        state, text = "up_to_date", "up to date"
    elif have is not None and migrate.is_newer(engine, have):
        state, text = (
            ("not_redline", "not a redline database: no redline migration, no redline tables")
            if migrate.is_foreign(engine) else
            ("newer", "newer than this redline: run the redline that upgraded it"))
    elif have is None and (tables := migrate.unmigrated_tables(engine)):
        state, text = "not_redline", (f"not a redline database: no redline schema, "
                                      f"{migrate.shown_tables(tables)}")
    else:
        state, text = "needs_upgrade", "needs `redline db upgrade`"
    if as_json:
        echo_json({"current": have, "head": want, "state": state})
        return
    click.echo(f"current: {have or 'none'}  head: {want}  ({text})")

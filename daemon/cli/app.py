"""What every command shares: the configuration, the database, and error handling.

SQLAlchemy is imported when a command first needs the database, not before: the no-change
`redline ingest` (daemon.survey) answers without it.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

import click

from daemon.config import Config, find_config_path, load_config
from daemon.errors import DatabaseError, RedlineError, escape_controls, first_line

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class App:
    """Loaded lazily, so `--help` and `--version` never need a configuration."""

    def __init__(self, config_path: str | None, environ: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)

    @cached_property
    def config(self) -> Config:
        return load_config(find_config_path(self.config_path, self.environ), self.environ)

    def require_database(self) -> None:
        """Fail clearly when a SQLite database file is not there: a command that only reads
        must not create an empty one (say, at a mistyped path)."""
        from daemon.store.engine import require_sqlite_file

        require_sqlite_file(self.config.database.url,
                            "`redline ingest` or `redline db upgrade`"
                            if self.config.database.auto_migrate else "`redline db upgrade`")

    def engine(self, *, migrate_now: bool = True, readonly: bool = False) -> Engine:
        """The database engine; migrates first unless `auto_migrate = false`."""

        from daemon.store import migrate
        from daemon.store.engine import make_engine

        url = self.config.database.url
        if readonly or (migrate_now and not self.config.database.auto_migrate):
            self.require_database()
        engine = make_engine(url, readonly=readonly)
        if migrate_now and not readonly:
            if self.config.database.auto_migrate:
                migrate.upgrade(engine)
            else:
                migrate.require_current(engine)
        elif readonly:
            migrate.require_current(engine)
        return engine


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


class RedlineGroup(click.Group):
    """The one place where an error becomes one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RedlineError as exc:
            click.echo(f"redline: error: {escape_controls(str(exc))}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except BrokenPipeError:
            # `redline events | head -1`: the reader has what it wanted. Left to click, a
            # broken pipe becomes exit 1 (our "not found"), failing `set -o pipefail`.
            # Point stdout at /dev/null so that the flush at exit cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise click.exceptions.Exit(0) from None
        except Exception as exc:
            if not _operational_error(exc):
                raise
            click.echo(f"redline: error: database: {first_line(exc, 1000)}", err=True)
            raise click.exceptions.Exit(1) from None


def run_cli(group: click.Group, args: list[str] | None = None) -> int:
    """Run the CLI; a RedlineError becomes one line on stderr and its exit code."""
    try:
        code = group.main(args=args, prog_name="redline", standalone_mode=False)
    except RedlineError as exc:
        click.echo(f"redline: error: {escape_controls(str(exc))}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("redline: aborted", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as exc:
        if not _operational_error(exc):
            raise
        click.echo(f"redline: error: database: {DatabaseError(str(exc.orig)).args[0]}",
                   err=True)
        return 1
    return code if isinstance(code, int) else 0


# SQLSTATE classes (and one code) that say something about the server, the role or the
# data rather than about redline's SQL: a refused connection or login (08, 28, 3D), data
# the server refuses (22, 54), a read-only standby (25), resources (53), an administrator
# (57), the system (58), no privilege on a table (42501). Other errors keep their trace.
_SERVER_STATES = ("08", "22", "25", "28", "3D", "53", "54", "57", "58", "42501")


def _operational_error(exc: Exception) -> bool:
    """A SQLAlchemy OperationalError, or an error in which the server says no for its own
    reasons (above), told without importing SQLAlchemy (a command that never loaded it
    cannot have raised one)."""
    sa = sys.modules.get("sqlalchemy")
    if sa is None or not isinstance(exc, sa.exc.DBAPIError):
        return False
    if isinstance(exc, sa.exc.OperationalError):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    return isinstance(code, str) and (code in _SERVER_STATES or code[:2] in _SERVER_STATES)

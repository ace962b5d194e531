"""The `redline` command line: thin click commands over the modules of `daemon`.

Each area keeps its commands in its own module; this one holds the group, the global
options, and the one place where a RedlineError becomes one line on stderr and an exit code.
"""

from __future__ import annotations

import sys

import click

from daemon import __version__
from daemon.cli.app import App, RedlineGroup, run_cli
from daemon.cli.db import db
from daemon.cli.ingest import config_group, ingest
from daemon.cli.run import run
from daemon.cli.notify import deliveries_cmd, notify_group
from daemon.cli.read import diff, errors, events, history, search, status
from daemon.cli.serve import serve


@click.group(cls=RedlineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="Configuration file (default: $REDLINE_CONFIG, else ./config.toml).")
@click.version_option(__version__, "--version", prog_name="redline")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """redline: watch folders of official statements and keep every revision in SQL.

    \b
    Example:
      redline --config config.toml ingest --json
    """
    ctx.obj = App(config_path)


cli.add_command(ingest)
cli.add_command(db)
cli.add_command(config_group)
cli.add_command(run)
cli.add_command(status)
cli.add_command(history)
cli.add_command(diff)
cli.add_command(search)
cli.add_command(events)
cli.add_command(errors)
cli.add_command(serve)
cli.add_command(notify_group)
cli.add_command(deliveries_cmd)
# Commands of the other areas register here (one line each):
# daemon (issue 3), notifications (issue 4), reading the record (issue 5), serve (issue 7).


def main() -> None:
    sys.exit(run_cli(cli))

"""The `redline` command line: thin click commands over the modules of `daemon`.

Each area keeps its commands in its own module; this one holds the group, the global
options, and the one place where a RedlineError becomes one line on stderr and an exit code.
"""

from __future__ import annotations

import importlib
import sys

import click

from daemon import __version__
from daemon.cli.app import App, RedlineGroup, run_cli

# Command name -> "module:attribute". A command's module (and what it imports: the web
# server, the notifiers, the scheduler) is imported only when that command runs, so
# `redline ingest` starts fast and the ingest reader process stays small.
COMMANDS = {
    "ingest": "daemon.cli.ingest:ingest",
    "db": "daemon.cli.db:db",
    "config": "daemon.cli.ingest:config_group",
    "run": "daemon.cli.run:run",
    "status": "daemon.cli.read:status",
    "history": "daemon.cli.read:history",
    "diff": "daemon.cli.read:diff",
    "search": "daemon.cli.read:search",
    "events": "daemon.cli.read:events",
    "errors": "daemon.cli.read:errors",
    "serve": "daemon.cli.serve:serve",
    "notify": "daemon.cli.notify:notify_group",
    "deliveries": "daemon.cli.notify:deliveries_cmd",
}


class LazyGroup(RedlineGroup):
    """click's documented lazy-loading group: commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command) and command.name == cmd_name, target
        _accept_config_after(command)
        return command


def _accept_config_after(command: click.Command) -> None:
    """`--config PATH` is the group's option (`redline --config PATH run`), but people and
    scripts write it after the command too (`redline run --config PATH`): every command
    takes it there as well, and there it wins."""
    if not any(p.name == "config_path" for p in command.params):
        command.params.append(click.Option(
            ["--config", "config_path"], metavar="PATH", expose_value=False, hidden=True,
            callback=_set_config_path))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_config_after(sub)


def _set_config_path(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(App).config_path = value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main() -> None:
    sys.exit(run_cli(cli))

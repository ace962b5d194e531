"""`redline run`: the daemon in the foreground (what systemd runs)."""

from __future__ import annotations

import click

from daemon.cli.app import App
from daemon.config import Config, LogConfig, find_config_path, load_config
from daemon.logs import configure_logging


@click.command("run")
@click.pass_obj
def run(app: App) -> None:
    """Run the daemon in the foreground: watch the folders, ingest every change, deliver
    notifications and run the scheduled jobs, until SIGTERM or Ctrl-C.

    On start it migrates the database and ingests whatever changed while it was stopped
    before it reports READY=1 to systemd. SIGHUP re-reads the configuration (an invalid
    file keeps the running one). Logs are JSON lines on stdout unless stdout is a terminal.

    \b
    Example:
      redline --config config.toml run
      systemctl reload redline        # sends SIGHUP
    """
    from daemon.service import exit_without_waiting, run_daemon

    def load() -> Config:  # at start and at each SIGHUP
        config = load_config(find_config_path(app.config_path, app.environ), app.environ)
        config.require_secrets()  # the channels' secrets: the daemon sends
        return config

    def logs(cfg: LogConfig) -> None:
        configure_logging(cfg.level, cfg.format)

    status = run_daemon(load, logs, app.environ)
    # a send in flight in a non-daemon thread (the scheduler's pool) would keep the process
    # alive until the receiver's timeout, past systemd's TimeoutStopSec: not waited for
    exit_without_waiting(status)
    click.get_current_context().exit(status)

"""`redline serve`: the read-only web view, Atom feed and JSON API (SPEC §10)."""

from __future__ import annotations

import os
import sys

import click

from daemon.cli.app import App
from daemon.errors import RedlineError
from daemon.logs import configure_logging


@click.command()
@click.option("--host", default=None, metavar="ADDRESS",
              help="Address to listen on (default: [serve] host, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port to listen on (default: [serve] port, 8765).")
@click.pass_obj
def serve(app: App, host: str | None, port: int | None) -> None:
    """Serve the record read-only: web pages, an Atom feed and a JSON API.

    Pages: / (recent changes), /statements/ID, /statements/ID/diff?from=N&to=M,
    /search?q=, /errors, /deliveries. Feed: /feed.atom?kind=&tag=. API: /api/
    (described by /api/openapi.json). With [serve] token_env set, every request needs
    "Authorization: Bearer <token>". The database is opened read-only and never migrated.

    \b
    Example:
      redline serve
      redline serve --host 127.0.0.1 --port 8080
      curl -s 'http://127.0.0.1:8765/api/events?kind=revised'
    """
    try:
        from daemon.web.server import read_only_engine
        from daemon.web.server import serve as run_server
    except ModuleNotFoundError as exc:
        # The web server's packages are an extra (`make run` and `pip install -e .` leave
        # them out): say which one is missing and how to get it, not a traceback.
        package = (exc.name or "daemon").partition(".")[0]
        if package == "daemon":
            raise
        raise RedlineError(f"redline serve needs the web packages, and {package} is not "
                           "installed: pip install 'redline[serve]' (in a checkout: "
                           "pip install -e '.[serve]')") from None

    config = app.config
    config.require_secrets(channels=False, serve=True)  # never serve open for want of a token
    configure_logging(config.log.level, config.log.format, sys.stdout)
    engine = read_only_engine(config.database.url)
    try:
        run_server(engine, host or config.serve.host,
                   config.serve.port if port is None else port, config.serve.token,
                   os.environ, access_log=config.log.level == "debug")
    finally:
        engine.dispose()

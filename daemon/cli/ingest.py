"""`redline ingest` and `redline config check`."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from typing import Any

import click

from daemon.cli.app import App, echo_json
from daemon.errors import WatchedFolderError, escape_controls
from daemon.survey import IngestCounts, quick_unchanged


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--confirm-empty", is_flag=True,
              help="A watched folder (or folder PATH) that is empty was emptied on purpose: "
                   "record its statements deleted instead of reporting it.")
@click.pass_obj
def ingest(app: App, paths: tuple[str, ...], as_json: bool, confirm_empty: bool) -> None:
    """One pass over the watched folders (or PATHs): record every change.

    Exit status: 0 all ingested, 1 a folder is missing or emptied, 3 some files were
    rejected (see `redline errors`); Ctrl-C stops after a whole transaction with 1.

    An empty watched folder is taken for an unmounted one and deletes nothing; after
    removing the last files of a folder on purpose, confirm it with --confirm-empty.

    \b
    Example:
      redline ingest --json
      redline ingest seeds/briefings-statements
      redline ingest --confirm-empty seeds/withdrawn
    """
    config = app.config
    started = time.monotonic()
    dirs = [p for p in paths if os.path.isdir(p)]
    singles = [p for p in paths if not os.path.isdir(p)]
    missing = [p for p in singles if not os.path.exists(p)]
    if missing and not os.path.lexists(missing[0]):
        raise WatchedFolderError(f"{missing[0]}: no such file or folder")
    for p in singles:  # a FIFO, a device or a socket is never a statement (none is read)
        if os.path.exists(p) and not os.path.isfile(p):
            raise WatchedFolderError(f"{p}: {_odd_kind(p)}, not a regular file: only files "
                                     "are statements")
    # nothing changed since the last pass (told from the files' stat and the stored records,
    # without loading the database layer): the counts, as the full pass would give them
    quick = None if singles or confirm_empty else quick_unchanged(config, dirs or None)
    if quick is not None:
        _report(quick, time.monotonic() - started, as_json)
        return
    from daemon.ingest import Ingestor
    from daemon.logs import configure_logging
    from daemon.notify.outbox import DeliveryOutbox

    configure_logging("warning", config.log.format, sys.stderr)
    engine = app.engine()
    ingestor = Ingestor(engine, config.watch, DeliveryOutbox(config.channels))
    counts = IngestCounts()
    with _progress(not as_json and sys.stderr.isatty()) as progress, _CtrlC() as ctrl_c:
        if singles:
            counts.merge(ingestor.process_paths(singles, stop=ctrl_c.pressed.is_set))
        if (dirs or not paths) and not ctrl_c.pressed.is_set():
            counts.merge(ingestor.scan(dirs or None, progress=progress,
                                       stop=ctrl_c.pressed.is_set, empty_ok=confirm_empty))
    if ctrl_c.pressed.is_set():
        click.echo("redline: interrupted after a whole transaction; the next ingest takes "
                   "up the rest", err=True)
        click.get_current_context().exit(1)  # SPEC §6: 1 failure
    _report(counts, time.monotonic() - started, as_json)


def _odd_kind(path: str) -> str:
    mode = os.stat(path).st_mode
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def _report(counts: IngestCounts, elapsed: float, as_json: bool) -> None:
    """The counts (JSON or a summary line), folder errors, and the exit status of SPEC §6."""
    if as_json:
        echo_json(counts.as_dict())
    else:
        click.echo(_summary(counts, elapsed))
    for err in counts.folder_errors:
        click.echo(f"redline: error: {escape_controls(err)}", err=True)
    if counts.folder_errors:
        click.get_current_context().exit(1)
    if counts.rejected:
        if not as_json:
            click.echo(f"{counts.rejected} file(s) rejected: see `redline errors`", err=True)
        click.get_current_context().exit(3)


def _summary(c: IngestCounts, elapsed: float) -> str:
    changes = ", ".join(f"{getattr(c, k)} {k}" for k in (
        "added", "revised", "metadata", "formatting", "deleted", "restored") if getattr(c, k))
    return (f"{c.files} file{'' if c.files == 1 else 's'} in {elapsed:.1f} s: "
            f"{changes or 'no changes'}; "
            f"{c.unchanged} unchanged, {c.rejected} rejected")


class _progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar = None
        self._task = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
        self._bar.__enter__()
        self._task = self._bar.add_task("ingesting", total=None)

        def update(done: int, total: int) -> None:
            self._bar.update(self._task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


class _CtrlC:
    """Ctrl-C (SIGINT): the first press stops the ingest after its current transaction, the
    second aborts at once. A flag rather than KeyboardInterrupt, because an exception
    raised by a signal handler is lost when the handler happens to run inside a garbage
    collector callback (seen: the ingest ran on to the end). Left alone where SIGINT is
    ignored (a background job)."""

    def __init__(self) -> None:
        self.pressed = threading.Event()
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.pressed.is_set():
            raise KeyboardInterrupt
        self.pressed.set()

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@click.group("config")
def config_group() -> None:
    """The configuration file.

    \b
    Example:
      redline --config /etc/redline/config.toml config check
    """


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the checked configuration as JSON.")
@click.pass_obj
def config_check(app: App, as_json: bool) -> None:
    """Validate the configuration and say what it would watch.

    \b
    Example:
      redline config check
    """
    config = app.config
    config.require_secrets(channels=True, serve=True)  # what `run` and `serve` will need
    watch = config.watch
    report = {
        "config": str(config.path),
        "database": _hide_password(config.database.url),
        "watch": [{"path": str(p), "exists": p.is_dir()} for p in watch.paths],
        "patterns": list(watch.patterns),
        "ignore": list(watch.ignore),
        "polling": watch.polling,
        "channels": [{"name": c.name, "type": c.type, "mode": c.mode} for c in config.channels],
    }
    if as_json:
        echo_json(report)
        return
    click.echo(f"configuration {config.path}: ok")
    click.echo(f"database: {report['database']}")
    for w in report["watch"]:
        click.echo(f"watch: {w['path']}{'' if w['exists'] else '  (missing!)'}")
    click.echo(f"patterns: {' '.join(watch.patterns)}"
               + (f"; ignoring {' '.join(watch.ignore)}" if watch.ignore else ""))
    for c in config.channels:
        click.echo(f"channel: {c.name} ({c.type}, {c.mode})")


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return url

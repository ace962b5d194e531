"""structlog set-up: JSON lines when not on a terminal, a readable console on one; the
stdlib loggers of watchdog, APScheduler, SQLAlchemy and Alembic go through the same chain."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog

from daemon.errors import escape_controls

_SHARED: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# Library loggers and the most they may say, whatever the configured level: their info
# lines (every scheduled run, every SQL statement) would drown ours. watchdog stays at
# WARNING even when we log only errors: its overflow warnings trigger a reconcile
# (daemon.watch.OverflowSignal listens on its logger).
_LIBRARIES = {
    "watchdog": logging.WARNING,
    "apscheduler": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    "alembic": logging.INFO,
    "alembic.runtime.plugins": logging.WARNING,  # "setup plugin ..." at every migration check
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # Apprise logs the URLs it loads and calls at debug level, urllib3 (under Apprise) the
    # paths it requests: those carry the channels' tokens, which are never logged.
    "apprise": logging.WARNING,
    "urllib3": logging.WARNING,
}


def use_json(fmt: str, stream: IO[str]) -> bool:
    """`auto` means JSON unless the stream is a terminal (systemd, pipes, files)."""
    return fmt == "json" or (fmt == "auto" and not _isatty(stream))


def configure_logging(level: str = "info", fmt: str = "auto", stream: IO[str] | None = None
                      ) -> None:
    """Configure structlog and the stdlib root logger; safe to call again (reload)."""
    stream = stream or sys.stdout
    level_no = logging.getLevelName(level.upper())
    as_json = use_json(fmt, stream)
    renderer: structlog.types.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer(sort_keys=False, default=str)
        final: list[structlog.types.Processor] = [structlog.processors.format_exc_info,
                                                  renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(stream))
        final = [_shown_controls, renderer]  # it renders exceptions itself
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_SHARED,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.setLevel(level_no)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_redline", False):
            root.removeHandler(old)
    handler._redline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level_no)
    for name, most in _LIBRARIES.items():
        logging.getLogger(name).setLevel(max(level_no, most) if name != "watchdog" else most)


def _shown_controls(logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The console's values with control characters written as \\xNN: a file name or a
    statement's words holding an escape sequence are shown, not obeyed by the terminal."""
    return {k: escape_controls(v, keep_breaks=True) if isinstance(v, str) else v
            for k, v in event_dict.items()}


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

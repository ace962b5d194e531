"""structlog set-up: JSON lines when not on a terminal, a readable console on one; the
stdlib loggers of watchdog, APScheduler, SQLAlchemy and Alembic go through the same chain."""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog

_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "info", fmt: str = "auto", stream: IO[str] | None = None
                      ) -> None:
    """Configure structlog and the stdlib root logger once; safe to call again (reload)."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (structlog.processors.JSONRenderer() if use_json
                else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_redline", False):
            root.removeHandler(old)
    handler._redline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # chatty libraries: their warnings matter, their info lines do not
    for name in ("watchdog", "apscheduler", "sqlalchemy.engine", "alembic", "httpx"):
        logging.getLogger(name).setLevel(max(logging.getLevelName(level.upper()),
                                             logging.WARNING if name != "alembic" else
                                             logging.INFO))

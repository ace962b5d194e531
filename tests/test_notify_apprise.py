"""Tests for daemon.notify.apprise: a real Apprise URL pointed at a local HTTP receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from notify_support import (
    FakeClock,
    HttpReceiver,
    config_for,
    copy_statements,
    dispatch_once,
    edit_one_word,
    ingestor,
    rows,
)

pytest.importorskip("apprise")
# apprise imports the deprecated stdlib imghdr when it first sends
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")


def apprise_channel() -> str:
    return '[[channels]]\nname = "chat"\ntype = "apprise"\nurls_env = "CHAT_URLS"\n\n'


def test_an_event_reaches_an_apprise_url(engine: sa.Engine, db_url: str, sample: Path,
                                         tmp_path: Path) -> None:
    """A json:// Apprise URL from the environment receives the subject and the plain-text
    rendering with the summary and the changed word."""
    clock = FakeClock()
    with HttpReceiver() as rx:
        url = rx.url.replace("http://", "json://")
        config = config_for(tmp_path, db_url, apprise_channel().replace(
            '"chat"', '"chat"\nkinds = ["revised"]'), environ={"CHAT_URLS": url})
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ing = ingestor(engine, config, clock)
        ing.process_paths([str(path)])
        edit_one_word(path, "Zanzibar")
        ing.process_paths([str(path)])
        assert dispatch_once(engine, config, clock) == 1
        (req,) = rx.wait_for(1)
    got = json.loads(req.body)
    assert got["title"].startswith("[redline] revised: ")
    assert "1 paragraph changed: +1 word, -1 word" in got["message"]
    assert "Zanzibar" in got["message"]
    assert rows(engine, "SELECT status FROM delivery_status")[0][0] == "delivered"


def test_a_failing_apprise_url_is_retried(engine: sa.Engine, db_url: str, sample: Path,
                                          tmp_path: Path) -> None:
    """When the Apprise target answers 500 the delivery fails (to be retried) and the
    recorded error does not contain the URL (URLs carry tokens)."""
    clock = FakeClock()
    with HttpReceiver(default_status=500) as rx:
        url = rx.url.replace("http://", "json://") + "?token=SECRET-TOKEN"
        config = config_for(tmp_path, db_url, apprise_channel(), environ={"CHAT_URLS": url})
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        dispatch_once(engine, config, clock)
        rx.wait_for(1)
    (row,) = rows(engine, "SELECT status, attempts, last_error FROM delivery_status")
    assert row[:2] == ("failed", 1)
    assert "Apprise could not notify" in row[2] and "SECRET-TOKEN" not in row[2]


def test_debug_logging_never_shows_the_apprise_urls(engine: sa.Engine, db_url: str,
                                                     sample: Path, tmp_path: Path,
                                                     logging_reset: None) -> None:
    """Secrets are never logged, even at `[log] level = "debug"`: Apprise and urllib3 log
    the URLs they load and call at debug level (a Slack URL is its token), so they are held
    back to warnings like the other libraries."""
    import io

    from daemon.logs import configure_logging

    out = io.StringIO()
    configure_logging("debug", "json", out)
    clock = FakeClock()
    with HttpReceiver() as rx:
        url = (rx.url.replace("http://", "json://user:PASS-SECRET@")
               + "?+X-Token=HEADER-SECRET")
        config = config_for(tmp_path, db_url, apprise_channel(), environ={"CHAT_URLS": url})
        (path,) = copy_statements(sample, tmp_path / "statements", 1)
        ingestor(engine, config, clock).process_paths([str(path)])
        assert dispatch_once(engine, config, clock) == 1
        (req,) = rx.wait_for(1)
    assert req.headers["X-Token"] == "HEADER-SECRET"  # the secret was really used
    logged = out.getvalue()
    assert "HEADER-SECRET" not in logged and "PASS-SECRET" not in logged

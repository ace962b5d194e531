"""Tests for daemon.config: every key validated, errors name the key, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.config import load_config, parse_config
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_watches_seeds_and_is_valid() -> None:
    """The shipped config.toml parses and watches seeds/ next to it."""
    config = load_config(REPO / "config.toml", {})
    assert config.watch.paths == (REPO / "seeds",)
    assert config.database.url == f"sqlite:///{REPO / 'redline.db'}"
    assert [c.name for c in config.channels] == ["archive"]


def test_the_default_digest_schedule_is_one_apscheduler_accepts(tmp_path: Path) -> None:
    """Loading a configuration does not validate the default digest_cron with APScheduler
    (its import would slow every command): it must be valid, and fire daily at 08:00."""
    import datetime as dt

    from apscheduler.triggers.cron import CronTrigger

    cron = parse_config({}, tmp_path, {}).schedule.digest_cron
    trigger = CronTrigger.from_crontab(cron, timezone="UTC")
    start = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
    assert trigger.get_next_fire_time(None, start) == dt.datetime(2026, 12, 3, 8, 0,
                                                                  tzinfo=dt.UTC)


def test_environment_overrides_database_url(tmp_path: Path) -> None:
    """$REDLINE_DATABASE_URL wins over [database] url."""
    cfg = parse_config({}, tmp_path, {"REDLINE_DATABASE_URL": "postgresql+psycopg://h/db"})
    assert cfg.database.url == "postgresql+psycopg://h/db"


def test_config_is_frozen(tmp_path: Path) -> None:
    """The configuration object cannot be changed after loading."""
    cfg = parse_config({}, tmp_path, {})
    with pytest.raises(AttributeError):
        cfg.watch.debounce_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(("data", "message"), [
    ({"watch": {"pathz": ["x"]}}, "watch.pathz: unknown key"),
    ({"nope": {}}, "nope: unknown key"),
    ({"watch": {"debounce_ms": "fast"}}, "watch.debounce_ms: expected an integer, got 'fast'"),
    ({"watch": {"debounce_ms": -1}}, "watch.debounce_ms: must be between 0 and 60000"),
    ({"watch": {"polling": "yes"}}, "watch.polling: expected true or false"),
    ({"watch": {"patterns": []}}, "watch.patterns: must not be empty"),
    ({"schedule": {"digest_cron": "every day"}}, "schedule.digest_cron: not a valid crontab"),
    ({"schedule": {"timezone": "Mars/Base"}}, "schedule.timezone: unknown time zone"),
    ({"log": {"level": "loud"}}, "log.level: must be one of debug, info, warning, error"),
    ({"channels": [{"name": "a", "type": "fax"}]}, "channels.a.type: must be one of"),
    ({"channels": [{"name": "a", "type": "webhook"}]}, "channels.a.url: required"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "http://x", "kinds": ["big"]}]},
     "channels.a.kinds: unknown kind 'big'"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "http://x",
                    "secret_env": "NOPE_SECRET"}]},
     "channels.a.secret_env: environment variable NOPE_SECRET is not set"),
    ({"channels": [{"name": "a", "type": "jsonl", "path": "x"},
                   {"name": "a", "type": "jsonl", "path": "y"}]}, "duplicate channel name"),
    ({"channels": [{"name": "a", "type": "pg_notify"}]}, "pg_notify needs a PostgreSQL"),
    ({"database": {"url": "not a url"}}, "database.url: not a database URL"),
])
def test_bad_values_name_their_key(tmp_path: Path, data: dict, message: str) -> None:
    """Each bad key or value raises ConfigError whose message names the key."""
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path, {})
    assert message in str(err.value)


def test_cli_reports_a_bad_config_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """`redline config check` on a bad file: exit 2, one line naming the key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[watch]\ndebounce_ms = "fast"\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config", "check"])
    assert result.exit_code == 2
    assert result.output == ("redline: error: watch.debounce_ms: expected an integer, "
                             "got 'fast'\n")


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A missing configuration file is a configuration error (exit 2)."""
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "none.toml"), "config",
                                      "check"])
    assert result.exit_code == 2
    assert "configuration file not found" in result.output


def test_config_check_says_what_it_would_watch(tmp_path: Path) -> None:
    """`config check` lists the watched folders, patterns and channels."""
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text('[watch]\npaths = ["in", "gone"]\n[[channels]]\nname = "log"\n'
                   'type = "jsonl"\npath = "e.jsonl"\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"configuration {cfg}: ok",
        f"database: sqlite:///{tmp_path / 'redline.db'}",
        f"watch: {tmp_path / 'in'}",
        f"watch: {tmp_path / 'gone'}  (missing!)",
        "patterns: *.md *.txt",
        "channel: log (jsonl, immediate)",
    ]

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
    ({"channels": [{"name": "a", "type": "webhook", "url": "ftp://x"}]},
     "channels.a.url: expected an http:// or https:// URL with a host"),
    ({"channels": [{"name": "a", "type": "webhook", "url": "not a url"}]},
     "channels.a.url: expected an http:// or https:// URL with a host"),
    ({"channels": [{"name": "a", "type": "email", "host": "h", "port": 70000,
                    "from": "r@example.org", "to": ["d@example.org"]}]},
     "channels.a.port: must be between 1 and 65535, got 70000"),
    ({"channels": [{"name": "a", "type": "email", "host": "h", "from": "nobody",
                    "to": ["d@example.org"]}]}, "channels.a.from: 'nobody' is not an email"),
    ({"channels": [{"name": "a", "type": "email", "host": "h", "from": "r@example.org",
                    "to": ["Desk <d@example.org>", "desk"]}]},
     "channels.a.to: 'desk' is not an email address"),
    ({"channels": [{"name": "a", "type": "jsonl", "path": "x", "backoff_seconds": 60,
                    "backoff_max_seconds": 10}]},
     "channels.a.backoff_max_seconds: 10 is less than backoff_seconds (60)"),
    ({"channels": [{"name": "a", "type": "jsonl", "path": "x"},
                   {"name": "a", "type": "jsonl", "path": "y"}]}, "duplicate channel name"),
    ({"channels": [{"name": "a", "type": "pg_notify"}]}, "pg_notify needs a PostgreSQL"),
    ({"database": {"url": "not a url"}}, "database.url: not a database URL"),
    ({"database": {"url": "postgresq+psycopg://u@h/db"}},
     "database.url: unknown database type 'postgresq+psycopg'; expected sqlite:///PATH or "
     "postgresql+psycopg://USER@HOST/NAME"),
    ({"database": {"url": "postgresql+psycopgg://u@h/db"}},
     "database.url: unknown database type 'postgresql+psycopgg'"),
    ({"database": {"url": "postgres://u:secret@h/db"}},
     "database.url: unknown database type 'postgres' (postgres:// is spelled postgresql://)"),
    ({"database": {"url": "postgresql+psycopg://u@h:54x2/db"}},
     "database.url: the port must be a number from 1 to 65535"),
    ({"database": {"url": "postgresql://u@h:99999/db"}},
     "database.url: the port must be a number from 1 to 65535"),
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


def test_a_database_url_typo_is_a_configuration_error_not_a_traceback(tmp_path: Path) -> None:
    """A misspelt scheme in $REDLINE_DATABASE_URL or database.url is exit 2 with one line
    naming where the URL came from, for every command that opens the database; it was a
    NoSuchModuleError traceback with exit 1. The password in the URL is never shown."""
    cfg = tmp_path / "config.toml"
    for url in ["postgresq+psycopg://u:secret@127.0.0.1/db", "postgres://u:secret@h/db",
                "postgresql+psycopg://u:secret@127.0.0.1:5x32/db"]:
        for where, env in (("$REDLINE_DATABASE_URL", {"REDLINE_DATABASE_URL": url}),
                           ("database.url", {})):
            cfg.write_text("" if env else f'[database]\nurl = "{url}"\n')
            for args in (["status"], ["db", "upgrade"], ["ingest"], ["config", "check"]):
                result = CliRunner().invoke(cli, ["--config", str(cfg), *args], env=env)
                assert result.exit_code == 2, (url, args, result.output)
                assert result.output.startswith(f"redline: error: {where}: "), result.output
                assert len(result.output.splitlines()) == 1 and "secret" not in result.output


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


SECRET_CONFIG = ('[[channels]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:9/"\n'
                 'secret_env = "HOOK_SECRET"\n[serve]\ntoken_env = "SERVE_TOKEN"\n')


@pytest.mark.parametrize(("environ", "state"), [({}, "is not set"),
                                                ({"HOOK_SECRET": ""}, "is empty")])
def test_a_missing_secret_stops_what_needs_it_and_nothing_else(
        tmp_path: Path, environ: dict[str, str], state: str) -> None:
    """A channel's secret missing from the environment (or empty: it would send unsigned)
    is a configuration error, exit 2 naming the key, for `redline run`, `notify test` and
    `config check`; the commands that only read the database work without it, as an
    operator's shell without the service's secrets needs."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(SECRET_CONFIG)
    env = {**environ, "SERVE_TOKEN": "t"}
    message = f"redline: error: channels.hook.secret_env: environment variable HOOK_SECRET {state}"

    def redline(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--config", str(cfg), *args], env=env)
        return result.exit_code, result.output

    for args in (["run"], ["notify", "test"], ["config", "check"]):
        assert redline(*args) == (2, message + "\n"), args
    assert redline("db", "upgrade")[0] == 0
    for args in (["status"], ["events"], ["errors"], ["deliveries"], ["db", "current"]):
        code, output = redline(*args)
        assert code in (0, 1) and "HOOK_SECRET" not in output, (args, output)
    assert redline("status", "--json")[0] == 0
    # the secret set: nothing to complain about
    env["HOOK_SECRET"] = "s"
    assert redline("config", "check")[0] == 0


def test_serve_refuses_to_start_without_its_token(tmp_path: Path) -> None:
    """`serve` with token_env naming an unset or empty variable exits 2 instead of serving
    without the token; the channels' secrets are not its business."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(SECRET_CONFIG)
    for env in ({}, {"SERVE_TOKEN": ""}):
        result = CliRunner().invoke(cli, ["--config", str(cfg), "serve"], env=env)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("redline: error: serve.token_env: environment "
                                        "variable SERVE_TOKEN is")


def test_a_sender_is_never_made_without_its_secret(tmp_path: Path) -> None:
    """Whatever path reaches it, a channel whose secret is missing makes no sender."""
    from daemon.notify.channels import make_sender

    cfg = parse_config({"channels": [{"name": "h", "type": "webhook", "url": "http://x/",
                                      "secret_env": "HOOK_SECRET"}]}, tmp_path, {})
    with pytest.raises(ConfigError, match="channels.h.secret_env: environment variable "
                                          "HOOK_SECRET is not set"):
        make_sender(cfg.channels[0])


@pytest.mark.parametrize(("toml", "message"), [
    ("[schedule]\ndispatch_seconds = nan\n",
     "schedule.dispatch_seconds: expected a finite number, got nan"),
    ("[schedule]\nreconcile_minutes = inf\n",
     "schedule.reconcile_minutes: expected a finite number, got inf"),
    ("[schedule]\nreconcile_minutes = 1e300\n",
     "schedule.reconcile_minutes: must be at most 525600, got 1e+300"),
    ('[[channels]]\nname = "a"\ntype = "jsonl"\npath = "e"\nbackoff_seconds = nan\n',
     "channels.a.backoff_seconds: expected a finite number, got nan"),
    ('[[channels]]\nname = "a"\ntype = "jsonl"\npath = "e"\ntimeout_seconds = -inf\n',
     "channels.a.timeout_seconds: expected a finite number, got -inf"),
    ('[[channels]]\nname = "a"\ntype = "jsonl"\npath = "e"\ntimeout_seconds = 1e12\n',
     "channels.a.timeout_seconds: must be at most 3600, got 1e+12"),
    # a year in seconds read "must be at most 3.1536e+07, got 3.1536e+07": the bound and the
    # value rounded alike, so the message did not say what was wrong
    ('[[channels]]\nname = "a"\ntype = "jsonl"\npath = "e"\nbackoff_max_seconds = 31536001\n',
     "channels.a.backoff_max_seconds: must be at most 31536000, got 31536001"),
    ('[[channels]]\nname = "a"\ntype = "jsonl"\npath = "e"\nbackoff_seconds = 1234567.5\n'
     'backoff_max_seconds = 1234567\n',
     "channels.a.backoff_max_seconds: 1234567 is less than backoff_seconds (1234567.5)"),
])
def test_toml_inf_nan_and_huge_periods_are_bad_values(tmp_path: Path, toml: str,
                                                      message: str) -> None:
    """TOML's `nan` passes every comparison and `inf` or 1e300 overflow a timedelta: they
    were accepted, and `redline run` then died with a traceback in APScheduler (or the
    delivery lease). They are bad values now: one line naming the key, exit 2."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(toml)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config", "check"])
    assert result.exit_code == 2, result.output
    assert result.output == f"redline: error: {message}\n"


def test_relative_paths_are_taken_from_the_config_folder_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As README "Configuration" says: watched folders, a jsonl path and a relative SQLite
    path, in the file or in $REDLINE_DATABASE_URL, are relative to the file's folder."""
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "config.toml").write_text('[watch]\npaths = ["in"]\n[[channels]]\nname = "j"\n'
                                      'type = "jsonl"\npath = "out/e.jsonl"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc/config.toml"), {})
    assert cfg.watch.paths == (conf / "in",)
    assert cfg.channels[0].options["path"] == conf / "out" / "e.jsonl"
    assert cfg.database.url == f"sqlite:///{conf / 'redline.db'}"
    env = load_config(Path("etc/config.toml"), {"REDLINE_DATABASE_URL": "sqlite:///x/r.db"})
    assert env.database.url == f"sqlite:///{conf / 'x' / 'r.db'}"
    absolute = load_config(Path("etc/config.toml"),
                           {"REDLINE_DATABASE_URL": "sqlite:////tmp/r.db"})
    assert absolute.database.url == "sqlite:////tmp/r.db"


def test_a_bad_database_url_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    """$REDLINE_DATABASE_URL wins over the file; a bad value in it was reported as
    `database.url`, sending the reader to a file that holds no such value."""
    with pytest.raises(ConfigError, match=r"^\$REDLINE_DATABASE_URL: not a database URL: "
                                          r"'nonsense'$"):
        parse_config({"database": {"url": "sqlite:///ok.db"}}, tmp_path,
                     {"REDLINE_DATABASE_URL": "nonsense"})
    with pytest.raises(ConfigError, match=r"^database\.url: not a database URL"):
        parse_config({"database": {"url": "nonsense"}}, tmp_path, {})


def test_an_empty_serve_host_is_a_bad_value_not_every_address(tmp_path: Path) -> None:
    """`[serve] host = ""` (an unset template variable, say) made `redline serve` listen
    on 0.0.0.0 and :: (uvicorn's reading of ""), exposing the record with only a warning.
    It is a bad value; every address must be asked for by name."""
    for host in ("", "  "):
        with pytest.raises(ConfigError, match=r"^serve\.host: must not be empty"):
            parse_config({"serve": {"host": host}}, tmp_path, {})
    assert parse_config({"serve": {"host": "0.0.0.0"}}, tmp_path, {}).serve.host == "0.0.0.0"


# SPEC §5's configuration, as printed there
SPEC_EXAMPLE = '''
[watch]
paths = ["seeds"]
patterns = ["*.md", "*.txt"]
ignore = []            # added to the built-in ignores
recursive = true
debounce_ms = 200
polling = false        # true: stat-polling for network file systems
max_file_bytes = 5000000

[database]
url = "sqlite:///redline.db"
auto_migrate = true

[schedule]
dispatch_seconds = 5         # delivery job; new events also wake it at once
reconcile_minutes = 60       # full rescan catches anything the watcher missed
digest_cron = "0 8 * * *"    # for channels in digest mode
timezone = "UTC"

[serve]                      # redline serve: read-only web view, feed and API
host = "127.0.0.1"
port = 8765
token_env = ""               # when set, requests need "Authorization: Bearer <token>"

[log]
level = "info"
format = "auto"              # json when stdout is not a terminal

[[channels]]
name = "newsroom"
type = "webhook"             # webhook | email | jsonl | apprise | (postgres: pg_notify)
url = "https://example.org/hooks/redline"
secret_env = "REDLINE_WEBHOOK_SECRET"
mode = "immediate"           # immediate | digest
kinds = ["added", "revised", "metadata", "deleted", "restored"]
ignore_fields = ["modified_time"]   # a metadata change of only these fields notifies no one
max_attempts = 8
backoff_seconds = 2          # first retry delay; doubles each attempt, with jitter
backoff_max_seconds = 3600

[[channels]]
name = "desk"
type = "email"
host = "smtp.example.org"
port = 587
starttls = true              # false for a plain local relay; tls = true for implicit TLS
username_env = "REDLINE_SMTP_USER"      # optional
password_env = "REDLINE_SMTP_PASSWORD"  # optional
from = "redline@example.org"
to = ["desk@example.org"]
mode = "digest"

[[channels]]
name = "archive"
type = "jsonl"
path = "events.jsonl"

[[channels]]
name = "chat"
type = "apprise"
urls_env = "REDLINE_APPRISE_URLS"       # one or more Apprise URLs, space separated
'''


def test_the_spec_example_is_valid_and_shows_the_defaults(tmp_path: Path) -> None:
    """Every key of SPEC §5's example is accepted, with its secrets from the environment;
    the values it shows are what a configuration without them gets, and a channel given
    only its name, type and target gets the example's mode, kinds and retry settings."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(SPEC_EXAMPLE)
    env = {"REDLINE_WEBHOOK_SECRET": "s", "REDLINE_SMTP_USER": "u",
           "REDLINE_SMTP_PASSWORD": "p", "REDLINE_APPRISE_URLS": "json://127.0.0.1/"}
    spec = load_config(cfg, env)
    spec.require_secrets(channels=True, serve=True)
    bare = '[[channels]]\nname = "newsroom"\ntype = "webhook"\nurl = "https://example.org/h"\n'
    cfg.write_text(bare)
    default = load_config(cfg, {})
    for section in ("watch", "database", "schedule", "serve", "log"):
        assert getattr(default, section) == getattr(spec, section), section
    assert default.watch.paths == (tmp_path / "seeds",)
    assert default.database.url == f"sqlite:///{tmp_path / 'redline.db'}"
    newsroom, desk, archive, chat = spec.channels
    (plain,) = default.channels
    for key in ("mode", "kinds", "max_attempts", "backoff_seconds", "backoff_max_seconds"):
        assert getattr(plain, key) == getattr(newsroom, key), key
    assert (plain.ignore_fields, newsroom.ignore_fields) == ((), ("modified_time",))
    assert newsroom.secrets == {"secret": "s"}
    assert (desk.mode, desk.options["port"], desk.options["starttls"], desk.options["tls"],
            desk.secrets) == ("digest", 587, True, False, {"username": "u", "password": "p"})
    assert archive.options["path"] == tmp_path / "events.jsonl"
    assert (chat.type, chat.secrets) == ("apprise", {"urls": "json://127.0.0.1/"})


def test_config_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    """`--config PATH` works as `redline --config PATH CMD` and as `redline CMD --config
    PATH` (how people and scripts write it), nested commands included; after the command
    it wins over one given before it."""
    db = tmp_path / "r.db"
    (tmp_path / "statements").mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\npaths = ["{tmp_path / "statements"}"]\n\n'
                   f'[database]\nurl = "sqlite:///{db}"\n')
    missing = tmp_path / "nowhere.toml"

    def redline(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args), env={"REDLINE_CONFIG": str(missing)})
        return result.exit_code, result.output

    assert redline("db", "upgrade", "--config", str(cfg))[0] == 0
    assert db.exists()
    after = redline("db", "current", "--config", str(cfg))
    assert after == redline("--config", str(cfg), "db", "current")
    assert after[0] == 0 and "(up to date)" in after[1]
    code, out = redline("--config", str(missing), "status", "--config", str(cfg), "--json")
    assert code == 0 and '"statements"' in out
    code, out = redline("config", "check", "--config", str(cfg))
    assert (code, out.splitlines()[0]) == (0, f"configuration {cfg}: ok")
    # without it anywhere: $REDLINE_CONFIG, which names no file here
    code, out = redline("status")
    assert code == 2 and str(missing) in out

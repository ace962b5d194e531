"""config.toml -> a frozen Config, every key validated (SPEC §5).

The file is read once; the environment is consulted only here (`load_config(environ=...)`),
and the resulting frozen object is passed down to every other module.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.errors import ConfigError

KINDS = ("added", "revised", "metadata", "formatting", "deleted", "restored")
CHANNEL_TYPES = ("webhook", "email", "jsonl", "apprise", "pg_notify")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_DATABASE_URL = "sqlite:///redline.db"
# upper bounds of the periods and waits, in seconds
HOUR = 3600
DAY = 86_400
YEAR = 365 * DAY


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[Path, ...] = ()
    patterns: tuple[str, ...] = ("*.md", "*.txt")
    ignore: tuple[str, ...] = ()
    recursive: bool = True
    debounce_ms: int = 200
    polling: bool = False
    max_file_bytes: int = 5_000_000


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = DEFAULT_DATABASE_URL
    auto_migrate: bool = True


@dataclass(frozen=True)
class ScheduleConfig:
    dispatch_seconds: float = 5.0
    reconcile_minutes: float = 60.0
    digest_cron: str = "0 8 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token_env: str = ""
    token: str | None = field(default=None, repr=False)
    missing: str | None = None  # the error when token_env names an unset variable


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class ChannelConfig:
    """One notification channel; `options` holds the type-specific keys, secrets resolved."""

    name: str
    type: str
    mode: str = "immediate"
    kinds: tuple[str, ...] = ("added", "revised", "metadata", "deleted", "restored")
    ignore_fields: tuple[str, ...] = ()
    max_attempts: int = 8
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    missing: tuple[str, ...] = ()  # an error per `*_env` key whose variable is unset

    def require_secrets(self) -> None:
        """Raise ConfigError naming the key if a secret this channel needs is not set."""
        if self.missing:
            raise ConfigError(self.missing[0])


@dataclass(frozen=True)
class Config:
    path: Path | None
    watch: WatchConfig
    database: DatabaseConfig
    schedule: ScheduleConfig
    serve: ServeConfig
    log: LogConfig
    channels: tuple[ChannelConfig, ...] = ()

    def require_secrets(self, channels: bool = True, serve: bool = False) -> None:
        """Raise ConfigError naming the key if a secret is not in the environment.

        Secrets are looked up when the file is read, but a missing one is an error only
        where it is needed: `redline run`, `notify test` and `config check` (channels),
        `serve` (its token). The commands that only read the database work without them
        (an operator's shell need not hold the service's secrets)."""
        if serve and self.serve.missing:
            raise ConfigError(self.serve.missing)
        for ch in self.channels if channels else ():
            ch.require_secrets()

    def channel(self, name: str) -> ChannelConfig:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise ConfigError(f"no channel named {name!r} in the configuration")


# Type-specific channel keys: name -> (python type, required?)
_CHANNEL_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "webhook": {"url": (str, True), "secret_env": (str, False)},
    "email": {
        "host": (str, True),
        "port": (int, False),
        "starttls": (bool, False),
        "tls": (bool, False),
        "username_env": (str, False),
        "password_env": (str, False),
        "from": (str, True),
        "to": (list, True),
    },
    "jsonl": {"path": (str, True)},
    "apprise": {"urls_env": (str, False), "urls": (list, False)},
    "pg_notify": {},
}
_CHANNEL_COMMON = {
    "name", "type", "mode", "kinds", "ignore_fields", "max_attempts",
    "backoff_seconds", "backoff_max_seconds", "timeout_seconds",
}


def find_config_path(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """--config PATH, else $REDLINE_CONFIG, else ./config.toml."""
    if explicit:
        return Path(explicit)
    if environ.get("REDLINE_CONFIG"):
        return Path(environ["REDLINE_CONFIG"])
    return Path("config.toml")


def load_config(path: Path, environ: Mapping[str, str]) -> Config:
    """Read and validate the configuration file; raise ConfigError naming the key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (use --config PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base=path.resolve().parent, environ=environ, path=path)


def parse_config(
    data: Mapping[str, Any], base: Path, environ: Mapping[str, str], path: Path | None = None
) -> Config:
    """Validate a parsed TOML mapping; relative paths are resolved against `base`."""
    _only(data, {"watch", "database", "schedule", "serve", "log", "channels"}, "")
    w = _table(data, "watch")
    _only(w, {"paths", "patterns", "ignore", "recursive", "debounce_ms", "polling",
              "max_file_bytes"}, "watch")
    watch = WatchConfig(
        paths=tuple(_resolve(base, p) for p in _strlist(w, "watch.paths", ["seeds"])),
        patterns=tuple(_strlist(w, "watch.patterns", ["*.md", "*.txt"], nonempty=True)),
        ignore=tuple(_strlist(w, "watch.ignore", [])),
        recursive=_bool(w, "watch.recursive", True),
        debounce_ms=_int(w, "watch.debounce_ms", 200, lo=0, hi=60_000),
        polling=_bool(w, "watch.polling", False),
        max_file_bytes=_int(w, "watch.max_file_bytes", 5_000_000, lo=1024, hi=1 << 31),
    )
    if not watch.paths:
        raise ConfigError("watch.paths: at least one folder to watch is required")

    d = _table(data, "database")
    _only(d, {"url", "auto_migrate"}, "database")
    url = environ.get("REDLINE_DATABASE_URL") or _str(d, "database.url", DEFAULT_DATABASE_URL)
    source = ("$REDLINE_DATABASE_URL" if environ.get("REDLINE_DATABASE_URL")
              else "database.url")
    database = DatabaseConfig(url=_database_url(url, base, source), auto_migrate=_bool(
        d, "database.auto_migrate", True))

    s = _table(data, "schedule")
    _only(s, {"dispatch_seconds", "reconcile_minutes", "digest_cron", "timezone"}, "schedule")
    schedule = ScheduleConfig(
        dispatch_seconds=_num(s, "schedule.dispatch_seconds", 5.0, lo=0.05, hi=DAY),
        reconcile_minutes=_num(s, "schedule.reconcile_minutes", 60.0, lo=0.01,
                               hi=YEAR / 60),
        digest_cron=_cron(s, "schedule.digest_cron", "0 8 * * *"),
        timezone=_timezone(s, "schedule.timezone", "UTC"),
    )

    sv = _table(data, "serve")
    _only(sv, {"host", "port", "token_env"}, "serve")
    token_env = _str(sv, "serve.token_env", "")
    token, missing = _secret(environ, token_env, "serve.token_env")
    host = _str(sv, "serve.host", "127.0.0.1").strip()
    if not host:  # uvicorn reads "" as every address: 0.0.0.0 and ::
        raise ConfigError("serve.host: must not be empty (it would listen on every address; "
                          "write \"0.0.0.0\" or \"::\" to mean that)")
    serve = ServeConfig(
        host=host,
        port=_int(sv, "serve.port", 8765, lo=0, hi=65535),
        token_env=token_env,
        token=token,
        missing=missing,
    )

    lg = _table(data, "log")
    _only(lg, {"level", "format"}, "log")
    log = LogConfig(
        level=_choice(lg, "log.level", "info", LOG_LEVELS),
        format=_choice(lg, "log.format", "auto", ("auto", "json", "console")),
    )

    raw_channels = data.get("channels", [])
    if not isinstance(raw_channels, list):
        raise ConfigError("channels: must be an array of tables ([[channels]])")
    channels = tuple(
        _channel(ch, i, base, environ) for i, ch in enumerate(raw_channels)
    )
    for ch in channels:
        if ch.type == "pg_notify" and not database.url.startswith("postgresql"):
            raise ConfigError(f"channels.{ch.name}.type: pg_notify needs a PostgreSQL "
                              "database (database.url = \"postgresql+psycopg://...\")")
    names = [c.name for c in channels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"channels.name: duplicate channel name {dupes[0]!r}")
    return Config(path=path, watch=watch, database=database, schedule=schedule, serve=serve,
                  log=log, channels=channels)


def _channel(ch: Any, i: int, base: Path, environ: Mapping[str, str]) -> ChannelConfig:
    where = f"channels[{i}]"
    if not isinstance(ch, dict):
        raise ConfigError(f"{where}: must be a table")
    name = _str(ch, f"{where}.name", None)
    where = f"channels.{name}"
    ctype = _choice(ch, f"{where}.type", None, CHANNEL_TYPES)
    specific = _CHANNEL_KEYS[ctype]
    _only(ch, _CHANNEL_COMMON | set(specific), where)
    options: dict[str, Any] = {}
    for key, (typ, required) in specific.items():
        full = f"{where}.{key}"
        if key not in ch:
            if required:
                raise ConfigError(f"{full}: required for a {ctype} channel")
            continue
        value = ch[key]
        if typ is int and isinstance(value, bool) or not isinstance(value, typ):
            raise ConfigError(f"{full}: expected {_typename(typ)}, got {value!r}")
        if typ is list and not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{full}: expected a list of non-empty strings")
        options[key] = value
    if ctype == "jsonl":
        options["path"] = _resolve(base, options["path"])
    if ctype == "webhook":
        import urllib.parse

        parts = urllib.parse.urlsplit(options["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the value is not repeated: a webhook URL may carry a token
            raise ConfigError(f"{where}.url: expected an http:// or https:// URL with a host")
    if ctype == "email":
        if options.get("starttls") and options.get("tls"):
            raise ConfigError(f"{where}.tls: choose either starttls or tls, not both")
        options.setdefault("port", 465 if options.get("tls") else 587)
        options.setdefault("starttls", not options.get("tls", False))
        options.setdefault("tls", False)
        if not options["to"]:
            raise ConfigError(f"{where}.to: at least one recipient is required")
        if not 1 <= options["port"] <= 65535:
            raise ConfigError(f"{where}.port: must be between 1 and 65535, got "
                              f"{options['port']}")
        import email.utils  # only here: every command loads the configuration

        for key, addresses in (("from", [options["from"]]), ("to", options["to"])):
            for address in addresses:
                if "@" not in email.utils.parseaddr(address)[1]:
                    raise ConfigError(f"{where}.{key}: {address!r} is not an email address")
    if ctype == "apprise" and not (options.get("urls_env") or options.get("urls")):
        raise ConfigError(f"{where}.urls_env: an apprise channel needs urls_env (or urls)")
    secrets: dict[str, str] = {}
    missing: list[str] = []
    for key in ("secret_env", "username_env", "password_env", "urls_env"):
        value, error = _secret(environ, options.get(key, ""), f"{where}.{key}")
        if value is not None:
            secrets[key.removesuffix("_env")] = value
        elif error:
            missing.append(error)
    kinds = _strlist(ch, f"{where}.kinds", list(ChannelConfig.kinds))
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"{where}.kinds: unknown kind {k!r} (one of {', '.join(KINDS)})")
    backoff = _num(ch, f"{where}.backoff_seconds", 2.0, lo=0.0, hi=YEAR)
    max_backoff = _num(ch, f"{where}.backoff_max_seconds", 3600.0, lo=0.0, hi=YEAR)
    if max_backoff < backoff:
        raise ConfigError(f"{where}.backoff_max_seconds: {_number(max_backoff)} is less "
                          f"than backoff_seconds ({_number(backoff)})")
    return ChannelConfig(
        name=name,
        type=ctype,
        mode=_choice(ch, f"{where}.mode", "immediate", ("immediate", "digest")),
        kinds=tuple(kinds),
        ignore_fields=tuple(_strlist(ch, f"{where}.ignore_fields", [])),
        max_attempts=_int(ch, f"{where}.max_attempts", 8, lo=1, hi=1000),
        backoff_seconds=backoff,
        backoff_max_seconds=max_backoff,
        timeout_seconds=_num(ch, f"{where}.timeout_seconds", 10.0, lo=0.1, hi=HOUR),
        options=options,
        secrets=secrets,
        missing=tuple(missing),
    )


def _secret(environ: Mapping[str, str], var: str, key: str) -> tuple[str | None, str | None]:
    """The value of the variable a `*_env` key names, or the error saying it is not set.
    An empty value counts as not set: an empty webhook secret would send unsigned requests
    without a word."""
    if not var:
        return None, None
    value = environ.get(var)
    if value:
        return value, None
    state = "is empty" if value is not None else "is not set"
    return None, f"{key}: environment variable {var} {state}"


# ---- small validators: each names the key in its error ----

def _typename(t: type | tuple[type, ...]) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list"}.get(
        t if isinstance(t, type) else str, str(t))


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            full = f"{where}.{key}" if where else key
            raise ConfigError(f"{full}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a table ([{key}])")
    return value


def _get(table: Mapping[str, Any], full: str, default: Any) -> Any:
    key = full.rsplit(".", 1)[-1]
    if key not in table:
        if default is None:
            raise ConfigError(f"{full}: required")
        return default
    return table[key]


def _str(table: Mapping[str, Any], full: str, default: str | None) -> str:
    value = _get(table, full, default)
    if not isinstance(value, str):
        raise ConfigError(f"{full}: expected a string, got {value!r}")
    if default is None and not value:
        raise ConfigError(f"{full}: must not be empty")
    return value


def _bool(table: Mapping[str, Any], full: str, default: bool) -> bool:
    value = _get(table, full, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{full}: expected true or false, got {value!r}")
    return value


def _int(table: Mapping[str, Any], full: str, default: int, lo: int, hi: int) -> int:
    value = _get(table, full, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{full}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{full}: must be between {lo} and {hi}, got {value}")
    return value


def _num(table: Mapping[str, Any], full: str, default: float, lo: float, hi: float
         ) -> float:
    """A number of seconds or minutes. TOML has `inf` and `nan`: neither is a period (nan
    passes every comparison), and a period must fit a datetime.timedelta, or the scheduler
    fails with a traceback when it starts, not here with the key."""
    value = _get(table, full, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{full}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{full}: expected a finite number, got {value}")
    if value < lo:
        raise ConfigError(f"{full}: must be at least {_number(lo)}, got {_number(value)}")
    if value > hi:
        raise ConfigError(f"{full}: must be at most {_number(hi)}, got {_number(value)}")
    return float(value)


def _number(value: float) -> str:
    """A bound or a value as it reads (`3600`, `0.05`, `1e+12`) and never rounded: `:g`
    alone wrote a year in seconds, and one second more, both as 3.1536e+07."""
    if isinstance(value, int):
        return str(value)
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(int(value)) if value.is_integer() else repr(value)


def _choice(table: Mapping[str, Any], full: str, default: str | None, choices: tuple[str, ...]
            ) -> str:
    value = _get(table, full, default)
    if value not in choices:
        raise ConfigError(f"{full}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _strlist(table: Mapping[str, Any], full: str, default: list[str], nonempty: bool = False
             ) -> list[str]:
    value = _get(table, full, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{full}: expected a list of non-empty strings, got {value!r}")
    if nonempty and not value:
        raise ConfigError(f"{full}: must not be empty")
    return list(value)


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base / path)


def _database_url(url: str, base: Path, source: str = "database.url") -> str:
    """Make a relative SQLite path relative to the config file's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix):]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str((base / rest).resolve())
    if not ("://" in url and url.split("://", 1)[0]):
        raise ConfigError(f"{source}: not a database URL: {url!r}")
    _check_database_url(url, source)
    return url


_USUAL_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgresql+psycopg")


def _check_database_url(url: str, source: str) -> None:
    """A scheme SQLAlchemy does not know (`postgresq+psycopg`, `postgres`) or a port that
    is no number is a configuration error here, not a traceback when the engine is made.
    (Only the scheme is named: the URL may hold a password.)"""
    import urllib.parse

    scheme = url.split("://", 1)[0]
    if scheme.lower() not in _USUAL_SCHEMES:
        import sqlalchemy as sa  # only for other schemes: the usual ones need no import

        try:
            sa.engine.make_url(url).get_dialect()
        except sa.exc.NoSuchModuleError:
            hint = " (postgres:// is spelled postgresql://)" if scheme == "postgres" else ""
            raise ConfigError(
                f"{source}: unknown database type {scheme!r}{hint}; expected "
                "sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME") from None
        except (sa.exc.ArgumentError, ValueError):
            pass  # reported below, or by the engine with its own words
        except ImportError:
            pass  # a driver that is not installed: the engine says which to install
    try:
        port_ok = urllib.parse.urlsplit(url).port != 0
    except ValueError:
        port_ok = False
    if not port_ok:
        raise ConfigError(f"{source}: the port must be a number from 1 to 65535")


def _cron(table: Mapping[str, Any], full: str, default: str) -> str:
    value = _str(table, full, default)
    if value == default:  # valid (a test checks it): APScheduler's import, a tenth to a
        return value      # third of a second, is left to the commands that schedule
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ConfigError(f"{full}: not a valid crontab expression ({exc})") from None
    return value


def _timezone(table: Mapping[str, Any], full: str, default: str) -> str:
    value = _str(table, full, default)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{full}: unknown time zone {value!r}") from None
    return value

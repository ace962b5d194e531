"""The one error hierarchy: each says what is wrong and what to do; the CLI maps it to an
exit code."""

import re


class RedlineError(Exception):
    """Base of every error redline reports to a person."""

    exit_code = 1


class ConfigError(RedlineError):
    """The configuration file or a value in it is wrong."""

    exit_code = 2


class UsageError(RedlineError):
    """A command-line argument is wrong."""

    exit_code = 2


class NotFound(RedlineError):
    """A named statement, revision or channel does not exist."""

    exit_code = 1


class WatchedFolderError(RedlineError):
    """A watched folder is missing, unreadable or suddenly empty; nothing is deleted."""

    exit_code = 1


class QueryTimeout(RedlineError):
    """A read took longer than its bound (`redline serve` stops slow queries) and was
    stopped."""

    exit_code = 1


class DatabaseError(RedlineError):
    """The database cannot be reached or is not at the expected schema."""

    exit_code = 1


class SchemaTooNew(DatabaseError):
    """The database was upgraded by a newer redline. Trying again cannot help (an operator
    must run that version or point this one elsewhere), so it is a configuration error:
    status 2, which the systemd unit does not restart."""

    exit_code = 2


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, as a log line or a STATUS shows it: for a
    database error the driver's own words (SQLAlchemy's wrapper adds the SQL and a link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:limit]


# Every C0 and C1 control character, line and paragraph separators too
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(message: str) -> str:
    """An error message as the one line `redline: error: …` promises: a control character
    that came with what the user typed or a file's name (a newline, an escape sequence the
    terminal would obey) is written as `\\xNN`."""
    if not _NOT_ONE_LINE.search(message):
        return message
    return _NOT_ONE_LINE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                             else f"\\u{ord(m.group()):04x}", message)

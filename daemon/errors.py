"""The one error hierarchy: each says what is wrong and what to do; the CLI maps it to an
exit code. Also how a message (or a statement's text) is made safe to print on a terminal."""

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


# Control characters that make a terminal act rather than print: ESC and the C1 controls
# begin escape sequences (clear the screen, set the window title, a hidden link), BEL ends
# one, backspace overwrites what was printed; line and paragraph breaks end a line.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# the same but for the white space a text runs over lines with (tab, line breaks)
_CONTROLS_BUT_BREAKS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def escape_controls(text: str, keep_breaks: bool = False) -> str:
    """`text` with every control character written as `\\xNN` (`\\u2028`), so that a
    terminal prints it and obeys nothing in it: for an error line, all of them (it stays
    one line); with `keep_breaks`, for a statement's text, all but its white space."""
    pattern = _CONTROLS_BUT_BREAKS if keep_breaks else _CONTROLS
    if not pattern.search(text):
        return text
    return pattern.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"

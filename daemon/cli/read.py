"""Reading the record: `redline status|history|diff|search|events|errors`.

Thin commands over `daemon.query` (what to ask) and `daemon.render` (how a diff looks). They
open the database read-only. On a terminal they print rich tables; piped, plain aligned
columns (stable for scripts and tests); with `--json`, the same data the web API serves.
An empty result of search or events is exit 1 with one line on stderr, like grep finding
nothing; with `--json` too (after printing `[]`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import Connection

from daemon import query, render
from daemon.cli.app import App, echo_json
from daemon.errors import NotFound, RedlineError, UsageError

DIFF_FORMATS = ("unified", "words", "json", "html")


@contextmanager
def _reading(app: App) -> Iterator[Connection]:
    engine = app.engine(readonly=True)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _terminal() -> bool:
    return sys.stdout.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


# ASCII white space and the Unicode line breaks; not NBSP and the like, which are part of
# a title as written (a title changed only by an NBSP is a recorded formatting change)
_BREAKS = re.compile("[ \t\n\r\f\v\x1c-\x1f\x85\u2028\u2029]+")


def _line(text: str) -> str:
    """A value on one line for plain output: each run of white space (a title's newline or
    tab, a double space that would read as a column break) is one space."""
    return _BREAKS.sub(" ", text).strip()


def _cell(value: Any) -> Any:
    """A table cell for rich: text as it is. rich reads a plain string as markup, so a
    statement's title, a file name or a detail with `[/]` raised MarkupError and `[red]`
    or `[link=...]` styled the terminal from the statement's words."""
    from rich.text import Text

    return value if isinstance(value, Text) else Text(str(value))


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
           ) -> None:
    """A rich table on a terminal; plain columns separated by two spaces otherwise."""
    if _terminal():
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for i, name in enumerate(columns):
            # short columns (ids, kinds, times) never wrap; titles and snippets do
            longest = max((len(str(r[i])) for r in rows), default=0)
            table.add_column(name, no_wrap=longest <= 30)
        for row in rows:
            table.add_row(*(_cell(c) for c in row))
        _console().print(table)
        return
    if title:
        click.echo(title)
    cells = [[_line(c.plain if hasattr(c, "plain") else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [list(columns), *cells]) for i in range(len(columns))]
    for row in [list(columns), *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _pairs(pairs: Sequence[tuple[str, str]]) -> None:
    """Key and value lines: a two-column rich table on a terminal, `key: value` piped."""
    if _terminal():
        from rich.table import Table

        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for k, v in pairs:
            table.add_row(k, _cell(v))
        _console().print(table)
        return
    for k, v in pairs:
        click.echo(f"{k}: {_line(v)}")


def _json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead.")(f)


def _revs(row: dict[str, Any]) -> str:
    frm = row["from_revision"]
    return f"{frm}->{row['to_revision']}" if frm else str(row["to_revision"])


# --- status ---------------------------------------------------------------------------------

@click.command()
@_json_option
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Statements, revisions, last change, deliveries, rejected files and the watcher.

    The watcher counts as running when a daemon refreshed its heartbeat in the
    last two minutes.

    \b
    Example:
      redline status
      redline status --json | jq .deliveries
    """
    with _reading(app) as conn:
        st = query.status(conn)
    if as_json:
        echo_json(st)
        return
    _pairs(status_pairs(render.shown(st), {c.name for c in app.config.channels}))


def status_pairs(st: dict[str, Any], channels: set[str]) -> list[tuple[str, str]]:
    s, r, d = st["statements"], st["revisions"], st["deliveries"]
    last = st["last_change"]
    kinds = ", ".join(f"{n} {k}" for k, n in r["by_kind"].items() if n) or "none"
    return [
        ("statements", f"{s['total']} ({s['live']} live, {s['deleted']} deleted)"),
        ("revisions", f"{r['total']} ({kinds})"),
        ("last change", f"{last['occurred_at']} {last['kind']} of statement "
                        f"{last['statement_id']}: {last['title']}" if last else "none"),
        ("rejected files", str(st["rejected_files"])),
        ("deliveries", f"{d['pending']} pending, {d['failed']} failed, {d['dead']} dead, "
                       f"{d['delivered']} delivered" + _unconfigured(st, channels)),
        ("watcher", _watcher_line(st["watcher"])),
    ]


def _unconfigured(st: dict[str, Any], channels: set[str]) -> str:
    """Deliveries no instance with this configuration will send: for a channel renamed or
    removed (or one only another instance has)."""
    gone = {ch: n for ch, n in st["waiting_by_channel"].items() if ch not in channels}
    if not gone:
        return ""
    names = ", ".join(f"{ch} ({n})" for ch, n in gone.items())
    return f"; {sum(gone.values())} waiting for channels not in this configuration: {names}"


def _watcher_line(w: dict[str, Any]) -> str:
    fresh = [i for i in w["instances"] if i["fresh"]]
    if not fresh:
        seen = w["instances"][0]["seen_at"] if w["instances"] else None
        return "not running" + (f" (last heartbeat {seen})" if seen else "")
    parts = []
    for i in fresh:
        state = "watching" if i["watching"] else "not watching"
        parts.append(f"running on {i['hostname']} (pid {i['pid']}), {state}, "
                     f"seen {i['seen_at']}: {i['status']}")
    return "; ".join(parts)


# --- history --------------------------------------------------------------------------------

@click.command()
@click.argument("statement")
@_json_option
@click.pass_obj
def history(app: App, statement: str, as_json: bool) -> None:
    """The revisions of one STATEMENT (its URL, an old URL of it, or its id).

    \b
    Example:
      redline history https://www.whitehouse.gov/briefings-statements/2026/02/some-title/
      redline history 42 --json
    """
    with _reading(app) as conn:
        sid = query.resolve_statement(conn, statement)
        summary = query.statement_summary(conn, sid)
        revs = query.history(conn, sid)
    if as_json:
        echo_json({"statement": summary, "revisions": revs})
        return
    summary, revs = render.shown(summary), render.shown(revs)
    click.echo(f"statement {sid}: {summary['source_url']}")
    click.echo(f"title: {_line(summary['title'])}")
    rows = [(str(r["revision_number"]), r["kind"], ", ".join(r["changed_fields"]) or "-",
             r["observed_at"], r["summary"] or "") for r in revs]
    _table(("rev", "kind", "changed", "observed", "summary"), rows)


# --- diff -----------------------------------------------------------------------------------

@click.command()
@click.argument("statement")
@click.option("--from", "from_rev", metavar="N", help="Older revision (default: the one "
              "before --to).")
@click.option("--to", "to_rev", metavar="M", help="Newer revision (default: the newest).")
@click.option("--format", "fmt", metavar="FORMAT",
              help="unified | words | json | html.  [default: unified]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@_json_option
@click.pass_obj
def diff(app: App, statement: str, from_rev: str | None, to_rev: str | None,
         fmt: str | None, output: Path | None, as_json: bool) -> None:
    """The diff between two revisions of STATEMENT (default: the last two).

    Changed fields come first, then the text. `words` marks edits inline,
    coloured on a terminal and as [-old-]{+new+} when piped; `html` is a
    standalone page with <del>/<ins> marks, fit to attach or publish.

    \b
    Example:
      redline diff https://www.whitehouse.gov/briefings-statements/2026/02/some-title/
      redline diff 42 --from 1 --to 3 --format words
      redline diff 42 --format html -o diff.html
    """
    fmt = (fmt or ("json" if as_json else "unified")).strip().lower()
    if as_json and fmt != "json":  # two answers asked for: say so rather than pick one
        raise UsageError(f"--json and --format {query.clip(fmt)} ask for two formats: "
                         "give one")
    if fmt not in DIFF_FORMATS:
        raise UsageError(f"--format must be one of {', '.join(DIFF_FORMATS)}, "
                         f"not {query.clip(repr(fmt))}")
    with _reading(app) as conn:
        sid = query.resolve_statement(conn, statement)
        d = query.diff(conn, sid, from_rev, to_rev)
    if fmt != "json":  # JSON writes a control character as an escape of its own
        d = render.shown(d)
    if fmt == "json":
        import json

        text = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    elif fmt == "html":
        text = render.diff_html_page(d)
    elif output is None and _terminal():
        _console().print(render.diff_rich(d, fmt), soft_wrap=True, end="")
        return
    else:
        text = render.diff_plain(d, fmt)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                PermissionError) as exc:  # the path given is wrong: a bad argument
            raise UsageError(f"-o {output}: cannot write it: {exc.strerror}") from None
        except OSError as exc:  # a full disk, an I/O error: a failure
            raise RedlineError(f"-o {output}: cannot write it: {exc.strerror}") from None
    else:
        click.echo(text, nl=False)


# --- search ---------------------------------------------------------------------------------

@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("text", nargs=-1, required=True)
@click.option("--limit", default="20", metavar="N", show_default=True,
              help="At most N results.")
@_json_option
@click.pass_obj
def search(app: App, text: tuple[str, ...], limit: str, as_json: bool) -> None:
    """Full-text search over current statements, best match first.

    All words must occur; "quoted phrases", OR between words, -word to exclude
    and word* for a prefix work. Matched words are marked in the snippet.

    \b
    Example:
      redline search tariffs
      redline search '"executive order" steel OR aluminum' --json
    """
    words = " ".join(text)
    with _reading(app) as conn:
        hits = query.search(conn, words, limit=limit)
    if as_json:
        echo_json(hits)  # `[]` when empty, and still exit 1 below
    if not hits:
        raise NotFound(f"no statement matches {query.clip(repr(words))}")
    if as_json:
        return
    hits = render.shown(hits)
    rows = [(str(h["statement_id"]), h["title"] + (" (deleted)" if h["deleted_at"] else ""),
             render.search_snippet_rich(h["snippet"], query.MARK_START, query.MARK_END)
             if _terminal() else h["snippet"]) for h in hits]
    _table(("id", "title", "snippet"), rows)


# --- events ---------------------------------------------------------------------------------

@click.command()
@click.option("--since", metavar="TIME", help="Only changes at or after TIME: 2026-02-03, "
              "2026-02-03T16:44:17Z (UTC unless a zone is given), or an age: 30m, 12h, 7d, 2w.")
@click.option("--kind", metavar="K", help="Only this kind: " + ", ".join(query.KINDS) + ".")
@click.option("--tag", metavar="TAG", help="Only statements with this tag.")
@click.option("--limit", default="50", metavar="N", show_default=True,
              help="At most N events.")
@_json_option
@click.pass_obj
def events(app: App, since: str | None, kind: str | None, tag: str | None, limit: str,
           as_json: bool) -> None:
    """The change log, newest first.

    \b
    Example:
      redline events --since 7d --kind revised
      redline events --since 2026-02-01 --json
    """
    when = query.parse_since(since) if since is not None else None
    with _reading(app) as conn:
        rows = query.events(conn, since=when, kind=kind, tag=tag, limit=limit)
    if as_json:
        echo_json(rows)  # `[]` when empty, and still exit 1 below
    if not rows:
        what = " ".join(f"{k} {query.clip(v)}" for k, v in (("since", since), ("kind", kind),
                                                             ("tag", tag)) if v is not None)
        raise NotFound("no events" + (f" match {what}" if what else " recorded yet"))
    if as_json:
        return
    rows = render.shown(rows)
    _table(("event", "occurred", "kind", "statement", "rev", "summary", "title"),
           [(str(r["event_id"]), r["occurred_at"], r["kind"], str(r["statement_id"]),
             _revs(r), r["summary"], r["title"]) for r in rows])


# --- errors ---------------------------------------------------------------------------------

@click.command()
@_json_option
@click.pass_obj
def errors(app: App, as_json: bool) -> None:
    """Files rejected now, and why (fix a file and the next pass ingests it).

    \b
    Example:
      redline errors
      redline errors --json | jq -r '.[].path'
    """
    with _reading(app) as conn:
        rows = query.errors(conn)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no rejected files")
        return
    rows = render.shown(rows)
    _table(("path", "reason", "detail", "last seen"),
           [(r["path"], r["reason"], r["detail"], r["last_seen_at"]) for r in rows])


COMMANDS = (status, history, diff, search, events, errors)

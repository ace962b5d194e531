"""The HTML pages: recent changes, a statement's history, a diff, search, rejected files and
delivery status. Thin: each asks daemon.query (the same library as the CLI) and renders a
template; every piece of statement text is escaped by Jinja2's autoescaping."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from daemon import query
from daemon.errors import UsageError
from daemon.notify import ledger
from daemon.render import marked_runs, show_value
from daemon.web.assets import asset_href
from daemon.web.diffview import side_by_side
from daemon.web.params import (
    PAGE_SIZE,
    event_filter,
    href,
    int_param,
    page_param,
    text_param,
)

templates = Environment(
    loader=PackageLoader("daemon.web", "templates"),
    autoescape=True,  # every template, whatever its name: statement text is hostile HTML
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(t: str | None) -> Markup:
    """A UTC time as `YYYY-MM-DD HH:MM` in a <time> element (— when there is none)."""
    if not t:
        return Markup("—")
    t = str(escape(t))
    return Markup(f'<time datetime="{t}">{t[:10]} {t[11:16]}</time>')


def kind_badge(kind: str) -> Markup:
    kind = str(escape(kind))
    return Markup(f'<span class="kind kind-{kind}">{kind}</span>')


def fields(names: list[str] | None) -> Markup:
    """Changed field names as <code> elements."""
    return Markup(" ").join(Markup("<code>{}</code>").format(n) for n in names or ())


def web_link(url: Any) -> bool:
    """Only http(s) URLs from a statement become links (never javascript:, data:, ...)."""
    return isinstance(url, str) and urlsplit(url.strip()).scheme.lower() in ("http", "https")


def marked_snippet(snippet: str | None) -> Markup:
    """A search snippet with its matches in <mark>: the text is escaped first, then the
    match delimiters (characters the escaping leaves alone) become tags."""
    text = str(escape(snippet or ""))
    return Markup(text.replace(query.MARK_START, "<mark>").replace(query.MARK_END, "</mark>"))


def edges(text: str) -> tuple[str, str, str]:
    """Leading white space, the words, trailing white space: marks go around the words."""
    core = text.strip()
    if not core:
        return text, "", ""
    start = text.index(core[0])
    return text[:start], core, text[start + len(core):]


def diff_href(statement_id: int, from_rev: int | None, to_rev: int, view: str = "") -> str:
    """The shareable URL of the diff between two revisions."""
    return href(f"/statements/{statement_id}/diff",
                {"from": from_rev, "to": to_rev, "view": view if view == "side" else None})


templates.globals.update(href=href, edges=edges, web_link=web_link, diff_href=diff_href,
                         when=when, kind_badge=kind_badge, fields=fields, asset_href=asset_href,
                         kinds=query.KINDS, delivery_statuses=ledger.STATUSES,
                         marked_snippet=marked_snippet, show_value=show_value)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("feed_href", "/feed.atom")
    html = templates.get_template(name).render(path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code)


def _connect(request: Request) -> Any:
    return request.app.state.engine.connect()


def changes_page(request: Request) -> Response:
    """/ : the change log, newest first, filtered by kind, tag and since; 50 a page."""
    params = request.query_params
    flt = event_filter(params)
    page = page_param(params)
    with _connect(request) as conn:
        rows = query.events(conn, flt.since_time, flt.kind, flt.tag, limit=PAGE_SIZE + 1,
                            offset=(page - 1) * PAGE_SIZE)
    filters = flt.as_params()
    return render(
        request, "changes.html", events=rows[:PAGE_SIZE], filters=filters, page=page,
        prev_href=href("/", {**filters, "page": page - 1 if page > 2 else None})
        if page > 1 else None,
        next_href=href("/", {**filters, "page": page + 1}) if len(rows) > PAGE_SIZE else None,
        feed_href=href("/feed.atom", filters),
    )


def statement_lookup(request: Request) -> Response:
    """/statements?url=... : a statement named by its URL (or an old URL, or its id)."""
    ref = text_param(request.query_params, "url") or text_param(request.query_params, "id")
    with _connect(request) as conn:
        sid = query.resolve_statement(conn, ref or "")
    return RedirectResponse(f"/statements/{sid}", status_code=303)


def statement_page(request: Request) -> Response:
    """/statements/{id} : what a statement is now, and every revision it had."""
    sid = request.path_params["statement_id"]
    with _connect(request) as conn:
        summary = query.statement_summary(conn, sid)
        revisions = query.history(conn, sid)
    return render(request, "statement.html", s=summary, revisions=list(reversed(revisions)))


def diff_page(request: Request) -> Response:
    """/statements/{id}/diff?from=N&to=M[&view=side] : the words that changed, inline or
    side by side, with the changed metadata fields above them."""
    sid = request.path_params["statement_id"]
    params = request.query_params
    view = "side" if params.get("view") == "side" else "inline"
    with _connect(request) as conn:
        d = query.diff(conn, sid, text_param(params, "from"), text_param(params, "to"))
    frm = d["from"]["revision_number"] if d["from"] else None
    to = d["to"]["revision_number"]
    return render(
        request, "diff.html", d=d, s=d["statement"], view=view, from_rev=frm, to_rev=to,
        rows=side_by_side(d["words"]) if view == "side" else [],
        runs=marked_runs(d["words"]) if view != "side" else [],
        inline_href=diff_href(sid, frm, to), side_href=diff_href(sid, frm, to, "side"),
        revision_numbers=list(range(1, d["statement"]["revision_count"] + 1)),
    )


def search_page(request: Request) -> Response:
    """/search?q=... : current statements matching the words, best first."""
    params = request.query_params
    q = text_param(params, "q")
    page = page_param(params)
    rows: list[dict[str, Any]] = []
    if q:
        with _connect(request) as conn:
            rows = query.search(conn, q, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    return render(
        request, "search.html", q=q or "", results=rows[:PAGE_SIZE], page=page,
        prev_href=href("/search", {"q": q, "page": page - 1 if page > 2 else None})
        if page > 1 else None,
        next_href=href("/search", {"q": q, "page": page + 1}) if len(rows) > PAGE_SIZE
        else None,
    )


def errors_page(request: Request) -> Response:
    """/errors : the files failing now, and why."""
    with _connect(request) as conn:
        rows = query.errors(conn)
    return render(request, "errors.html", errors=rows)


def deliveries_page(request: Request) -> Response:
    """/deliveries[?status=dead][&channel=NAME][&limit=N][&page=P] : each change's delivery
    to each channel, newest first (the rows of `redline deliveries`), `limit` a page."""
    params = request.query_params
    status = text_param(params, "status")
    if status is not None and status not in ledger.STATUSES:
        raise UsageError(f"status must be one of {', '.join(ledger.STATUSES)}, not {status!r}")
    channel = text_param(params, "channel")
    limit = int_param(params, "limit", PAGE_SIZE, 1, MAX_DELIVERIES)
    page = page_param(params)
    with _connect(request) as conn:
        rows = ledger.list_deliveries(conn, status, channel, limit + 1, (page - 1) * limit)
        by_channel = ledger.status_counts(conn)
    counts = {st: sum(c.get(st, 0) for ch, c in by_channel.items()
                      if channel in (None, ch)) for st in ledger.STATUSES}
    kept = {"status": status, "channel": channel,
            "limit": limit if limit != PAGE_SIZE else None}
    return render(
        request, "deliveries.html", deliveries=[_iso_row(r) for r in rows[:limit]],
        counts=counts, status=status, channel=channel, channels=sorted(by_channel), page=page,
        prev_href=href("/deliveries", {**kept, "page": page - 1 if page > 2 else None})
        if page > 1 else None,
        next_href=href("/deliveries", {**kept, "page": page + 1}) if len(rows) > limit
        else None,
    )


MAX_DELIVERIES = 1000


def _iso_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: query.iso(v) for k, v in row.items()}

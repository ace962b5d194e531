"""The ASGI application of `redline serve`: routes, the feed, the stylesheet, and the one
place where a RedlineError becomes an HTTP status (404 not found, 400 bad parameter)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from daemon import query
from daemon.errors import DatabaseError, NotFound, QueryTimeout, RedlineError
from daemon.web import api, pages
from daemon.web.assets import ASSETS
from daemon.web.cache import RenderCache, cached, not_modified
from daemon.web.feed import Feed, FeedEntry, render_atom
from daemon.web.guard import ASGIApp, Guard
from daemon.web.params import event_filter, href

FEED_SIZE = 50


class StatementId(Convertor[int]):
    """A statement id in a path: ASCII digits, however many. Starlette's `int` convertor
    calls int(), which raises ValueError beyond 4,300 digits (a 500 from the router
    itself); here an id beyond 64 bits is MAX_ID + 1, which names no statement (404)."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        number = query.whole_number(value)
        assert number is not None  # the regex admits only digits
        return number

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("statement_id", StatementId())


def entry_id(event: dict[str, Any]) -> str:
    """An Atom entry id that never changes (RFC 4287 §4.2.6): named by the revision's URL,
    number and time, not by the host the feed was read from, so a reader that reaches the
    feed by another name (localhost, an address, a proxy) does not see every change again."""
    return _urn(f"redline:{event['source_url']}#revision-{event['to_revision']}@"
                f"{event['occurred_at']}")


def feed_id(filters: dict[str, str]) -> str:
    """The feed's id, like its entries' not following the host: named by its filters."""
    return _urn("redline:" + href("/feed.atom", filters))


def _urn(name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def feed(request: Request) -> Response:
    """/feed.atom[?kind=&tag=&since=] : the newest changes as Atom, each linking its diff."""
    flt = event_filter(request.query_params)
    with request.app.state.engine.connect() as conn:
        rows = query.events(conn, flt.since_time, flt.kind, flt.tag, limit=FEED_SIZE)
    base = str(request.base_url).rstrip("/")
    entries = []
    for e in rows:
        link = base + pages.diff_href(e["statement_id"], e["from_revision"], e["to_revision"])
        entries.append(FeedEntry(
            id=entry_id(e), title=f"{e['kind']}: {e['title']}", link=link,
            updated=dt.datetime.fromisoformat(e["occurred_at"]), summary=e["summary"],
            categories=[e["kind"], *(e.get("tags") or [])]))
    filters = flt.as_params()
    described = ", ".join(f"{k} {v}" for k, v in filters.items())
    body = render_atom(Feed(
        id=feed_id(filters),
        title="redline: changes" + (f" ({described})" if described else ""),
        self_link=base + href("/feed.atom", filters),
        link=base + href("/", filters),
        updated=entries[0].updated if entries else dt.datetime.now(dt.UTC),
        entries=entries,
    ))
    return Response(body, media_type="application/atom+xml; charset=utf-8")


def _static_response(request: Request, body: bytes, media_type: str, etag: str,
                     immutable: bool) -> Response:
    headers = {"etag": etag, "cache-control": "public, max-age=31536000, immutable"
               if immutable else "public, max-age=3600"}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


async def static(request: Request) -> Response:
    """/static/{name} : the stylesheet and the icon (no script exists to serve)."""
    asset = ASSETS.get(request.path_params["name"])
    if asset is None:
        raise HTTPException(404)
    # the pages link /static/NAME?v=HASH: that exact content never changes
    immutable = request.query_params.get("v") == asset.digest
    return _static_response(request, asset.body, asset.media_type, asset.etag, immutable)


def _status_of(exc: Exception) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, DatabaseError | QueryTimeout | sa.exc.OperationalError):
        return 503
    return 400


async def on_error(request: Request, exc: Exception) -> Response:
    """A RedlineError (and an HTTP error) as a page, JSON under /api/, or text for the feed."""
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, exc.detail
    elif isinstance(exc, sa.exc.OperationalError):
        status, message = 503, "the database is not reachable right now; try again shortly"
    else:
        status, message = _status_of(exc), str(exc)
    path = request.url.path
    if path.startswith("/api/"):
        return api.JSON({"error": message}, status_code=status)
    if path.startswith(("/feed", "/static/")):
        return PlainTextResponse(f"{status}: {message}\n", status_code=status)
    return pages.render(request, "error.html", status_code=status, status=status,
                        message=message)


# cached(): pages that show only what events version (see daemon/web/cache.py); rejected
# files, deliveries and status change without an event and are always read fresh.
ROUTES = [
    Route("/", cached(pages.changes_page), name="changes"),
    Route("/statements", pages.statement_lookup),
    Route("/statements/{statement_id:statement_id}", cached(pages.statement_page)),
    Route("/statements/{statement_id:statement_id}/diff", cached(pages.diff_page)),
    Route("/search", cached(pages.search_page)),
    Route("/errors", pages.errors_page),
    Route("/deliveries", pages.deliveries_page),
    Route("/feed.atom", cached(feed)),
    Route("/static/{name}", static),
    Route("/api/", api.api_index),
    Route("/api/openapi.json", api.api_openapi),
    Route("/api/status", api.api_status),
    Route("/api/statements", api.api_statement_lookup),
    Route("/api/statements/{statement_id:statement_id}", cached(api.api_statement)),
    Route("/api/statements/{statement_id:statement_id}/history", cached(api.api_history)),
    Route("/api/statements/{statement_id:statement_id}/diff", cached(api.api_diff)),
    Route("/api/search", cached(api.api_search)),
    Route("/api/events", cached(api.api_events)),
    Route("/api/errors", api.api_errors),
    Route("/api/deliveries", api.api_deliveries),
]


def create_app(engine: Engine, token: str | None = None, *, cache: bool = True,
               version_ttl: float = 0.1) -> ASGIApp:
    """The whole site over a (read-only) engine; with a token, every request needs it.
    Pages are cached per record version, checked at most every `version_ttl` seconds."""
    handlers: dict[Any, Any] = {RedlineError: on_error, HTTPException: on_error,
                                sa.exc.OperationalError: on_error}
    app = Starlette(routes=ROUTES, exception_handlers=handlers)
    app.state.engine = engine
    app.state.cache = RenderCache(engine, version_ttl) if cache else None
    return Guard(app, token)

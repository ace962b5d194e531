"""Rendered responses kept until the record changes.

Every change to a statement commits its revision and its event together (SPEC §4), so the
newest event id is a version of everything the change log, the statement pages, the diffs,
search and the feed show: a page rendered at version V is right for as long as the newest
event is still V. One indexed `max(id)` (at most every 0.1 s) replaces a render; a cached
page also gets an ETag, so a feed reader polling an unchanged feed gets a 304, no body.

On PostgreSQL that is not enough: event ids come from a sequence before the commit, so two
writers (two instances, or `redline ingest` beside `redline run`) can commit out of id
order, and an event with an older id appears without the newest id moving. Every writer
holds its lock on `revisions` before it takes an event id (it writes the revisions first)
and until it ends, so while no transaction holds one, `max(id)` is the version; while some
do, they are part of it, and the version moves again when they end. (Only those: the
transactions in progress anywhere on the server, which a shared server always has, and
this database's other writers — deliveries, heartbeats — would move it all the time.)
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from daemon.web.params import relative_since

Endpoint = Callable[[Request], Response]

_VERSION = sa.text("SELECT max(id) FROM events")
# one statement, so one snapshot for both: the newest event and the transactions writing
# revisions now (in this database: a relation's oid is only unique in its own)
_PG_VERSION = sa.text("""
    SELECT (SELECT max(id) FROM events),
           ARRAY(SELECT virtualtransaction FROM pg_locks
                 WHERE locktype = 'relation' AND mode = 'RowExclusiveLock'
                   AND relation = 'revisions'::regclass
                   AND database = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())
                 ORDER BY 1)::text""")


@dataclass(frozen=True)
class CachedResponse:
    version: str
    body: bytes
    media_type: str
    etag: str


class RenderCache:
    """A bounded LRU of response bodies keyed by URL, valid for one record version.

    The version is read at most every `version_ttl` seconds (shared by all requests), so
    under load a cached page costs no database round trip at all and a change shows up
    within `version_ttl`."""

    def __init__(self, engine: Engine, version_ttl: float = 0.1, max_entries: int = 2048,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.engine = engine
        self.version_ttl = version_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._version: tuple[float, str] | None = None  # (read at, version)
        self._refreshing = False
        # renders in progress, so that 50 clients asking for a page just after a change
        # wait for one render instead of doing fifty (only the event loop's thread uses it)
        self.rendering: dict[tuple[str, str], asyncio.Future[CachedResponse | None]] = {}
        self.hits = self.misses = self.renders = 0

    def read_version(self) -> str:
        """The newest event id (and, on PostgreSQL, the transactions in progress): it
        changes with every committed change of the record."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                newest, in_flight = conn.execute(_PG_VERSION).one()
            else:
                newest, in_flight = conn.execute(_VERSION).scalar(), "{}"
        version = str(newest or 0) if in_flight == "{}" else \
            f"{newest or 0}-{hashlib.blake2b(in_flight.encode(), digest_size=6).hexdigest()}"
        self._version = (time.monotonic(), version)
        return version

    async def current_version(self) -> str:
        """The version read less than `version_ttl` ago; else read it again, once: requests
        arriving while it is being read use the one before (stale by at most the read)."""
        known = self._version
        if known is not None and (self._refreshing or
                                  time.monotonic() - known[0] < self.version_ttl):
            return known[1]
        # only the event loop's thread touches _refreshing: no lock needed
        self._refreshing = True
        try:
            return await run_in_threadpool(self.read_version)
        finally:
            self._refreshing = False

    def get(self, key: str, version: str) -> CachedResponse | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None or found.version != version:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: str, entry: CachedResponse) -> None:
        if len(entry.body) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            self._entries[key] = entry
            self._bytes += len(entry.body)
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _key, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.body)


def not_modified(request: Request, etag: str) -> bool:
    """Whether If-None-Match names the current representation (RFC 9110 §13.1.2): `*`
    (any representation; one exists), or one of its entity tags compared weakly: `W/"x"`
    matches `"x"`."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return etag.removeprefix("W/") in (tag.strip().removeprefix("W/")
                                        for tag in header.split(","))


def _respond(request: Request, entry: CachedResponse) -> Response:
    headers = {"etag": entry.etag, "cache-control": "no-cache"}
    if not_modified(request, entry.etag):
        return Response(status_code=304, headers=headers)
    return Response(entry.body, media_type=entry.media_type, headers=headers)


def cached(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Serve the endpoint's 200 responses from the RenderCache while the record is unchanged
    (the key includes scheme and host: feeds carry absolute links). A hit is answered on the
    event loop; the version check and a render run in the thread pool, as sync endpoints do."""

    @functools.wraps(endpoint)
    async def serve(request: Request) -> Response:
        cache: RenderCache | None = getattr(request.app.state, "cache", None)
        if cache is None or relative_since(request.query_params.get("since")):
            # "since=7d" moves with the clock, not with the record
            return await run_in_threadpool(endpoint, request)
        key = str(request.url)
        version = await cache.current_version()
        hit = cache.get(key, version)
        if hit is not None:
            return _respond(request, hit)
        pending = cache.rendering.get((key, version))
        if pending is not None:
            entry = await asyncio.shield(pending)
            if entry is not None:
                return _respond(request, entry)
            return await run_in_threadpool(endpoint, request)  # it failed there: say why here
        done: asyncio.Future[CachedResponse | None] = asyncio.get_running_loop().create_future()
        cache.rendering[(key, version)] = done
        try:
            response = await run_in_threadpool(endpoint, request)
            if response.status_code != 200 or not isinstance(response.body, bytes):
                return response
            digest = hashlib.blake2b(response.body, digest_size=12).hexdigest()
            entry = CachedResponse(version, response.body, response.media_type or
                                   response.headers.get("content-type", "text/plain"),
                                   f'"v{version}-{digest}"')
            cache.put(key, entry)
            cache.renders += 1
            done.set_result(entry)
            return _respond(request, entry)
        finally:
            del cache.rendering[(key, version)]
            if not done.done():
                done.set_result(None)

    return serve

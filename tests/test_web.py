"""Tests for `redline serve` (daemon/web): pages, feed, API, safety headers and token, over a
record built from the real revision chains of tests/fixtures/corpus on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import feedparser
import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PG_ADMIN_URL, REPO, file_state, leave_heartbeat_in_wal, write_config
from starlette.testclient import TestClient

from daemon import query
from daemon.cli import cli
from daemon.config import ChannelConfig, WatchConfig
from daemon.errors import QueryTimeout
from daemon.ingest import Ingestor
from daemon.notify.outbox import DeliveryOutbox
from daemon.store import migrate
from daemon.store.engine import make_engine
from daemon.web import create_app
from daemon.web.feed import Feed, FeedEntry, render_atom
from daemon.web.guard import CONTENT_SECURITY_POLICY, bearer_token_matches
from daemon.web.server import read_only_engine

HOSTILE_URL = "https://example.org/hostile-statement/"
HOSTILE_V1 = """---
source_url: {url}
title: "Hostile <script>document.title='pwned-title'</script> <b onmouseover=alert(1)>x</b>"
date: '2026-11-01'
published_time: '2026-11-01 10:00:00-05:00'
tags: [hostile-test]
---
The quick brown fox says {word} to everyone.

<script>document.title = 'pwned-script'; console.log('pwned-script')</script>

<img src=x onerror="document.title='pwned-img'; console.log('pwned-img')">

[click me](javascript:console.log('pwned-link')) and
<a href="javascript:console.log('pwned-a')">this</a>

&lt;script&gt;console.log('pwned-escaped')&lt;/script&gt; then
&lt;img src=x onerror=console.log('pwned-escaped-img')&gt; end.
"""
# the 1856 -> 1846 correction of a real chain in the sample (EXPECTED.tsv)
YEAR_CHAIN = ("briefings-statements/2026-02/2026-02-02-america-250-presidential-message-on-"
              "the-anniversary-of-our-victory-in-the-mexican-american-war.md")


@dataclass
class Record:
    """What the test record holds, as the tests need to find it."""

    ids: dict[str, int] = field(default_factory=dict)  # orig_path -> statement_id
    versions: dict[str, int] = field(default_factory=dict)  # orig_path -> versions written
    hostile_id: int = 0
    rejected_path: str = ""


def build_record(engine: sa.Engine, sample: Path, tmp_path: Path) -> Record:
    """Replay the sample's real revision chains (each version written over one path at its
    real capture time), then a hostile statement in two revisions and one rejected file;
    every event gets a pending delivery to one channel."""
    index = list(csv.DictReader((sample / "revisions" / "INDEX.tsv").open(encoding="utf-8"),
                                delimiter="\t"))
    chains: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in index:
        chains[row["orig_path"]].append(row)
    root = tmp_path / "watched"
    root.mkdir()
    now = [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)]
    channel = ChannelConfig(name="archive", type="jsonl",
                            options={"path": tmp_path / "events.jsonl"})
    ingestor = Ingestor(engine, WatchConfig(paths=(root,)), DeliveryOutbox([channel]),
                        clock=lambda: now[0])
    rec = Record()
    steps = sorted(index, key=lambda r: (r["commit_time_utc"], r["orig_path"], int(r["version"])))
    for row in steps:
        target = root / row["orig_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample / "revisions" / row["version_file"], target)
        now[0] = dt.datetime.fromisoformat(row["commit_time_utc"].replace("Z", "+00:00"))
        assert ingestor.process_paths([str(target)]).rejected == 0, row["version_file"]
        rec.versions[row["orig_path"]] = rec.versions.get(row["orig_path"], 0) + 1
    hostile = root / "hostile.md"
    for i, word in enumerate(("alpha", "omega")):
        now[0] = dt.datetime(2026, 12, 1, 12, i, tzinfo=dt.UTC)
        hostile.write_text(HOSTILE_V1.format(url=HOSTILE_URL, word=word), encoding="utf-8")
        assert ingestor.process_paths([str(hostile)]).rejected == 0
    bad = root / "no-front-matter.md"
    bad.write_text("# <script>alert('pwned-error')</script> no front matter\n")
    assert ingestor.process_paths([str(bad)]).rejected == 1
    rec.rejected_path = str(bad)
    with engine.connect() as conn:
        for orig, rows in chains.items():
            url = sorted(rows, key=lambda r: int(r["version"]))[-1]["source_url"]
            rec.ids[orig] = query.resolve_statement(conn, url)
        rec.hostile_id = query.resolve_statement(conn, HOSTILE_URL)
    return rec


class RecordTemplates:
    """The record is built once per database kind per session (replaying every chain takes
    seconds, on PostgreSQL several) and cloned for each test into the test's own `db_url`:
    a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL."""

    def __init__(self, sample: Path, tmp: pytest.TempPathFactory) -> None:
        self.sample = sample
        self.tmp = tmp
        self.built: dict[str, tuple[str, Record]] = {}

    def clone_into(self, db_url: str) -> Record:
        kind = sa.engine.make_url(db_url).get_backend_name()
        if kind == "sqlite":
            template, rec = self._template(kind, f"sqlite:///{self.tmp.mktemp('web')}/t.db")
            target = Path(sa.engine.make_url(db_url).database or "")
            assert not target.exists(), "clone before anything opens the test database"
            src = sqlite3.connect(sa.engine.make_url(template).database or "")
            dst = sqlite3.connect(target)
            src.backup(dst)  # a consistent copy whatever the WAL holds
            dst.close()
            src.close()
            return rec
        template, rec = self._template(kind, _sibling_database(db_url, "webtmpl"))
        name = sa.engine.make_url(db_url).database
        with _admin(db_url) as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE '
                                 f'"{sa.engine.make_url(template).database}"')
        return rec

    def _template(self, kind: str, url: str) -> tuple[str, Record]:
        if kind not in self.built:
            if kind == "postgresql":
                with _admin(url) as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{sa.engine.make_url(url).database}"')
            eng = make_engine(url)
            migrate.upgrade(eng)
            rec = build_record(eng, self.sample, self.tmp.mktemp("watched"))
            eng.dispose()
            self.built[kind] = (url, rec)
        return self.built[kind]

    def drop(self) -> None:
        if "postgresql" in self.built:
            url = self.built["postgresql"][0]
            with _admin(url) as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS '
                                     f'"{sa.engine.make_url(url).database}" WITH (FORCE)')


def _sibling_database(db_url: str, tag: str) -> str:
    url = sa.engine.make_url(db_url)
    return url.set(database=f"redline_{tag}_{uuid.uuid4().hex[:10]}").render_as_string(
        hide_password=False)


@contextmanager
def _admin(db_url: str) -> Iterator[sa.Connection]:
    admin = sa.create_engine(sa.engine.make_url(db_url).set(database="postgres"),
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def record_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordTemplates]:
    """One built record per database kind for the whole session."""
    templates = RecordTemplates(Path(__file__).resolve().parent / "fixtures" / "corpus",
                                tmp_path_factory)
    yield templates
    templates.drop()


@pytest.fixture
def record(db_url: str, record_templates: RecordTemplates) -> Record:
    """The sample's chains and the hostile statement, in this test's own database (SQLite
    file, then PostgreSQL)."""
    return record_templates.clone_into(db_url)


@pytest.fixture
def engine_rw(record: Record, db_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the test's database, for the tests' own SQL."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def client(record: Record, db_url: str) -> Iterator[TestClient]:
    """The site over a read-only engine on the same database."""
    ro = read_only_engine(db_url)
    with TestClient(create_app(ro), base_url="http://testserver") as c:
        yield c
    ro.dispose()


class Page(HTMLParser):
    """The parts of a served page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.tags: list[str] = []
        self.handlers: list[str] = []  # on* attributes
        self.marked: dict[str, list[str]] = {"ins": [], "del": [], "mark": []}
        self.text: list[str] = []
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.handlers.append(name)
            if tag == "a" and name == "href" and value is not None:
                self.links.append(value)
        if tag in self.marked:
            self._open.append(tag)
            self.marked[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for tag in self._open:
            self.marked[tag][-1] += data

    def words(self, tag: str) -> list[str]:
        return [w.strip() for w in self.marked[tag]]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def get_page(client: TestClient, url: str, status: int = 200) -> Page:
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
    return Page(r.text)


def sql(engine: sa.Engine, text: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(text), params))


def diff_links(page: Page) -> list[str]:
    return [u for u in page.links if re.fullmatch(r"/statements/\d+/diff(\?.*)?", u)]


# ---- pages -----------------------------------------------------------------------------

def test_recent_changes_page_lists_the_newest_changes_each_linking_its_diff(
        client: TestClient, engine_rw: sa.Engine) -> None:
    """/ shows the 50 newest events in change_log order, each with a working diff link, and
    pages on to the rest."""
    expected = sql(engine_rw, """SELECT event_id, statement_id, from_revision, to_revision
                              FROM change_log ORDER BY occurred_at DESC, event_id DESC""")
    page = get_page(client, "/")
    links = diff_links(page)
    want = [f"/statements/{e.statement_id}/diff?"
            + (f"from={e.from_revision}&" if e.from_revision else "") + f"to={e.to_revision}"
            for e in expected[:50]]
    assert links == want
    for link in links[:5]:
        assert client.get(link).status_code == 200
    assert len(expected) > 50
    page2 = get_page(client, "/?page=2")
    assert diff_links(page2) == [w for w in (
        f"/statements/{e.statement_id}/diff?" + (f"from={e.from_revision}&" if e.from_revision
                                                 else "") + f"to={e.to_revision}"
        for e in expected[50:100])]
    assert "/" in page2.links  # "newer" goes back to the first page


def test_recent_changes_filter_by_kind_tag_and_since(client: TestClient,
                                                      engine_rw: sa.Engine) -> None:
    """kind, tag and since narrow the list exactly as the change log says; a bad kind is a
    400 page, not an error trace."""
    revised = sql(engine_rw, "SELECT count(*) FROM change_log WHERE kind = 'revised'")[0][0]
    page = get_page(client, "/?kind=revised")
    assert 0 < len(diff_links(page)) == min(revised, 50)
    assert page.all_text.count("revised") >= len(diff_links(page))
    tagged = get_page(client, "/?tag=hostile-test")
    assert len(diff_links(tagged)) == 2  # added and revised
    since = sql(engine_rw, "SELECT count(*) FROM change_log WHERE occurred_at >= :t",
                t=dt.datetime(2026, 1, 1))[0][0]
    assert len(diff_links(get_page(client, "/?since=2026-01-01"))) == min(since, 50)
    bad = get_page(client, "/?kind=bogus", status=400)
    assert "kind must be one of" in bad.all_text


def test_diff_page_marks_the_changed_word_inline_and_side_by_side(
        client: TestClient, record: Record) -> None:
    """The real 1856 -> 1846 correction is one <del> and one <ins>, with the changed
    metadata field listed above; side by side puts them in one changed row."""
    sid = record.ids[YEAR_CHAIN]
    page = get_page(client, f"/statements/{sid}/diff?from=1&to=2")
    assert page.words("del") == ["1856,"] and page.words("ins") == ["1846,"]
    text = page.all_text
    assert text.index("Changed fields") < text.index("1846")
    assert "modified_time" in text
    side = get_page(client, f"/statements/{sid}/diff?from=1&to=2&view=side")
    assert side.words("del") == ["1856,"] and side.words("ins") == ["1846,"]
    # the default is the last two revisions; from must be before to
    assert get_page(client, f"/statements/{sid}/diff").words("ins") == page.words("ins")
    assert "earlier revision" in get_page(client, f"/statements/{sid}/diff?from=2&to=1",
                                          status=400).all_text
    assert get_page(client, f"/statements/{sid}/diff?to=9", status=404)


def test_statement_page_shows_every_revision_and_old_urls_find_it(
        client: TestClient, record: Record, engine_rw: sa.Engine) -> None:
    """A statement's page lists its revisions (from statement_revisions) each linking its
    diff; a statement found by an old URL redirects to its stable page."""
    sid = record.ids[YEAR_CHAIN]
    revs = sql(engine_rw, """SELECT revision_number, kind FROM statement_revisions
                          WHERE statement_id = :s ORDER BY revision_number""", s=sid)
    page = get_page(client, f"/statements/{sid}")
    assert len(revs) == record.versions[YEAR_CHAIN]
    for n, _kind in revs:
        want = f"/statements/{sid}/diff?" + (f"from={n - 1}&" if n > 1 else "") + f"to={n}"
        assert want in page.links
    assert [k for _n, k in revs][0] == "added"
    old = sql(engine_rw, """SELECT u.url, u.statement_id FROM statement_urls u
                         JOIN statements s ON s.id = u.statement_id
                         WHERE u.url <> s.source_url""")
    assert old, "the sample has a source_url rewrite"
    r = client.get("/statements", params={"url": old[0].url}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/statements/{old[0].statement_id}"
    assert get_page(client, "/statements/999999", status=404)


def test_search_page_finds_a_distinctive_word_and_marks_it(
        client: TestClient, record: Record) -> None:
    """Search ranks the statement holding a distinctive word first and marks the match."""
    sid = record.ids[YEAR_CHAIN]
    page = get_page(client, "/search?q=1846")
    first = next(u for u in page.links if re.fullmatch(r"/statements/\d+", u))
    assert first == f"/statements/{sid}"
    assert "1846" in page.words("mark")
    assert "Nothing matches" in get_page(client, "/search?q=zzzyxnotaword").all_text


def test_errors_and_deliveries_pages(client: TestClient, record: Record,
                                     engine_rw: sa.Engine) -> None:
    """/errors shows the rejected file and its reason; /deliveries the pending deliveries,
    filterable by status, page by page: every one of them on some page, once (and in the
    API's pages, limit and offset)."""
    page = get_page(client, "/errors")
    assert record.rejected_path in page.all_text and "no_front_matter" in page.all_text
    pending = sql(engine_rw, "SELECT count(*) FROM delivery_status WHERE status = 'pending'")[0][0]
    assert pending > 0
    deliveries = get_page(client, "/deliveries?status=pending")
    assert f"pending ({pending})" in deliveries.all_text
    events_shown = [u for u in deliveries.links if u.startswith("/statements?url=")]
    assert len(events_shown) == min(pending, 50)
    assert pending > 7
    seen, url, pages = [], "/deliveries?status=pending&limit=3", 0
    while url:
        shown = get_page(client, url)
        seen += re.findall(r"event (\d+)", shown.all_text)
        url = next((u for u in shown.links if u.startswith("/deliveries?") and "page=" in u
                    and int(re.search(r"page=(\d+)", u)[1]) == pages + 2), None)
        pages += 1
        assert pages <= pending
    assert pages == -(-pending // 3)
    expected = [str(r[0]) for r in sql(engine_rw, "SELECT event_id FROM deliveries WHERE "
                                       "status = 'pending' ORDER BY id DESC")]
    assert seen == expected
    api = [d["event_id"] for off in range(0, pending, 3) for d in
           client.get(f"/api/deliveries?status=pending&limit=3&offset={off}").json()]
    assert list(map(str, api)) == expected
    assert "/deliveries?status=pending&limit=3" in get_page(
        client, "/deliveries?status=pending&limit=3&page=2").links  # back to the first
    assert "No deliveries with status dead" in get_page(client,
                                                        "/deliveries?status=dead").all_text


# ---- safety ----------------------------------------------------------------------------

def test_hostile_statement_is_shown_as_text_never_as_markup(
        client: TestClient, record: Record) -> None:
    """The hostile title and body appear escaped on every page that shows them: no script
    element, no event-handler attribute, no javascript: link anywhere."""
    sid = record.hostile_id
    urls = ["/", "/?tag=hostile-test", f"/statements/{sid}", f"/statements/{sid}/diff",
            f"/statements/{sid}/diff?view=side", f"/statements/{sid}/diff?to=1",
            "/search?q=quick+brown+fox", "/errors", "/deliveries"]
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        page = Page(r.text)
        assert "script" not in page.tags and "img" not in page.tags, url
        assert page.handlers == [], url
        assert not any(h.strip().lower().startswith(("javascript:", "data:"))
                       for h in page.links), url
        assert "<script" not in r.text.lower(), url
    title_page = client.get(f"/statements/{sid}").text
    assert "Hostile &lt;script&gt;document.title=" in title_page
    diff_page = Page(client.get(f"/statements/{sid}/diff").text)
    assert "<script>console.log('pwned-escaped')</script>" in diff_page.all_text
    assert diff_page.words("del") == ["alpha"] and diff_page.words("ins") == ["omega"]
    assert "<script>alert('pwned-error')</script>" in Page(client.get("/errors").text).all_text


def test_every_response_carries_the_security_headers(client: TestClient,
                                                      record: Record) -> None:
    """Pages, feed, API, static files, 404s and 405s all send the CSP (no script source at
    all), nosniff and no-referrer."""
    for method, url in [("GET", "/"), ("GET", f"/statements/{record.hostile_id}/diff"),
                        ("GET", "/feed.atom"), ("GET", "/api/events"),
                        ("GET", "/static/redline.css"), ("GET", "/nowhere"),
                        ("HEAD", "/"), ("POST", "/")]:
        r = client.request(method, url)
        csp = r.headers["content-security-policy"]
        assert csp == CONTENT_SECURITY_POLICY, url
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
    assert client.get("/static/redline.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/app.js").status_code == 404


def test_methods_other_than_get_and_head_get_405_and_write_nothing(
        client: TestClient, engine_rw: sa.Engine, record: Record) -> None:
    """Every path refuses every other method with 405 and Allow: GET, HEAD; HEAD works."""
    before = sql(engine_rw, "SELECT count(*), (SELECT count(*) FROM deliveries) FROM events")
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
        for url in ["/", f"/statements/{record.hostile_id}", "/api/events", "/feed.atom",
                    f"/api/statements/{record.hostile_id}/diff", "/nowhere"]:
            r = client.request(method, url, content=b"{}")
            assert r.status_code == 405, (method, url)
            assert r.headers["allow"] == "GET, HEAD"
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/html")
    assert sql(engine_rw, "SELECT count(*), (SELECT count(*) FROM deliveries) FROM events"
               ) == before


def test_the_server_engine_cannot_write(record: Record, db_url: str) -> None:
    """The engine `redline serve` reads with refuses writes on both databases."""
    ro = read_only_engine(db_url)
    try:
        with pytest.raises(sa.exc.DBAPIError):
            with ro.begin() as conn:
                conn.execute(sa.text("DELETE FROM deliveries"))
        with ro.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() > 0
    finally:
        ro.dispose()


def test_token_is_required_when_configured(engine_rw: sa.Engine, db_url: str) -> None:
    """With a token every request needs `Authorization: Bearer <token>`: none or a wrong
    one is 401 with WWW-Authenticate, the right one 200."""
    ro = read_only_engine(db_url)
    token = "s3cret-t0ken"
    try:
        with TestClient(create_app(ro, token)) as c:
            for url in ["/", "/api/status", "/feed.atom", "/static/redline.css"]:
                r = c.get(url)
                assert r.status_code == 401 and r.headers["www-authenticate"].startswith(
                    "Bearer"), url
                assert token not in r.text
                assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
                assert c.get(url, headers={"Authorization": f"Basic {token}"}
                             ).status_code == 401
                ok = c.get(url, headers={"Authorization": f"Bearer {token}"})
                assert ok.status_code == 200, url
                assert ok.headers["cache-control"] == "private, no-store"
    finally:
        ro.dispose()


def test_bearer_token_matching() -> None:
    """Only the exact token after `Bearer ` (any case of the scheme) matches."""
    assert bearer_token_matches(b"Bearer abc", "abc")
    assert bearer_token_matches(b"bearer abc", "abc")
    for header in (None, b"", b"Bearer", b"Bearer ab", b"Bearer abcd", b"Basic abc", b"abc"):
        assert not bearer_token_matches(header, "abc"), header


# ---- feed ------------------------------------------------------------------------------

def test_feed_is_valid_atom_whose_entries_link_their_diffs(
        client: TestClient, engine_rw: sa.Engine) -> None:
    """/feed.atom parses as Atom 1.0 without errors, has the required elements, and each
    entry links a diff page that answers and carries the event's summary."""
    r = client.get("/feed.atom")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(r.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.id and parsed.feed.title and parsed.feed.updated
    assert any(link.rel == "self" for link in parsed.feed.links)
    newest = sql(engine_rw, """SELECT event_id, summary, kind, title FROM change_log
                            ORDER BY occurred_at DESC, event_id DESC LIMIT 50""")
    assert len(parsed.entries) == len(newest)
    for entry, event in zip(parsed.entries, newest, strict=True):
        assert entry.id and entry.updated and entry.title == f"{event.kind}: {event.title}"
        assert entry.summary == event.summary
        link = urlsplit(entry.link)
        assert link.netloc == "testserver" and link.path.endswith("/diff")
    for entry in parsed.entries[:5]:
        link = urlsplit(entry.link)
        assert client.get(f"{link.path}?{link.query}").status_code == 200
    etag = r.headers["etag"]
    assert client.get("/feed.atom", headers={"If-None-Match": etag}).status_code == 304


def test_feed_entry_ids_do_not_follow_the_host_the_feed_is_read_from(
        client: TestClient, engine_rw: sa.Engine) -> None:
    """A reader that reaches the feed by another name (localhost, an address, a proxy) gets
    the same feed id and entry ids, so it does not show every change again; the links
    follow the host, and no two changes share an id; a filtered feed is another feed."""
    by_name = feedparser.parse(client.get("/feed.atom").content)
    by_address = feedparser.parse(
        client.get("/feed.atom", headers={"host": "10.1.2.3:8080"}).content)
    filtered = feedparser.parse(client.get("/feed.atom?kind=revised").content)
    assert by_name.feed.id == by_address.feed.id
    assert by_name.feed.id.startswith("urn:uuid:") and filtered.feed.id != by_name.feed.id
    assert by_name.entries and len(by_name.entries) == len(by_address.entries)
    assert [e.id for e in by_name.entries] == [e.id for e in by_address.entries]
    assert all(e.id.startswith("urn:uuid:") for e in by_name.entries)
    assert len({e.id for e in by_name.entries}) == len(by_name.entries)
    assert urlsplit(by_address.entries[0].link).netloc == "10.1.2.3:8080"
    assert urlsplit(by_name.entries[0].link).netloc == "testserver"


def test_feed_filters_by_kind_and_tag(client: TestClient, engine_rw: sa.Engine) -> None:
    """?kind= and ?tag= narrow the feed like the recent-changes page."""
    parsed = feedparser.parse(client.get("/feed.atom?kind=revised").content)
    assert parsed.bozo == 0 and parsed.entries
    assert all(e.title.startswith("revised: ") for e in parsed.entries)
    assert all("revised" in [t.term for t in e.tags] for e in parsed.entries)
    tagged = feedparser.parse(client.get("/feed.atom?kind=revised&tag=hostile-test").content)
    assert [e.title[:18] for e in tagged.entries] == ["revised: Hostile <"]
    self_link = next(link.href for link in tagged.feed.links if link.rel == "self")
    assert parse_qs(urlsplit(self_link).query) == {"kind": ["revised"], "tag": ["hostile-test"]}
    assert client.get("/feed.atom?kind=nope").status_code == 400


def test_render_atom_drops_characters_xml_forbids() -> None:
    """A control character in a title cannot make the feed invalid XML."""
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    body = render_atom(Feed(id="urn:x", title="t", self_link="http://h/feed.atom",
                            link="http://h/", updated=when, entries=[FeedEntry(
                                id="urn:e", title="bad \x0b title <b>", link="http://h/d",
                                updated=when, summary="s & t")]))
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0 and parsed.entries[0].title == "bad  title <b>"
    assert parsed.entries[0].updated == "2026-01-02T03:04:05Z"


# ---- API -------------------------------------------------------------------------------

def _cli_json(config: Path, *args: str) -> object:
    result = CliRunner().invoke(cli, ["--config", str(config), *args, "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_api_serves_what_the_cli_prints_with_json(
        client: TestClient, record: Record, db_url: str, tmp_path: Path) -> None:
    """/api/ history, diff, search, events, errors and deliveries equal `redline ... --json` (the
    same dicts; status differs only in its heartbeat clock, so its counts are compared)."""
    cfg = write_config(tmp_path / "cfg", db_url)
    sid = record.ids[YEAR_CHAIN]
    pairs = [
        (f"/api/statements/{sid}/history", ["history", str(sid)]),
        (f"/api/statements/{sid}/diff?from=1&to=2", ["diff", str(sid), "--from", "1",
                                                      "--to", "2"]),
        ("/api/search?q=1846", ["search", "1846"]),
        ("/api/events?kind=revised&limit=10", ["events", "--kind", "revised", "--limit",
                                               "10"]),
        ("/api/events?tag=hostile-test", ["events", "--tag", "hostile-test"]),
        ("/api/errors", ["errors"]),
        ("/api/deliveries?status=pending&limit=10", ["deliveries", "--status", "pending",
                                                     "--limit", "10"]),
    ]
    for url, args in pairs:
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.json() == _cli_json(cfg, *args), url
    api_status = client.get("/api/status").json()
    cli_status = _cli_json(cfg, "status")
    for key in ("statements", "revisions", "last_change", "rejected_files", "deliveries"):
        assert api_status[key] == cli_status[key], key
    assert client.get("/api/statements/999999").json() == {"error": "no statement with id "
                                                                    "999999"}
    assert client.get("/api/statements/999999").status_code == 404
    lookup = client.get("/api/statements", params={"url": HOSTILE_URL}, follow_redirects=False)
    assert lookup.status_code == 303
    assert lookup.headers["location"] == f"/api/statements/{record.hostile_id}"
    bad = client.get("/api/events?limit=0")
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


HUGE = "99999999999999999999999999"
TOO_MANY_DIGITS = "1" + "0" * 5000


def test_odd_ids_and_times_are_404_and_400_never_500(client: TestClient) -> None:
    """Ids beyond 64 bits (also in more digits than `int` converts), ages reaching before
    the year 1, times out of range once in UTC and digits `int` refuses are an unknown
    statement (404) or a bad parameter (400) with one line, on the pages and the API
    alike: never a 500."""
    not_found = [f"/statements/{HUGE}", f"/statements/{2**63}", f"/statements/{2**63 - 1}",
                 f"/statements/{HUGE}/diff", f"/api/statements/{2**63}",
                 f"/api/statements/{HUGE}/history", f"/api/statements/{HUGE}/diff",
                 f"/statements?id={HUGE}", f"/api/statements?url={HUGE}",
                 # more digits than `int` converts (4,300) was a 500 from the URL router
                 f"/statements/{TOO_MANY_DIGITS}", f"/statements/{TOO_MANY_DIGITS}/diff",
                 f"/api/statements/{TOO_MANY_DIGITS}/history"]
    bad = ["/api/events?since=1000000d", "/api/events?since=999999w",
           "/?since=99999999999999999999d", "/feed.atom?since=1000000d",
           "/api/events?since=0001-01-01T00:00:00%2B14:00",
           "/api/events?since=9999-12-31T23:59:59-01:00", "/api/events?limit=%C2%B2",
           "/api/statements/1/diff?from=%C2%B2", "/api/events?since=%C2%B2d"]
    for urls, status in ((not_found, 404), (bad, 400)):
        for url in urls:
            r = client.get(url, follow_redirects=False)
            assert r.status_code == status, (url, r.status_code, r.text[:200])
            if url.startswith("/api/"):
                assert list(r.json()) == ["error"] and "\n" not in r.json()["error"], url
    assert "out of range" in client.get("/api/events?since=1000000d").json()["error"]


def test_a_parameter_given_twice_is_a_400(client: TestClient) -> None:
    """`?kind=added&kind=revised` is refused with one line, on the feed, the pages and the
    API alike: keeping one of the two silently (the last, as it was) answered another
    question than the one asked."""
    for url in ("/feed.atom?kind=added&kind=revised", "/?tag=a&tag=b",
                "/api/events?since=7d&since=1d", "/api/search?q=war&q=peace",
                "/api/events?limit=1&limit=2", "/search?q=war&q=peace"):
        r = client.get(url)
        assert r.status_code == 400, (url, r.status_code)
        assert "was given 2 times; it takes one value" in r.text, url
    assert client.get("/feed.atom?kind=added").status_code == 200


def test_a_nul_character_in_a_parameter_is_a_400_never_a_500(client: TestClient) -> None:
    """`%00` in a search, a tag or a channel: PostgreSQL refuses NUL in any bound text,
    which was an unhandled DataError (500 with a traceback in the log) there; on both
    databases it is a bad parameter, named in one line."""
    for url, name in (("/api/search?q=peace%00deal", "q"), ("/search?q=Guadal%00*", "q"),
                      ("/api/events?tag=x%00", "tag"), ("/?tag=x%00", "tag"),
                      ("/feed.atom?tag=x%00", "tag"), ("/api/deliveries?channel=x%00",
                                                       "channel"),
                      ("/deliveries?channel=x%00", "channel"),
                      ("/api/statements?url=https%3A%2F%2Fx%00y", "url"),
                      ("/statements?url=x%00y", "url")):
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 400, (url, r.status_code, r.text[:200])
        if url.startswith("/api/"):
            assert r.json() == {"error": f"{name} must not contain a NUL character (%00)"}


def test_a_search_beyond_its_bounds_is_a_400(client: TestClient) -> None:
    """Too many words, too many prefixes or 2,000 `a*` terms: 400 with one line, at once
    (the last once kept `serve` at 100 % CPU for over ten minutes)."""
    too_many = " ".join(f"zq{i}x" for i in range(query.MAX_SEARCH_TERMS + 1))
    prefixes = " ".join(f"{c}*" for c in "abcdefghijk"[:query.MAX_PREFIX_TERMS + 1])
    for q in (too_many, prefixes, " OR ".join(["a*"] * 2000)):
        r = client.get("/api/search", params={"q": q})
        assert r.status_code == 400, r.text[:200]
        assert r.json()["error"].startswith("search takes at most")
        page = client.get("/search", params={"q": q})
        assert page.status_code == 400 and "search takes at most" in page.text


def test_deliveries_times_are_whole_seconds_in_the_api_and_the_cli(
        client: TestClient, engine_rw: sa.Engine, db_url: str, tmp_path: Path) -> None:
    """`redline deliveries --json` printed microseconds in delivered_at/next_attempt_at where
    /api/deliveries (and every other --json) has whole seconds: both are now the same rows,
    ISO 8601 with Z and no fraction."""
    when = dt.datetime(2026, 3, 1, 12, 0, 5, 123456)
    with engine_rw.begin() as conn:
        event_id = conn.execute(sa.text("SELECT max(event_id) FROM change_log")).scalar()
        for channel, status, next_at, done_at in (("hook-a", "delivered", None, when),
                                                  ("hook-b", "failed", when, None)):
            conn.execute(sa.text(
                "INSERT INTO deliveries (event_id, channel, mode, status, attempts, "
                "created_at, next_attempt_at, delivered_at) "
                "VALUES (:e, :c, 'immediate', :s, 1, :t, :n, :d)"),
                {"e": event_id, "c": channel, "s": status, "t": when, "n": next_at,
                 "d": done_at})
    cfg = write_config(tmp_path / "cfg", db_url)
    for status in ("delivered", "failed"):
        api = client.get(f"/api/deliveries?status={status}").json()
        assert api == _cli_json(cfg, "deliveries", "--status", status)
        [row] = [r for r in api if r["channel"].startswith("hook-")]
        assert row["delivered_at" if status == "delivered" else "next_attempt_at"] == \
            "2026-03-01T12:00:05Z"
    plain = CliRunner().invoke(cli, ["--config", str(cfg), "deliveries", "--status", "failed"])
    assert "next attempt 2026-03-01T12:00:05Z" in plain.output


def test_openapi_document_is_valid_and_every_endpoint_answers(
        client: TestClient, record: Record) -> None:
    """/api/openapi.json is a valid OpenAPI 3 document and each documented GET answers
    200 (the URL lookup 303 to a 200) with a real id, every key of the answer described."""
    doc = client.get("/api/openapi.json").json()
    try:
        from openapi_spec_validator import validate
    except ImportError:  # pragma: no cover - structural checks where it is not installed
        validate = None
    if validate is not None:
        validate(doc)
    assert doc["openapi"].startswith("3.")
    sid = record.ids[YEAR_CHAIN]
    values = {"statement_id": str(sid), "q": "1846", "url": HOSTILE_URL, "from": "1",
              "to": "2", "kind": "revised", "tag": "hostile-test", "since": "2020-01-01",
              "limit": "5", "offset": "0", "status": "pending", "channel": "archive"}
    assert len(doc["paths"]) >= 10
    for path, item in doc["paths"].items():
        op = item["get"]
        url = path
        params = {}
        for p in op["parameters"]:
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", values[p["name"]])
            else:
                params[p["name"]] = values[p["name"]]
        r = client.get(url, params=params)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/json"), path
        body = r.json()
        assert body not in ([], {}, None), path
        ok = op["responses"].get("200") or doc["paths"]["/api/statements/{statement_id}"][
            "get"]["responses"]["200"]  # the URL lookup redirects to the statement
        assert _undocumented(body, ok["content"]["application/json"]["schema"], doc) == [], \
            path


def _undocumented(value: Any, schema: dict[str, Any], doc: dict[str, Any],
                  where: str = "") -> list[str]:
    """The keys of a response that its OpenAPI schema does not describe (where the schema
    lists an object's properties)."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, list) and "items" in schema:
        return [k for item in value for k in _undocumented(item, schema["items"], doc, where)]
    if not isinstance(value, dict) or "properties" not in schema:
        return []
    props = schema["properties"]
    return [f"{where}.{k}" for k in value if k not in props] + \
        [k for k, v in value.items() if k in props
         for k in _undocumented(v, props[k], doc, f"{where}.{k}")]


# ---- the process and the service unit ---------------------------------------------------

@dataclass
class ServeProcess:
    """`redline serve` running as a real process, with the datagrams it sent systemd."""

    proc: subprocess.Popen[bytes]
    base: str
    notify: socket.socket
    log: Path

    def notifications(self, timeout: float) -> str:
        """The next sd_notify datagram (blocks up to `timeout` seconds)."""
        self.notify.settimeout(timeout)
        try:
            return self.notify.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no sd_notify message within {timeout} s; log:\n"
                                 + self.log.read_text()) from None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self.notify.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(cfg: Path, tmp_path: Path, *args: str) -> ServeProcess:
    """Start `python -m daemon serve` on a free loopback port and wait for its READY=1."""
    port = free_port()
    sock_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    log = tmp_path / "serve.log"
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "--config", str(cfg), "serve", "--port", str(port),
             *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    served = ServeProcess(proc, f"http://127.0.0.1:{port}", notify, log)
    ready = served.notifications(30)
    assert ready.startswith("READY=1"), ready
    assert f"STATUS=serving http://127.0.0.1:{port}/" in ready
    return served


def test_redline_serve_runs_tells_systemd_and_stops_on_sigterm(
        record: Record, db_url: str, tmp_path: Path) -> None:
    """The real process answers on loopback after READY=1 and says STOPPING=1 and exits 0
    on SIGTERM."""
    cfg = write_config(tmp_path, db_url)
    served = start_serve(cfg, tmp_path)
    try:
        r = httpx.get(served.base + "/api/status", timeout=10)
        assert r.status_code == 200 and r.json()["statements"]["total"] > 30
        assert "server" not in r.headers
        assert httpx.post(served.base + "/", timeout=10).status_code == 405
        head = httpx.head(served.base + "/", timeout=10)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-security-policy"].startswith("default-src 'none'")
        served.proc.send_signal(signal.SIGTERM)
        assert served.notifications(10).startswith("STOPPING=1")
    finally:
        code = served.stop()
    assert code == 0, served.log.read_text()


def _crawl(base: str) -> Any:
    status = httpx.get(base + "/api/status", timeout=10).json()
    for url in ("/", "/search?q=Mexican", "/statements/1", "/statements/1/diff", "/feed.atom",
                "/errors", "/deliveries", "/api/events?limit=5"):
        assert httpx.get(base + url, timeout=10).status_code == 200, url
    return status


def test_redline_serve_never_writes_to_the_sqlite_file(record_templates: RecordTemplates,
                                                       tmp_path: Path) -> None:
    """SPEC §10: serve never writes. Closing the last connection to a WAL database used to
    checkpoint the WAL into the file and delete it (file bytes and mtime changed); opened
    `mode=ro`, serve leaves the file and its WAL as they were: when a writer left changes in
    the WAL, when no -wal/-shm exist (a writer's clean stop removes them), and it still
    reads what a writer commits while it runs."""
    db = tmp_path / "redline.db"
    db_url = f"sqlite:///{db}"
    record_templates.clone_into(db_url)
    cfg = write_config(tmp_path, db_url)
    wal = Path(f"{db}-wal")
    # 1. changes only in the WAL, no writer left
    before = leave_heartbeat_in_wal(db, "h")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    served = start_serve(cfg, tmp_path / "a")
    try:
        instances = _crawl(served.base)["watcher"]["instances"]
        assert [i["instance"] for i in instances] == ["gone"]
    finally:
        assert served.stop() == 0, served.log.read_text()
    assert (file_state(db), file_state(wal)) == before
    # 2. no -wal and no -shm at all
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert not wal.exists() and not Path(f"{db}-shm").exists()
    served = start_serve(cfg, tmp_path / "b")
    try:
        assert _crawl(served.base)["statements"]["total"] > 30
        # 3. a writer commits while serve reads
        writer = make_engine(db_url)
        try:
            root = tmp_path / "statements"
            shutil.copyfile(next((Path(__file__).parent / "fixtures" / "corpus" / "current")
                                 .rglob("*.md")), root / "new.md")
            text = (root / "new.md").read_text(encoding="utf-8")
            (root / "new.md").write_text(text.replace("source_url: ", "source_url: "
                                                      "https://example.org/moved", 1)
                                         + "\nquokkaserve\n", encoding="utf-8")
            assert Ingestor(writer, WatchConfig(paths=(root,))).scan().added == 1
            hits = httpx.get(served.base + "/api/search?q=quokkaserve", timeout=10).json()
            assert len(hits) == 1
        finally:
            writer.dispose()
        after_writer = file_state(db), file_state(wal)
    finally:
        assert served.stop() == 0, served.log.read_text()
    assert (file_state(db), file_state(wal)) == after_writer


SLOW_SQL = {  # a few seconds each, unbounded
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000000) "
              "SELECT count(*) FROM c",
    "postgresql": "SELECT count(*) FROM pg_sleep(4)",
}


def test_a_slow_query_of_the_site_is_stopped(record: Record, db_url: str) -> None:
    """The backstop behind the search bounds: a query of serve's engine running longer than
    its bound is stopped (SQLite progress handler, PostgreSQL statement_timeout) with
    QueryTimeout, a 503 with one line; the engine answers the next query as usual."""
    ro = read_only_engine(db_url, query_seconds=0.5)
    try:
        with ro.connect() as conn:
            with pytest.raises(QueryTimeout, match=r"^the query ran longer than 0.5 s"):
                conn.execute(sa.text(SLOW_SQL[ro.dialect.name])).scalar()
        with ro.connect() as conn:
            assert query.search(conn, "Mexican")
    finally:
        ro.dispose()


def test_serve_answers_a_blocked_request_and_stops_on_sigterm(
        record: Record, db_url: str, tmp_path: Path) -> None:
    """A request stuck in the database (here: behind a table lock) is stopped after
    QUERY_SECONDS and answered 503, and a SIGTERM meanwhile still stops serve with exit 0
    (uvicorn used to wait for the request for as long as it ran: over ten minutes)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("nothing blocks a SQLite reader in WAL mode; the SQLite bound is "
                    "test_a_slow_query_of_the_site_is_stopped")
    pg_url = db_url
    cfg = write_config(tmp_path, pg_url)
    served = start_serve(cfg, tmp_path)
    locker = make_engine(pg_url)
    lock = locker.connect()
    answers: list[httpx.Response | BaseException] = []
    try:
        lock.exec_driver_sql("BEGIN")
        lock.exec_driver_sql("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")

        def ask() -> None:
            try:
                answers.append(httpx.get(served.base + "/api/events", timeout=120))
            except BaseException as exc:  # recorded for the assertion below
                answers.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(1.5)  # the request is waiting for the lock
        assert not answers
        served.proc.send_signal(signal.SIGTERM)
        code = served.proc.wait(timeout=60)
        asking.join(timeout=60)
    finally:
        lock.rollback()
        lock.close()
        locker.dispose()
        if served.proc.poll() is None:
            served.proc.kill()
        served.stop()
    assert code == 0, served.log.read_text()
    [answer] = answers
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("the query ran longer than 5 s")


def test_redline_serve_refuses_a_missing_database(tmp_path: Path) -> None:
    """Serving a SQLite file that does not exist is one line and exit 1, and creates
    nothing."""
    db = tmp_path / "absent.db"
    cfg = write_config(tmp_path, f"sqlite:///{db}")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "serve"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == \
        f"redline: error: no database at {db}: run `redline ingest` or `redline run` first " \
        "(redline serve only reads)"
    assert not db.exists()


def test_redline_serve_that_cannot_listen_says_why_and_exits_1(tmp_path: Path) -> None:
    """A port already taken: one line naming the address and the reason, exit 1. uvicorn
    exits 3 there, which for redline means "ingest finished but some files were rejected"
    (SPEC §6), with the reason only in a log line."""
    db = tmp_path / "r.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    engine.dispose()
    cfg = write_config(tmp_path, f"sqlite:///{db}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "serve",
                               "--port", str(port)], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"redline: error: cannot listen on http://127.0.0.1:{port}/: ")
    assert "address already in use" in last


def test_serve_help_has_an_example() -> None:
    """`redline serve --help` documents the pages and shows an example."""
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output
    assert "/feed.atom" in result.output and "--port" in result.output


def test_service_unit_is_hardened_and_verifies(tmp_path: Path) -> None:
    """systemd/redline-serve.service runs `redline serve` as Type=notify, hardened like the
    daemon's unit, and passes `systemd-analyze verify`."""
    unit = (REPO / "systemd" / "redline-serve.service").read_text()
    for line in ("Type=notify", "DynamicUser=yes", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=", "MemoryDenyWriteExecute=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "SystemCallFilter=@system-service"):
        assert f"\n{line}\n" in unit, line
    # --config is redline's own option, before the command (test_systemd runs this line)
    assert re.search(r"^ExecStart=\S+/redline --config \S+ serve$", unit, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "redline-serve.service"
    copy.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", unit, flags=re.M))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "redline-serve" not in done.stderr, done.stderr


# ---- the render cache --------------------------------------------------------------------

def test_cached_pages_follow_the_record_and_answer_304_while_it_is_unchanged(
        record: Record, db_url: str, engine_rw: sa.Engine, tmp_path: Path) -> None:
    """A page is served from the cache (with an ETag, 304 on a match) until a change
    commits; then the next request shows the change."""
    ro = read_only_engine(db_url)
    try:
        with TestClient(create_app(ro, version_ttl=0)) as c:
            first = c.get("/")
            etag = first.headers["etag"]
            assert c.get("/", headers={"If-None-Match": etag}).status_code == 304
            assert c.get("/").content == first.content
            newer = tmp_path / "w" / "hostile-again.md"
            newer.parent.mkdir()
            newer.write_text(HOSTILE_V1.format(url=HOSTILE_URL, word="zeta"), encoding="utf-8")
            Ingestor(engine_rw, WatchConfig(paths=(newer.parent,))).process_paths([str(newer)])
            after = c.get("/", headers={"If-None-Match": etag})
            assert after.status_code == 200 and after.headers["etag"] != etag
            assert f"/statements/{record.hostile_id}/diff?from=2&to=3" in \
                diff_links(Page(after.text))
            assert f"/statements/{record.hostile_id}/diff?from=2&to=3" not in \
                diff_links(Page(first.text))
            assert Page(c.get(f"/statements/{record.hostile_id}/diff").text).words("ins") == \
                ["zeta"]
    finally:
        ro.dispose()


def test_if_none_match_is_read_as_a_list_of_tags_or_a_star(client: TestClient) -> None:
    """RFC 9110 §13.1.2: `*` matches any current representation; a list matches when one
    of its tags does, weakly (`W/"x"` is `"x"`); other tags get the page. Cached pages
    and static files alike."""
    for path in ("/", "/feed.atom", "/static/redline.css"):
        etag = client.get(path).headers["etag"]
        for header in ("*", f'"other", {etag}', f"W/{etag}", f' "x",W/{etag} '):
            r = client.get(path, headers={"If-None-Match": header})
            assert (r.status_code, r.content) == (304, b""), (path, header)
        for header in ('"other"', etag[:-2] + '"', f'"x{etag[1:]}'):
            r = client.get(path, headers={"If-None-Match": header})
            assert r.status_code == 200 and r.content, (path, header)


def test_concurrent_requests_after_a_change_share_one_render(record: Record,
                                                             db_url: str) -> None:
    """Twenty clients asking for the same page at once cause one render, and all get it."""
    import asyncio

    ro = read_only_engine(db_url)
    app = create_app(ro)
    cache = app.app.state.cache  # type: ignore[attr-defined]

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return list(await asyncio.gather(*(c.get("/feed.atom") for _ in range(20))))

    try:
        responses = asyncio.run(burst())
    finally:
        ro.dispose()
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.content for r in responses}) == 1
    assert cache.renders == 1


def test_a_change_committed_after_a_later_one_is_not_hidden_by_the_cache(
        pg_url: str, record_templates: RecordTemplates, tmp_path: Path) -> None:
    """On PostgreSQL event ids come from a sequence, so two writers (two instances, or
    `redline ingest` beside `redline run`) can commit out of id order. Writer A takes its
    event id and is held before its commit; writer B takes the next id and commits; the
    site shows B's change. When A commits, its change must show too: the newest event id
    did not move, and the cached pages hid A's change until some later change."""
    rec = record_templates.clone_into(pg_url)
    rw = make_engine(pg_url)
    ro = read_only_engine(pg_url)
    folder = tmp_path / "w"
    folder.mkdir()
    late, early = folder / "late.md", folder / "early.md"
    late.write_text(HOSTILE_V1.format(url=HOSTILE_URL, word="zeta"), encoding="utf-8")
    early.write_text(HOSTILE_V1.format(url="https://example.org/another/", word="eta"),
                     encoding="utf-8")
    ingest = Ingestor(rw, WatchConfig(paths=(folder,)))
    try:
        with TestClient(create_app(ro, version_ttl=0)) as c, rw.connect() as holder:
            # A writes its revision and event, then waits for this row lock on its statement's
            # search entry (written after the event) until `holder` lets go
            holder.execute(sa.text("SELECT 1 FROM statement_search WHERE statement_id = :i "
                                   "FOR UPDATE"), {"i": rec.hostile_id})
            a = threading.Thread(target=ingest.process_paths, args=([str(late)],))
            a.start()
            deadline = time.monotonic() + 30
            while not sql(rw, "SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = "
                              "'transactionid'") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ingest.process_paths([str(early)]).added == 1  # B commits
            before = c.get("/api/events?limit=3").json()
            assert c.get("/").status_code == 200
            holder.rollback()  # A commits
            a.join(30)
            after = c.get("/api/events?limit=3").json()
            page = Page(c.get("/").text)
    finally:
        ro.dispose()
        rw.dispose()
    a_change = (rec.hostile_id, 3)
    assert a_change not in [(e["statement_id"], e["to_revision"]) for e in before]
    assert a_change in [(e["statement_id"], e["to_revision"]) for e in after]
    assert after[1]["event_id"] < after[0]["event_id"]  # A's id is older than B's
    assert f"/statements/{rec.hostile_id}/diff?from=2&to=3" in diff_links(page)


def test_the_cache_version_moves_only_for_transactions_writing_revisions(
        pg_url: str) -> None:
    """The version of the record on PostgreSQL counts the transactions in progress that
    write revisions (see the test above); transactions elsewhere on a shared server, or
    this database's other writers (deliveries, heartbeats), do not move it: before, every
    transaction in progress on the server was part of it, and a busy server made every
    ETag stale (the feed test's 304 was seen to fail under other databases' load)."""
    from daemon.web.cache import RenderCache

    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    admin = sa.create_engine(PG_ADMIN_URL)
    cache = RenderCache(engine)
    try:
        quiet = cache.read_version()
        with admin.connect() as other_db, engine.connect() as same_db:
            other_db.execute(sa.text("CREATE TEMP TABLE elsewhere (i int)"))  # holds an xid
            same_db.execute(sa.text("INSERT INTO job_state (name, value, updated_at) "
                                    "VALUES ('test', '\"x\"', now())"))
            with admin.connect() as later:  # a later transaction ends: the two are listed
                later.execute(sa.text("SELECT pg_current_xact_id()"))  # in every snapshot
                later.commit()
            assert cache.read_version() == quiet
            with engine.connect() as writer:
                writer.execute(sa.text("LOCK TABLE revisions IN ROW EXCLUSIVE MODE"))
                assert cache.read_version() != quiet
                writer.rollback()
            other_db.rollback()
            same_db.rollback()
        assert cache.read_version() == quiet
    finally:
        admin.dispose()
        engine.dispose()


def test_render_cache_stays_within_its_bounds(record: Record, db_url: str) -> None:
    """The LRU drops the least recently used entries beyond its entry and byte limits, and
    an entry is only good for its own version."""
    from daemon.web.cache import CachedResponse, RenderCache

    cache = RenderCache(make_engine(db_url), max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.put(f"k{i}", CachedResponse("7", b"x" * 100, "text/plain", f'"{i}"'))
    assert cache.get("k0", "7") is None and cache.get("k1", "7") is None
    assert cache.get("k4", "7") is not None and cache.get("k4", "8") is None
    cache.put("big", CachedResponse("7", b"x" * 1300, "text/plain", '"b"'))  # > 1/8 of bytes
    assert cache.get("big", "7") is None
    cache.engine.dispose()
    by_size = RenderCache(make_engine(db_url), max_entries=100, max_bytes=1000)
    for i in range(12):
        by_size.put(f"k{i}", CachedResponse("1", b"x" * 100, "text/plain", f'"{i}"'))
    kept = [i for i in range(12) if by_size.get(f"k{i}", "1") is not None]
    assert kept == list(range(2, 12))
    by_size.engine.dispose()


def test_relative_since_is_never_cached() -> None:
    """Ages move with the clock; dates and times do not."""
    from daemon.web.params import relative_since

    assert relative_since("7d") and relative_since("12H") and relative_since(" 30m ")
    assert not relative_since("2026-02-03") and not relative_since("2026-02-03T16:44:17Z")
    assert not relative_since(None)


def test_pages_link_the_stylesheet_by_content_hash(client: TestClient) -> None:
    """The stylesheet URL in pages carries its hash and is cacheable for good; a changed
    file gets a new URL, so no browser keeps an old style."""
    page = client.get("/").text
    m = re.search(r'<link rel="stylesheet" href="(/static/redline\.css\?v=([0-9a-f]{12}))">',
                  page)
    assert m, page[:600]
    css = client.get(m.group(1))
    assert css.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert hashlib.sha256(css.content).hexdigest()[:12] == m.group(2)
    assert client.get("/static/redline.css?v=old").headers["cache-control"] == \
        "public, max-age=3600"


def test_unreachable_database_is_a_503_with_one_line(pg_url: str) -> None:
    """A database that cannot be reached answers 503 with a readable line, not a trace."""
    gone = make_engine(_sibling_database(pg_url, "gone"))  # a database that does not exist
    try:
        with TestClient(create_app(gone)) as c:
            page = c.get("/")
            api = c.get("/api/events")
    finally:
        gone.dispose()
    assert page.status_code == 503 and "Database unavailable" in page.text
    assert "Traceback" not in page.text
    assert api.status_code == 503
    assert api.json() == {"error": "the database is not reachable right now; try again "
                                   "shortly"}


def test_the_site_answers_503_while_the_database_is_away_and_recovers(
        pg_url: str, record_templates: RecordTemplates) -> None:
    """PostgreSQL stops accepting connections to the database (its existing ones killed):
    pages and the API answer 503 meanwhile; once it accepts them again the same running
    site answers 200 with the record, without a restart."""
    record_templates.clone_into(pg_url)
    database = sa.engine.make_url(pg_url).database
    ro = read_only_engine(pg_url)
    try:
        with TestClient(create_app(ro)) as c:
            assert c.get("/").status_code == 200
            events = c.get("/api/events").json()
            with _admin(pg_url) as admin:
                admin.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                admin.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      f"WHERE datname = '{database}'")
            time.sleep(0.3)  # past the site's record-version check interval (0.1 s)
            away = (c.get("/"), c.get("/api/events"))
            with _admin(pg_url) as admin:
                admin.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            time.sleep(0.3)
            back = (c.get("/"), c.get("/api/events"))
    finally:
        with _admin(pg_url) as admin:
            admin.exec_driver_sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        ro.dispose()
    assert [r.status_code for r in away] == [503, 503]
    assert "Database unavailable" in away[0].text and "Traceback" not in away[0].text
    assert [r.status_code for r in back] == [200, 200]
    assert back[1].json() == events and events


def test_loopback_addresses() -> None:
    """Only loopback binds count as private (a non-loopback bind without a token warns)."""
    from daemon.web.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


@pytest.mark.corpus
@pytest.mark.slow
def test_every_change_of_the_shared_corpus_has_a_diff_page_marking_its_words(
        engine: sa.Engine, corpus: Path, db_url: str, tmp_path: Path) -> None:
    """Over every real chain of ../shared/corpus/revisions: each change's diff page answers,
    marks insertions exactly when words were added and deletions exactly when words were
    removed, and the feed of the newest changes is valid Atom."""
    build_record(engine, corpus, tmp_path)
    events = sql(engine, """SELECT statement_id, from_revision, to_revision, words_added,
                                   words_removed, kind FROM change_log""")
    assert len(events) > 700
    ro = read_only_engine(db_url)
    try:
        with TestClient(create_app(ro)) as c:
            for e in events:
                if e.from_revision is None:
                    continue  # first revisions: the sample tests cover them
                url = f"/statements/{e.statement_id}/diff?from={e.from_revision}&" \
                      f"to={e.to_revision}"
                r = c.get(url)
                assert r.status_code == 200, url
                words = r.text[r.text.index('<div class="words text">'):]
                words = words[:words.index("</div>")]
                assert ("<ins>" in words) == (e.words_added > 0), (url, e)
                assert ("<del>" in words) == (e.words_removed > 0), (url, e)
            parsed = feedparser.parse(c.get("/feed.atom").content)
            assert parsed.bozo == 0 and len(parsed.entries) == 50
    finally:
        ro.dispose()


def test_serve_without_its_web_packages_names_the_extra(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` and the README's install steps once left out the `serve` extra, and
    `redline serve` died with a traceback there: it says in one line which package is
    missing and how to install it, exit 1."""
    for name in [m for m in sys.modules if m == "daemon.web" or m.startswith(
            ("daemon.web.", "starlette", "uvicorn", "jinja2"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)  # import starlette fails
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "serve", "--port", "0"])
    assert (result.exit_code, result.output) == (1, (
        "redline: error: redline serve needs the web packages, and starlette is not "
        "installed: pip install 'redline[serve]' (in a checkout: pip install -e "
        "'.[serve]')\n")), result.output


def ingest_versions(engine: sa.Engine, folder: Path, url: str, front: list[str],
                    bodies: list[str]) -> int:
    """Write each version of one statement over the same file (front: its lines after
    source_url), ingest it, and return the statement's id."""
    folder.mkdir()
    path = folder / "s.md"
    ingestor = Ingestor(engine, WatchConfig(paths=(folder,)))
    for lines, body in zip(front, bodies, strict=True):
        path.write_text(f"---\nsource_url: {url}\n{lines}date: '2025-01-01'\n---\n{body}\n",
                        encoding="utf-8")
        assert ingestor.process_paths([str(path)]).rejected == 0
    with engine.connect() as conn:
        return query.resolve_statement(conn, url)


def test_diff_page_shows_words_appended_to_a_paragraph_in_it(
        client: TestClient, engine_rw: sa.Engine, tmp_path: Path) -> None:
    """A title extended ("Two" -> "Two again") while the text changed too: the inline view
    printed the break deleted after "Two" as text, so the title read "Two", a blank line,
    then " again" on a paragraph of its own (the page is `white-space: pre-wrap`)."""
    sid = ingest_versions(engine_rw, tmp_path / "appended", "https://example.org/two",
                          ["title: Two\n", "title: Two again\n"],
                          ["Two text.", "Two text, restored differently."])
    r = client.get(f"/statements/{sid}/diff")
    assert r.status_code == 200
    words = re.search(r'<div class="words text">(.*?)</div>', r.text, re.S)
    assert words is not None
    assert words.group(1).startswith("Two <ins>again</ins>\n\nTwo <del>text.</del>"), \
        words.group(1)


def test_diff_page_shows_changed_tags_and_extra_keys_as_written(
        client: TestClient, engine_rw: sa.Engine, tmp_path: Path) -> None:
    """The changed-fields table printed Python's values: `['a', 'b']` for the tags and
    `{'k': ['1', '2']}` for an extra key. It shows them as the CLI does: `a, b`, JSON."""
    sid = ingest_versions(engine_rw, tmp_path / "fields", "https://example.org/fields",
                          [f"title: T\ntags: {tags}\nx: {{k: {extra}}}\n"
                           for tags, extra in (("[a, b]", "[1, 2]"), ("b", "[1, 3]"))],
                          ["Text.", "Text."])
    text = get_page(client, f"/statements/{sid}/diff").all_text
    assert "tagsa, bb" in text and 'x{"k": ["1", "2"]}{"k": ["1", "3"]}' in text, text

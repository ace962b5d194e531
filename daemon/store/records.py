"""The reads and writes of statement changes, on a connection inside the caller's transaction.

`ChangeSet` prefetches what a batch of files needs in a few queries, lets the ingest logic
work on that state in memory, and writes the result with one executemany per table: a
revision, its event, the file record, the search row and the outbox rows of every change in
the batch commit together. The decision of what changed is not made here
(`daemon.changes.classify_change`, called from `daemon.ingest`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from daemon.changes import Change, Version
from daemon.diffs import DiffStats, summarize, word_diff
from daemon.store.schema import (
    events,
    files,
    rejected_files,
    revisions,
    statement_urls,
    statements,
)

CHUNK = 500  # IN (...) lists and executemany batches stay well under driver limits


@dataclass(frozen=True)
class FileRecord:
    path: str
    statement_id: int | None
    source_url: str | None
    size: int
    mtime_ns: int
    inode: int
    file_sha256: str


@dataclass
class Head:
    """A statement's newest revision as the batch sees it (updated in memory)."""

    statement_id: int
    source_url: str
    head_revision: int
    deleted: bool
    version: Version
    content_sha256: str
    path: str | None
    first_seen_at: dt.datetime | None = None
    is_new: bool = False
    touched: bool = False
    search_dirty: bool = False
    # the title and text its search entry holds (SQLite's external-content FTS5 index must be
    # given them to remove the entry); None for a statement new in this batch, which has none
    indexed: tuple[str, str] | None = None


@dataclass(frozen=True)
class EventRecord:
    """A committed (or about to be committed) event, as the outbox needs it."""

    event_id: int
    statement_id: int
    kind: str
    changed_fields: tuple[str, ...]
    to_revision: int


@dataclass
class _PendingRevision:
    head: Head
    number: int
    change: Change
    old: Version | None
    new: Version
    content_sha256: str
    path: str | None
    now: dt.datetime


_LOCK_MANY = sa.text("SELECT count(pg_advisory_xact_lock(k)) FROM "
                     "(SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS ks")


_PG_INDEX = sa.text("""
    INSERT INTO statement_search (statement_id, tsv)
    SELECT s.id, setweight(to_tsvector('english', r.title), 'A') ||
                 setweight(to_tsvector('english', r.body_text), 'B')
    FROM statements s JOIN revisions r ON r.statement_id = s.id AND r.number = s.head_revision
    WHERE s.id = ANY(CAST(:ids AS integer[]))
    ON CONFLICT (statement_id) DO UPDATE SET tsv = excluded.tsv""")


# One statement's entry from the beginning of its text only, as far as `chars` characters.
_PG_INDEX_PREFIX = sa.text("""
    INSERT INTO statement_search (statement_id, tsv)
    SELECT s.id, setweight(to_tsvector('english', r.title), 'A') ||
                 setweight(to_tsvector('english', left(r.body_text, :chars)), 'B')
    FROM statements s JOIN revisions r ON r.statement_id = s.id AND r.number = s.head_revision
    WHERE s.id = :id
    ON CONFLICT (statement_id) DO UPDATE SET tsv = excluded.tsv""")

# PostgreSQL's bound on one tsvector (1 MB of lexemes and positions) is SQLSTATE 54000,
# "string is too long for tsvector": an OperationalError, which is not an outage.
_TSVECTOR_TOO_LONG = "54000"
_PREFIX_CHARS = 1_000_000

log = structlog.get_logger(__name__)


def _tsvector_too_long(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _TSVECTOR_TOO_LONG


def _pg_index(conn: Connection, ids: list[int]) -> None:
    """The search entries of these statements. A text whose tsvector passes PostgreSQL's
    limit (hundreds of thousands of distinct words: 5 MB of ordinary English stays far
    below it) made the whole batch fail, and the daemon hold every later change while it
    retried it for ever: such a text is indexed from its beginning as far as fits."""
    try:
        with conn.begin_nested():
            conn.execute(_PG_INDEX, {"ids": ids})
        return
    except sa.exc.DBAPIError as exc:
        if not _tsvector_too_long(exc):
            raise
    for sid in ids:
        chars = 0
        while True:
            try:
                with conn.begin_nested():
                    if chars:
                        conn.execute(_PG_INDEX_PREFIX, {"id": sid, "chars": chars})
                    else:
                        conn.execute(_PG_INDEX, {"ids": [sid]})
                break
            except sa.exc.DBAPIError as exc:
                if not _tsvector_too_long(exc) or chars == 1:
                    raise
                chars = chars // 2 if chars else _PREFIX_CHARS
        if chars:
            log.warning("search_index_truncated", statement_id=sid, chars=chars,
                        detail="its words are too many for one PostgreSQL tsvector: "
                               "search finds those of its beginning only")


def _url_key(url: str) -> int:
    return zlib.crc32(url.encode()) - (1 << 31)


def lock_urls(conn: Connection, urls: Iterable[str]) -> None:
    """Lock several URLs in one round trip, in key order, so that two instances never
    wait on each other in a cycle (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        keys = sorted({_url_key(u) for u in urls})
        if keys:
            conn.execute(_LOCK_MANY, {"keys": keys})


def version_from_row(r: Any) -> Version:
    extra = r.extra if isinstance(r.extra, str) else json.dumps(
        r.extra, sort_keys=True, ensure_ascii=False)
    return Version(r.source_url, r.title, r.date, r.published_time, r.modified_time,
                   tuple(r.tags), extra, r.body, r.body_text)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def leaving_statements(conn: Connection, gone: list[str]) -> dict[tuple[str, str], int]:
    """The live statements every file of which is among the `gone` paths, by the words of
    their head (title_key, body_key); words that two of them share are left out (which one
    a new file would be is unknowable). A pass that meets a new file with a new URL and
    these words has met one of them moved and re-addressed (SPEC §3)."""
    in_gone: dict[int, int] = {}
    for chunk in _chunks(gone):
        for sid, n in conn.execute(sa.select(files.c.statement_id, sa.func.count()).where(
                files.c.path.in_(chunk), files.c.statement_id.is_not(None))
                .group_by(files.c.statement_id)):
            in_gone[sid] = in_gone.get(sid, 0) + n
    leaving = []
    for chunk in _chunks(sorted(in_gone)):
        leaving += [sid for sid, n in conn.execute(
            sa.select(files.c.statement_id, sa.func.count()).where(
                files.c.statement_id.in_(chunk)).group_by(files.c.statement_id))
            if n == in_gone[sid]]
    found: dict[tuple[str, str], int | None] = {}
    for chunk in _chunks(leaving):
        for r in conn.execute(sa.select(revisions).join(statements, sa.and_(
                statements.c.id == revisions.c.statement_id,
                statements.c.head_revision == revisions.c.number)).where(
                statements.c.id.in_(chunk), statements.c.deleted_at.is_(None))):
            version = version_from_row(r)
            key = (version.title_key, version.body_key)
            found[key] = None if key in found else r.statement_id
    return {key: sid for key, sid in found.items() if sid is not None}


@dataclass
class ChangeSet:
    """The state and the pending writes of one batch of statement changes."""

    conn: Connection
    files: dict[str, FileRecord | None] = field(default_factory=dict)
    urls: dict[str, int | None] = field(default_factory=dict)
    heads: dict[int, Head] = field(default_factory=dict)
    file_counts: dict[int, int] = field(default_factory=dict)
    _file_writes: dict[str, tuple[FileRecord | None, dt.datetime]] = field(default_factory=dict)
    _new_urls: list[tuple[str, int]] = field(default_factory=list)
    _revisions: list[_PendingRevision] = field(default_factory=list)
    _cleared: set[str] = field(default_factory=set)
    _next_temp: int = -1

    # ---- prefetch ---------------------------------------------------------------------

    def prefetch(self, paths: Iterable[str], urls: Iterable[str]) -> None:
        """Load the file rows, URL owners, heads and file counts a batch will look at."""
        path_list = [p for p in dict.fromkeys(paths) if p not in self.files]
        url_list = sorted(u for u in dict.fromkeys(urls) if u not in self.urls)
        lock_urls(self.conn, url_list)
        for chunk in _chunks(path_list):
            found = {r.path: r for r in self.conn.execute(
                sa.select(files).where(files.c.path.in_(chunk)))}
            for p in chunk:
                r = found.get(p)
                self.files[p] = None if r is None else FileRecord(
                    r.path, r.statement_id, r.source_url, r.size, r.mtime_ns, r.inode,
                    r.file_sha256)
        for chunk in _chunks(url_list):
            found_urls = dict(self.conn.execute(
                sa.select(statement_urls.c.url, statement_urls.c.statement_id)
                .where(statement_urls.c.url.in_(chunk))).all())
            for u in chunk:
                self.urls[u] = found_urls.get(u)
        sids = {s for s in self.urls.values() if s is not None}
        sids |= {f.statement_id for f in self.files.values() if f and f.statement_id}
        self._load_heads(sorted(s for s in sids if s not in self.heads))

    def _load_heads(self, sids: list[int]) -> None:
        for chunk in _chunks(sids):
            locked = sa.select(statements).where(statements.c.id.in_(chunk)) \
                .order_by(statements.c.id).with_for_update()
            srows = {s.id: s for s in self.conn.execute(locked)}
            rrows = self.conn.execute(sa.select(revisions).join(
                statements, sa.and_(statements.c.id == revisions.c.statement_id,
                                    statements.c.head_revision == revisions.c.number))
                .where(statements.c.id.in_(chunk)))
            for r in rrows:
                s = srows[r.statement_id]
                version = version_from_row(r)
                # the search entry holds the head revision's words: every change of them is
                # indexed in the transaction that makes it head (`_write_search`)
                self.heads[s.id] = Head(s.id, s.source_url, s.head_revision,
                                        s.deleted_at is not None, version,
                                        r.content_sha256, r.path, s.first_seen_at,
                                        indexed=(version.title, version.body_text))
            counts = dict(self.conn.execute(
                sa.select(files.c.statement_id, sa.func.count()).where(
                    files.c.statement_id.in_(chunk)).group_by(files.c.statement_id)).all())
            for sid in chunk:
                self.file_counts[sid] = counts.get(sid, 0)

    # ---- the in-memory operations the ingest logic uses -------------------------------

    def head(self, statement_id: int) -> Head:
        if statement_id not in self.heads:
            self._load_heads([statement_id])
        return self.heads[statement_id]

    def statement_for_url(self, url: str) -> int | None:
        if url not in self.urls:
            self.prefetch((), [url])
        return self.urls[url]

    def file(self, path: str) -> FileRecord | None:
        if path not in self.files:
            self.prefetch([path], ())
        return self.files[path]

    def moved_file(self, statement_id: int, mtime_ns: int, sha: str) -> bool:
        """Whether a file of this statement with these bytes and this modification time
        has left its path: a new path holding them is that file renamed or moved, not a
        file written (SPEC §3). Asked only of a new path whose text differs from the
        statement's current one (an older of several files carrying one URL)."""
        for path in self.conn.execute(sa.select(files.c.path).where(
                files.c.statement_id == statement_id, files.c.mtime_ns == mtime_ns,
                files.c.file_sha256 == sha)).scalars():
            if self.files.get(path, True) is None or not os.path.lexists(path):
                return True
        return False

    def put_file(self, rec: FileRecord, now: dt.datetime) -> None:
        old = self.files.get(path := rec.path)
        if old is not None and old.statement_id:
            self.file_counts[old.statement_id] = self.file_counts.get(old.statement_id, 1) - 1
        if rec.statement_id:
            self.file_counts[rec.statement_id] = self.file_counts.get(rec.statement_id, 0) + 1
        self.files[path] = rec
        self._file_writes[path] = (rec, now)

    def drop_file(self, path: str, now: dt.datetime) -> None:
        old = self.files.get(path)
        if old is not None and old.statement_id:
            self.file_counts[old.statement_id] = self.file_counts.get(old.statement_id, 1) - 1
        self.files[path] = None
        self._file_writes[path] = (None, now)

    def clear_rejection(self, path: str) -> None:
        self._cleared.add(path)

    def record_rejection(self, path: str, reason: str, detail: str,
                         stat: tuple[int, int, int] | None, sha: str | None,
                         now: dt.datetime) -> None:
        self._cleared.discard(path)
        size, mtime_ns, inode = stat if stat else (None, None, None)
        values = dict(reason=reason, detail=detail, size=size, mtime_ns=mtime_ns, inode=inode,
                      file_sha256=sha, last_seen_at=now)
        updated = self.conn.execute(rejected_files.update().where(
            rejected_files.c.path == path).values(**values))
        if updated.rowcount == 0:
            self.conn.execute(rejected_files.insert().values(path=path, first_seen_at=now,
                                                             **values))

    def new_statement(self, url: str, version: Version, sha: str, path: str,
                      now: dt.datetime) -> Head:
        sid = self._next_temp
        self._next_temp -= 1
        head = Head(sid, url, 0, False, version, sha, path, now, is_new=True)
        self.heads[sid] = head
        self.urls[url] = sid
        self.file_counts[sid] = 0
        self._new_urls.append((url, sid))
        return head

    def add_alias(self, statement_id: int, url: str) -> None:
        """Point `url` at the statement and make it the statement's current URL."""
        if self.urls.get(url) is None:
            self._new_urls.append((url, statement_id))
        self.urls[url] = statement_id
        head = self.heads[statement_id]
        head.source_url = url
        head.touched = True

    def add_revision(self, head: Head, change: Change, new: Version, sha: str,
                     path: str | None, now: dt.datetime) -> None:
        old = None if head.head_revision == 0 else head.version
        number = head.head_revision + 1
        self._revisions.append(_PendingRevision(head, number, change, old, new, sha, path, now))
        if change.kind != "deleted" and (
                old is None or old.title != new.title or old.body_text != new.body_text):
            head.search_dirty = True
        head.head_revision = number
        head.deleted = change.kind == "deleted"
        head.version = new
        head.content_sha256 = sha
        head.path = path
        head.touched = True

    # ---- writing ----------------------------------------------------------------------

    def flush(self) -> list[EventRecord]:
        """Write everything the batch decided; return its events in order."""
        conn = self.conn
        temp_to_real = self._insert_new_statements()

        def real(sid: int) -> int:
            return temp_to_real.get(sid, sid)

        if self._new_urls:
            insert_many(conn, statement_urls, [{"url": u, "statement_id": real(s)}
                                                for u, s in self._new_urls])
        event_records = self._insert_revisions_and_events(real)
        touched = [h for h in self.heads.values() if h.touched and not h.is_new]
        if touched:
            last = {p.head.statement_id: p.now for p in self._revisions}
            conn.execute(
                statements.update().where(statements.c.id == sa.bindparam("b_id")).values(
                    source_url=sa.bindparam("b_url"), head_revision=sa.bindparam("b_head"),
                    deleted_at=sa.bindparam("b_deleted"),
                    last_changed_at=sa.func.coalesce(sa.bindparam("b_last", type_=
                                                                  statements.c.last_changed_at.type),
                                                     statements.c.last_changed_at)),
                [{"b_id": h.statement_id, "b_url": h.source_url, "b_head": h.head_revision,
                  "b_deleted": last.get(h.statement_id) if h.deleted else None,
                  "b_last": last.get(h.statement_id)} for h in touched])
        self._write_search(real)
        self._write_files(real)
        if self._cleared:
            conn.execute(rejected_files.delete().where(
                rejected_files.c.path == sa.bindparam("b_path")),
                [{"b_path": p} for p in self._cleared])
        return event_records

    def _insert_new_statements(self) -> dict[int, int]:
        new = [h for h in self.heads.values() if h.is_new]
        if not new:
            return {}
        last = {p.head.statement_id: p.now for p in self._revisions}
        rows = [dict(source_url=h.source_url, head_revision=h.head_revision,
                     first_seen_at=h.first_seen_at, last_changed_at=last[h.statement_id],
                     deleted_at=last[h.statement_id] if h.deleted else None) for h in new]
        ids = _insert_with_ids(self.conn, statements, rows)
        mapping = {h.statement_id: int(i) for h, i in zip(new, ids, strict=True)}
        for h in new:
            h.statement_id = mapping[h.statement_id]
            h.is_new = False
            h.touched = False
        self.heads = {h.statement_id: h for h in self.heads.values()}
        self.urls = {u: mapping.get(s, s) if s is not None else None for u, s in self.urls.items()}
        self.file_counts = {mapping.get(s, s): c for s, c in self.file_counts.items()}
        self.files = {p: (f if f is None or f.statement_id not in mapping else FileRecord(
            f.path, mapping[f.statement_id], *_rest(f))) for p, f in self.files.items()}
        return mapping

    def _insert_revisions_and_events(self, real: Any) -> list[EventRecord]:
        if not self._revisions:
            return []
        rev_rows = []
        event_rows = []
        for p in self._revisions:
            sid = real(p.head.statement_id)
            fields = list(p.change.changed_fields)
            new = p.new
            rev_rows.append(dict(
                statement_id=sid, number=p.number, kind=p.change.kind, changed_fields=fields,
                source_url=new.source_url, title=new.title, date=new.date,
                published_time=new.published_time, modified_time=new.modified_time,
                tags=list(new.tags), extra=json.loads(new.extra), body=new.body,
                body_text=new.body_text, content_sha256=p.content_sha256, path=p.path,
                observed_at=p.now))
            stats: DiffStats | None = None
            if p.old is not None and p.change.kind in ("revised", "restored"):
                _ops, stats = word_diff(p.old.title, p.old.body_text, new.title, new.body_text)
            words = new.word_count
            event_rows.append(dict(
                statement_id=sid, kind=p.change.kind, occurred_at=p.now,
                from_revision=p.number - 1 if p.number > 1 else None, to_revision=p.number,
                changed_fields=fields,
                summary=summarize(p.change.kind, p.change.changed_fields, stats, words),
                words_added=stats.words_added if stats else (
                    words if p.change.kind == "added" else 0),
                words_removed=stats.words_removed if stats else 0))
        rev_ids = _insert_with_ids(self.conn, revisions, rev_rows)
        for row, rid in zip(event_rows, rev_ids, strict=True):
            row["revision_id"] = int(rid)
        event_ids = _insert_with_ids(self.conn, events, event_rows)
        return [EventRecord(int(eid), row["statement_id"], row["kind"],
                            tuple(row["changed_fields"]), row["to_revision"])
                for row, eid in zip(event_rows, event_ids, strict=True)]

    def _write_search(self, real: Any) -> None:
        """Index the current title and text of each statement whose words changed."""
        dirty = [h for h in self.heads.values() if h.search_dirty]
        if not dirty:
            return
        if self.conn.dialect.name == "sqlite":
            replaced = [("delete", real(h.statement_id), *h.indexed) for h in dirty
                        if h.indexed is not None]
            if replaced:
                self.conn.exec_driver_sql(
                    "INSERT INTO statement_search(statement_search, rowid, title, body_text) "
                    "VALUES (?, ?, ?, ?)", replaced)
            self.conn.exec_driver_sql(
                "INSERT INTO statement_search(rowid, title, body_text) VALUES (?, ?, ?)",
                [(real(h.statement_id), h.version.title, h.version.body_text) for h in dirty])
        else:  # the server reads the words from the head revision just written
            _pg_index(self.conn, [real(h.statement_id) for h in dirty])
        for h in dirty:
            h.indexed = (h.version.title, h.version.body_text)
            h.search_dirty = False

    def _write_files(self, real: Any) -> None:
        if not self._file_writes:
            return
        existing = set(self.conn.execute(sa.select(files.c.path).where(
            files.c.path.in_(list(self._file_writes)))).scalars()) if len(
            self._file_writes) <= CHUNK else None
        deletes, updates, inserts = [], [], []
        for path, (rec, now) in self._file_writes.items():
            if rec is None:
                deletes.append({"b_path": path})
                continue
            values = dict(statement_id=real(rec.statement_id) if rec.statement_id else None,
                          source_url=rec.source_url, size=rec.size, mtime_ns=rec.mtime_ns,
                          inode=rec.inode, file_sha256=rec.file_sha256, seen_at=now)
            if existing is None:
                deletes.append({"b_path": path})
                inserts.append(dict(path=path, **values))
            elif path in existing:
                updates.append({"b_path": path, **{f"b_{k}": v for k, v in values.items()}})
            else:
                inserts.append(dict(path=path, **values))
        if deletes:
            self.conn.execute(files.delete().where(files.c.path == sa.bindparam("b_path")),
                              deletes)
        if updates:
            self.conn.execute(files.update().where(files.c.path == sa.bindparam("b_path"))
                              .values({k: sa.bindparam(f"b_{k}") for k in (
                                  "statement_id", "source_url", "size", "mtime_ns", "inode",
                                  "file_sha256", "seen_at")}), updates)
        insert_many(self.conn, files, inserts)


def _insert_with_ids(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows and return their new ids, in order.

    SQLite: this transaction holds the one write lock (BEGIN IMMEDIATE), so the ids are the
    ones SQLite would pick itself, max(id) + 1 onwards. PostgreSQL: the ids are taken from
    the table's sequence in one query (safe beside other instances), then the rows are
    copied. Either way the rows go in one bulk statement, insert_many."""
    if not rows:
        return []
    if conn.dialect.name == "sqlite":
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))
                             ).scalar_one() + 1
        ids = list(range(first, first + len(rows)))
    else:
        ids = sorted(conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%(table)s, 'id')) "
            "FROM generate_series(1, %(n)s)", {"table": table.name, "n": len(rows)}).scalars())
    for row, new_id in zip(rows, ids, strict=True):
        row["id"] = new_id
    insert_many(conn, table, rows)
    return ids


def insert_many(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows that all have the same keys, in one bulk statement.

    The columns' own bind processing (the same functions SQLAlchemy would call) is applied
    here and the rows go to the driver as tuples: SQLite in one executemany (SQLAlchemy's
    generic per-row parameter handling was about a sixth of the writer's time in a large
    ingest), PostgreSQL in one binary COPY (SQLAlchemy's multi-row INSERT ... VALUES had psycopg
    parse every statement of thousands of placeholders anew: a third of the writer's time)."""
    if not rows:
        return
    columns, processors = _insert_plan(table, tuple(rows[0]), conn.dialect)
    tuples = [tuple(row[name] if proc is None else proc(row[name]) for name, proc in processors)
              for row in rows]
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"INSERT INTO {columns} VALUES "
                             f"({', '.join('?' for _ in processors)})", tuples)
        return
    sql = f"COPY {columns} FROM STDIN (FORMAT BINARY)"
    driver = conn.connection.driver_connection
    assert driver is not None
    oids = _column_oids(conn, table.name)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cur, cur.copy(sql) as copy:
            # binary: the statements' texts go as they are, not escaped and parsed again
            copy.set_types([oids[name] for name, _proc in processors])
            for values in tuples:
                copy.write_row(values)
    except dbapi_error as exc:
        # The driver's own error, as SQLAlchemy would have raised it for a statement
        # (OperationalError, IntegrityError, ... with connection_invalidated): callers
        # retry conflicts and outages by those, and must not see a bare psycopg error.
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:  # as SQLAlchemy does: the pool drops it, and no rollback is tried on it
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(sql, None, exc, dbapi_error,
                                         connection_invalidated=lost) from exc


def _column_oids(conn: Connection, table: str) -> dict[str, int]:
    """PostgreSQL: the type of each of `table`'s columns, asked once per connection."""
    cache: dict[str, dict[str, int]] = conn.connection.info.setdefault("redline_oids", {})
    if table not in cache:
        cache[table] = dict(conn.exec_driver_sql(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %(t)s::regclass "
            "AND attnum > 0 AND NOT attisdropped", {"t": table}).all())
    return cache[table]


@functools.lru_cache(maxsize=64)
def _insert_plan(table: sa.Table, names: tuple[str, ...], dialect: sa.Dialect,
                 ) -> tuple[str, list[tuple[str, Any]]]:
    """'table (col, ...)' quoted for the dialect, and each column's bind processor."""
    quote = dialect.identifier_preparer.quote
    columns = f"{quote(table.name)} ({', '.join(quote(n) for n in names)})"
    processors = [(n, table.c[n].type.dialect_impl(dialect).bind_processor(dialect))
                  for n in names]
    return columns, processors


def _rest(f: FileRecord) -> tuple[Any, ...]:
    return (f.source_url, f.size, f.mtime_ns, f.inode, f.file_sha256)

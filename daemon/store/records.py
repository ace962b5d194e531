"""The reads and writes of one statement change, on a connection inside its transaction.

Every function takes the caller's connection: the caller owns the transaction, so a
revision, its event, the file record, the search row and the outbox rows commit together.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
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


@dataclass(frozen=True)
class FileRecord:
    path: str
    statement_id: int | None
    source_url: str | None
    size: int
    mtime_ns: int
    inode: int
    file_sha256: str


@dataclass(frozen=True)
class StatementHead:
    statement_id: int
    source_url: str
    head_revision: int
    deleted: bool
    version: Version
    content_sha256: str
    path: str | None


@dataclass(frozen=True)
class EventRecord:
    """A committed (or about to be committed) event, as the outbox needs it."""

    event_id: int
    statement_id: int
    kind: str
    changed_fields: tuple[str, ...]
    to_revision: int


def lock_url(conn: Connection, url: str) -> None:
    """Serialize work on one URL across instances (PostgreSQL); SQLite has one writer."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": zlib.crc32(url.encode()) - (1 << 31)})


def get_file(conn: Connection, path: str) -> FileRecord | None:
    row = conn.execute(sa.select(files).where(files.c.path == path)).first()
    if row is None:
        return None
    return FileRecord(row.path, row.statement_id, row.source_url, row.size, row.mtime_ns,
                      row.inode, row.file_sha256)


def upsert_file(conn: Connection, rec: FileRecord, now: dt.datetime) -> None:
    values = dict(statement_id=rec.statement_id, source_url=rec.source_url, size=rec.size,
                  mtime_ns=rec.mtime_ns, inode=rec.inode, file_sha256=rec.file_sha256,
                  seen_at=now)
    updated = conn.execute(files.update().where(files.c.path == rec.path).values(**values))
    if updated.rowcount == 0:
        conn.execute(files.insert().values(path=rec.path, **values))


def delete_file(conn: Connection, path: str) -> None:
    conn.execute(files.delete().where(files.c.path == path))


def count_files(conn: Connection, statement_id: int) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(files)
                        .where(files.c.statement_id == statement_id)).scalar_one()


def record_rejection(conn: Connection, path: str, reason: str, detail: str,
                     stat: tuple[int, int, int] | None, sha: str | None, now: dt.datetime) -> None:
    size, mtime_ns, inode = stat if stat else (None, None, None)
    values = dict(reason=reason, detail=detail, size=size, mtime_ns=mtime_ns, inode=inode,
                  file_sha256=sha, last_seen_at=now)
    updated = conn.execute(rejected_files.update().where(rejected_files.c.path == path)
                           .values(**values))
    if updated.rowcount == 0:
        conn.execute(rejected_files.insert().values(path=path, first_seen_at=now, **values))


def clear_rejection(conn: Connection, path: str) -> None:
    conn.execute(rejected_files.delete().where(rejected_files.c.path == path))


def statement_for_url(conn: Connection, url: str) -> int | None:
    return conn.execute(sa.select(statement_urls.c.statement_id)
                        .where(statement_urls.c.url == url)).scalar()


def load_head(conn: Connection, statement_id: int) -> StatementHead:
    """The statement's newest revision, locked against concurrent writers on PostgreSQL."""
    s = conn.execute(sa.select(statements).where(statements.c.id == statement_id)
                     .with_for_update()).one()
    r = conn.execute(sa.select(revisions).where(revisions.c.statement_id == statement_id,
                                                revisions.c.number == s.head_revision)).one()
    return StatementHead(s.id, s.source_url, s.head_revision, s.deleted_at is not None,
                         version_from_row(r), r.content_sha256, r.path)


def version_from_row(r: Any) -> Version:
    extra = r.extra if isinstance(r.extra, str) else json.dumps(
        r.extra, sort_keys=True, ensure_ascii=False)
    return Version(r.source_url, r.title, r.date, r.published_time, r.modified_time,
                   tuple(r.tags), extra, r.body, r.body_text)


def create_statement(conn: Connection, url: str, now: dt.datetime) -> int:
    sid = conn.execute(statements.insert().values(
        source_url=url, head_revision=0, first_seen_at=now, last_changed_at=now)
    ).inserted_primary_key[0]
    conn.execute(statement_urls.insert().values(url=url, statement_id=sid))
    return int(sid)


def add_url_alias(conn: Connection, statement_id: int, url: str) -> None:
    """Point `url` at the statement and make it the statement's current URL."""
    existing = statement_for_url(conn, url)
    if existing is None:
        conn.execute(statement_urls.insert().values(url=url, statement_id=statement_id))
    conn.execute(statements.update().where(statements.c.id == statement_id)
                 .values(source_url=url))


def add_revision(conn: Connection, *, statement_id: int, number: int, change: Change,
                 old: Version | None, new: Version, content_sha256: str, path: str | None,
                 now: dt.datetime) -> EventRecord:
    """Insert revision `number` and its event, move the statement's head, refresh search."""
    fields = list(change.changed_fields)
    rev_id = conn.execute(revisions.insert().values(
        statement_id=statement_id, number=number, kind=change.kind, changed_fields=fields,
        source_url=new.source_url, title=new.title, date=new.date,
        published_time=new.published_time, modified_time=new.modified_time,
        tags=list(new.tags), extra=_json(new.extra), body=new.body, body_text=new.body_text,
        content_sha256=content_sha256, path=path, observed_at=now,
    )).inserted_primary_key[0]
    stats: DiffStats | None = None
    if old is not None and change.kind in ("revised", "restored"):
        _ops, stats = word_diff(old.title, old.body_text, new.title, new.body_text)
    words = len(new.body_text.split()) + len(new.title.split())
    summary = summarize(change.kind, change.changed_fields, stats, words)
    added = stats.words_added if stats else (words if change.kind == "added" else 0)
    removed = stats.words_removed if stats else 0
    event_id = conn.execute(events.insert().values(
        revision_id=rev_id, statement_id=statement_id, kind=change.kind, occurred_at=now,
        from_revision=number - 1 if number > 1 else None, to_revision=number,
        changed_fields=fields, summary=summary, words_added=added, words_removed=removed,
    )).inserted_primary_key[0]
    conn.execute(statements.update().where(statements.c.id == statement_id).values(
        head_revision=number, last_changed_at=now,
        deleted_at=now if change.kind == "deleted" else None))
    if change.kind != "deleted" and (
            old is None or old.title != new.title or old.body_text != new.body_text):
        update_search(conn, statement_id, new.title, new.body_text, replace=old is not None)
    return EventRecord(int(event_id), statement_id, change.kind, tuple(fields), number)


def update_search(conn: Connection, statement_id: int, title: str, body_text: str,
                  replace: bool) -> None:
    """Keep the full-text index (FTS5 / tsvector) on each statement's newest text."""
    if conn.dialect.name == "sqlite":
        if replace:
            conn.execute(sa.text("DELETE FROM statement_search WHERE rowid = :id"),
                         {"id": statement_id})
        conn.execute(sa.text("INSERT INTO statement_search(rowid, title, body_text) "
                             "VALUES (:id, :title, :body)"),
                     {"id": statement_id, "title": title, "body": body_text})
    else:
        conn.execute(sa.text(
            "INSERT INTO statement_search(statement_id, title, body_text) "
            "VALUES (:id, :title, :body) ON CONFLICT (statement_id) DO UPDATE "
            "SET title = excluded.title, body_text = excluded.body_text"),
            {"id": statement_id, "title": title, "body": body_text})


def _json(text: str) -> Any:
    return json.loads(text)

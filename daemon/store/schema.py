"""The tables behind the SQL views (SQLAlchemy Core). The migrations in `migrations/` create
them; this module is what the code queries. The views of SPEC §4 are the stable interface.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python; naive UTC text on SQLite, timestamptz on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class _JSON(sa.TypeDecorator[Any]):
    """JSON on SQLite, jsonb on PostgreSQL. The PostgreSQL dialect is imported only when a
    PostgreSQL database is used: a SQLite command need not load it (30 ms of start-up)."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


JSONType = _JSON()


def lz4_available(conn: sa.Connection) -> bool:
    """PostgreSQL built with lz4 TOAST compression (migrations 0002, 0003); False elsewhere."""
    if conn.dialect.name != "postgresql":
        return False
    values = conn.execute(sa.text(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")).scalar()
    return bool(values) and "lz4" in values


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

statements = sa.Table(
    "statements", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_url", sa.Text, nullable=False, unique=True),
    sa.Column("head_revision", sa.Integer, nullable=False),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_changed_at", UTCDateTime, nullable=False),
    sa.Column("deleted_at", UTCDateTime),
)

statement_urls = sa.Table(
    "statement_urls", metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), nullable=False,
              index=True),
)

revisions = sa.Table(
    "revisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("changed_fields", JSONType, nullable=False),
    sa.Column("source_url", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("date", sa.Date),
    sa.Column("published_time", UTCDateTime),
    sa.Column("modified_time", UTCDateTime),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("extra", JSONType, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("body_text", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.Text),
    sa.Column("observed_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("statement_id", "number"),
)

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), nullable=False,
              unique=True),
    sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), nullable=False,
              index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False, index=True),
    sa.Column("from_revision", sa.Integer),
    sa.Column("to_revision", sa.Integer, nullable=False),
    sa.Column("changed_fields", JSONType, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("words_added", sa.Integer, nullable=False),
    sa.Column("words_removed", sa.Integer, nullable=False),
)

files = sa.Table(
    "files", metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), index=True),
    sa.Column("source_url", sa.Text),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("inode", sa.BigInteger, nullable=False),
    sa.Column("file_sha256", sa.String(64), nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)

rejected_files = sa.Table(
    "rejected_files", metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("mtime_ns", sa.BigInteger),
    sa.Column("inode", sa.BigInteger),
    sa.Column("file_sha256", sa.String(64)),
    sa.Column("first_seen_at", UTCDateTime, nullable=False),
    sa.Column("last_seen_at", UTCDateTime, nullable=False),
)

deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False),
    sa.Column("channel", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("delivered_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_until", UTCDateTime),
    sa.UniqueConstraint("event_id", "channel"),
    sa.Index("ix_deliveries_status_next", "status", "next_attempt_at"),
)

job_state = sa.Table(
    "job_state", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

heartbeats = sa.Table(
    "heartbeats", metadata,
    sa.Column("instance", sa.String(200), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    sa.Column("watching", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
)

VIEW_NAMES = ("current_statements", "statement_revisions", "change_log", "ingest_errors",
              "delivery_status")

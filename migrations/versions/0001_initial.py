"""The initial schema: statements, revisions, events, files, rejections, deliveries, views,
full-text search (FTS5 on SQLite, a tsvector with a GIN index on PostgreSQL).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from daemon.store.schema import JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

VIEWS = {
    "current_statements": """
        SELECT s.id AS statement_id, s.source_url, r.title, r.date, r.published_time,
               r.modified_time, r.tags, r.body, r.body_text, r.number AS revision_number,
               s.head_revision AS revision_count, s.first_seen_at, s.last_changed_at,
               s.deleted_at
        FROM statements s JOIN revisions r
             ON r.statement_id = s.id AND r.number = s.head_revision""",
    "statement_revisions": """
        SELECT r.statement_id, r.source_url, r.number AS revision_number, r.kind,
               r.changed_fields, r.title, r.date, r.published_time, r.modified_time, r.tags,
               r.body, r.body_text, r.content_sha256, r.path, r.observed_at
        FROM revisions r""",
    "change_log": """
        SELECT e.id AS event_id, e.occurred_at, e.kind, e.statement_id, r.source_url, r.title,
               e.from_revision, e.to_revision, e.changed_fields, e.summary, e.words_added,
               e.words_removed
        FROM events e JOIN revisions r ON r.id = e.revision_id""",
    "ingest_errors": """
        SELECT path, reason, detail, first_seen_at, last_seen_at FROM rejected_files""",
    "delivery_status": """
        SELECT event_id, channel, status, attempts, last_error, next_attempt_at, delivered_at
        FROM deliveries""",
}


def upgrade() -> None:
    op.create_table(
        "statements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_url", sa.Text, nullable=False),
        sa.Column("head_revision", sa.Integer, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_changed_at", UTCDateTime, nullable=False),
        sa.Column("deleted_at", UTCDateTime),
        sa.UniqueConstraint("source_url", name="uq_statements_source_url"),
    )
    op.create_table(
        "statement_urls",
        sa.Column("url", sa.Text, primary_key=True),
        sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), nullable=False),
    )
    op.create_index("ix_statement_urls_statement_id", "statement_urls", ["statement_id"])
    op.create_table(
        "revisions",
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
        sa.UniqueConstraint("statement_id", "number", name="uq_revisions_statement_id"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision_id", sa.Integer, sa.ForeignKey("revisions.id"), nullable=False),
        sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("from_revision", sa.Integer),
        sa.Column("to_revision", sa.Integer, nullable=False),
        sa.Column("changed_fields", JSONType, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("words_added", sa.Integer, nullable=False),
        sa.Column("words_removed", sa.Integer, nullable=False),
        sa.UniqueConstraint("revision_id", name="uq_events_revision_id"),
    )
    op.create_index("ix_events_statement_id", "events", ["statement_id"])
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_table(
        "files",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("statement_id", sa.Integer, sa.ForeignKey("statements.id")),
        sa.Column("source_url", sa.Text),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("inode", sa.BigInteger, nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_files_statement_id", "files", ["statement_id"])
    op.create_table(
        "rejected_files",
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
    op.create_table(
        "deliveries",
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
        sa.UniqueConstraint("event_id", "channel", name="uq_deliveries_event_id"),
    )
    op.create_index("ix_deliveries_status_next", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "job_state",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "heartbeats",
        sa.Column("instance", sa.String(200), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
        sa.Column("watching", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE TABLE statement_search (
                statement_id integer PRIMARY KEY REFERENCES statements(id),
                title text NOT NULL,
                body_text text NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', title), 'A') ||
                    setweight(to_tsvector('english', body_text), 'B')) STORED
            )""")
        op.execute("CREATE INDEX ix_statement_search_tsv ON statement_search USING GIN (tsv)")
    else:
        op.execute("CREATE VIRTUAL TABLE statement_search USING fts5("
                   "title, body_text, tokenize = 'unicode61 remove_diacritics 2')")
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS statement_search")
    for table in ("heartbeats", "job_state", "deliveries", "rejected_files", "files", "events",
                  "revisions", "statement_urls", "statements"):
        op.drop_table(table)

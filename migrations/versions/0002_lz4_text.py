"""PostgreSQL: the large text columns compress with lz4 instead of pglz.

Every revision stores its Markdown and its plain text, and the search table its text and
tsvector; pglz compressing them cost about a sixth of PostgreSQL ingest time
(bench/postgres.py). lz4 needs a server built with it (PostgreSQL 14+, as Debian's and the
official images are); elsewhere, and on SQLite, this migration changes nothing. Values
already stored keep their compression; new ones use lz4.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

from daemon.store.schema import lz4_available

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = {
    "revisions": ("body", "body_text"),
    "statement_search": ("body_text", "tsv"),
}


def _set_compression(method: str) -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    if lz4_available(op.get_bind()):
        _set_compression("lz4")


def downgrade() -> None:
    if lz4_available(op.get_bind()):
        _set_compression("default")

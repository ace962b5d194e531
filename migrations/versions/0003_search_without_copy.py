"""The search index keeps no second copy of the statements' text.

Each current statement's title and plain text are stored in its revision already; the
search table stored them again (a quarter of a SQLite database: 73 of 281 MB for 13,000
statements; on PostgreSQL a second TOASTed copy, sent over the wire a second time).

SQLite: FTS5 becomes an external-content index over the `current_statements` view (the
index holds the words; snippets read the text from the view). It must then be told the old
title and text when a statement's entry is replaced: the writer keeps what it indexed
(daemon.store.records). PostgreSQL: `statement_search` keeps only the tsvector, computed
from the head revision by the server when the entry is written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

from daemon.store.schema import lz4_available

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FTS5_OPTIONS = "title, body_text, tokenize = 'unicode61 remove_diacritics 2'"


def _rebuild_fts5(options: str) -> None:
    op.execute("DROP TABLE statement_search")
    op.execute(f"CREATE VIRTUAL TABLE statement_search USING fts5({options})")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE statement_search ALTER COLUMN tsv DROP EXPRESSION")
        op.execute("ALTER TABLE statement_search DROP COLUMN title, DROP COLUMN body_text, "
                   "ALTER COLUMN tsv SET NOT NULL")
        return
    _rebuild_fts5(f"{FTS5_OPTIONS}, content = 'current_statements', "
                  "content_rowid = 'statement_id'")
    op.execute("INSERT INTO statement_search(statement_search) VALUES ('rebuild')")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE statement_search ADD COLUMN title text, "
                   "ADD COLUMN body_text text")
        op.execute("UPDATE statement_search s SET title = c.title, body_text = c.body_text "
                   "FROM current_statements c WHERE c.statement_id = s.statement_id")
        op.execute("ALTER TABLE statement_search ALTER COLUMN title SET NOT NULL, "
                   "ALTER COLUMN body_text SET NOT NULL, DROP COLUMN tsv")
        op.execute("""
            ALTER TABLE statement_search ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', title), 'A') ||
                setweight(to_tsvector('english', body_text), 'B')) STORED""")
        op.execute("CREATE INDEX ix_statement_search_tsv ON statement_search USING GIN (tsv)")
        if lz4_available(bind):  # as 0002 left them
            for column in ("body_text", "tsv"):
                op.execute(f"ALTER TABLE statement_search ALTER COLUMN {column} "
                           "SET COMPRESSION lz4")
        return
    _rebuild_fts5(FTS5_OPTIONS)
    op.execute("INSERT INTO statement_search(rowid, title, body_text) "
               "SELECT statement_id, title, body_text FROM current_statements")

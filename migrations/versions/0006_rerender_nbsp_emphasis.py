"""Re-render the stored text of every revision in which a no-break space kept emphasis.

pandoc writes <strong>IBM&nbsp;</strong>announced as `**IBM\xa0**announced` and reads it
back as bold; so does the site. The renderer (CommonMark) took the no-break space for white
space, next to which `**` cannot close, and stored "**IBM **announced": asterisks no reader
sees (217 of the 2,353 files of the shared corpus, current and revisions, rendered
differently; only asterisks and the spaces next to them differ). A new version of such a
statement that writes the space as `&nbsp;` or moves it out of the bold would read as
`revised` against that stored head. As 0005 did, this migration renders `body` again with
the current renderer (daemon.text.markdown_to_text) and stores the result where it differs
from `body_text`, for every revision, a chunk at a time, and brings the search entry of each
statement whose head revision changed up to date (SQLite's external-content FTS5 index is
told the old title and text to delete, then the new ones; PostgreSQL's tsvector is
computed again from the head revision).

Events keep their summaries and word counts as recorded. The downgrade changes nothing: the
old text was wrong, and the schema is the same (README, "Upgrade").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from daemon.text import markdown_to_text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 500  # revisions read at a time: bodies average about 10 KB, the largest 160 KB

_READ = sa.text("""
    SELECT r.id, r.statement_id, r.title, r.body, r.body_text,
           CASE WHEN s.head_revision = r.number THEN 1 ELSE 0 END AS is_head
    FROM revisions r JOIN statements s ON s.id = r.statement_id
    WHERE r.id > :after ORDER BY r.id LIMIT :limit""")
_UPDATE = sa.text("UPDATE revisions SET body_text = :body_text WHERE id = :id")
# as daemon.store.records._PG_INDEX at this revision (a migration does not follow later code)
_PG_INDEX = sa.text("""
    INSERT INTO statement_search (statement_id, tsv)
    SELECT s.id, setweight(to_tsvector('english', r.title), 'A') ||
                 setweight(to_tsvector('english', r.body_text), 'B')
    FROM statements s JOIN revisions r ON r.statement_id = s.id AND r.number = s.head_revision
    WHERE s.id = ANY(CAST(:ids AS integer[]))
    ON CONFLICT (statement_id) DO UPDATE SET tsv = excluded.tsv""")


def upgrade() -> None:
    conn = op.get_bind()
    sqlite = conn.dialect.name == "sqlite"
    after = 0
    while True:
        rows = conn.execute(_READ, {"after": after, "limit": CHUNK}).all()
        if not rows:
            return
        after = rows[-1].id
        changed: list[tuple[Any, str]] = []
        for row in rows:
            text = markdown_to_text(row.body)
            if text != row.body_text:
                changed.append((row, text))
        if not changed:
            continue
        conn.execute(_UPDATE, [{"id": row.id, "body_text": text} for row, text in changed])
        heads = [(row, text) for row, text in changed if row.is_head]
        if not heads:
            continue
        if sqlite:  # external content: the index must be told the words it holds
            conn.exec_driver_sql(
                "INSERT INTO statement_search(statement_search, rowid, title, body_text) "
                "VALUES ('delete', ?, ?, ?)",
                [(row.statement_id, row.title, row.body_text) for row, _text in heads])
            conn.exec_driver_sql(
                "INSERT INTO statement_search(rowid, title, body_text) VALUES (?, ?, ?)",
                [(row.statement_id, row.title, text) for row, text in heads])
        else:
            conn.execute(_PG_INDEX, {"ids": [row.statement_id for row, _text in heads]})


def downgrade() -> None:
    """Nothing to undo: the schema is unchanged, and the old text was wrong (see above)."""

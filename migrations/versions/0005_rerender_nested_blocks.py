"""Re-render the stored text of every revision whose rendering has changed.

The renderer ran a block nested directly under a tight list item (a list, a code block,
a quote, a heading, an HTML block) into the item's text: `- Parent item one.\n    - Child
item two.` was stored as `Parent item one.Child item two.` (108 of the 1,638 files of the
shared corpus rendered differently). A new version of such a statement compared with that
stored head would read as `revised` although its words did not change, and search missed
the joined words. This migration renders `body` again with the current renderer
(daemon.text.markdown_to_text) and stores the result where it differs from `body_text`,
for every revision (a later version is compared with its head; `redline diff` compares any
two), a chunk of revisions at a time. The search entry of each statement whose head
revision changed is brought up to date: SQLite's external-content FTS5 index is told the
old title and text to delete, then the new ones; PostgreSQL's tsvector is computed again
from the head revision (as daemon.store.records._PG_INDEX does).

Events keep their summaries and word counts as recorded: they say what redline reported at
the time.

The downgrade changes nothing: the old text was wrong (words no reader sees), and the
schema is the same. Going back to an older redline means restoring a backup taken before
the upgrade (README, "Upgrade"); an older redline left on this database would compare its
joined text with the re-rendered one at the next edit of an affected statement.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from daemon.text import markdown_to_text

revision = "0005"
down_revision = "0004"
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

"""Re-render the stored text of every revision: the body of migrations that follow a change
of the renderer (0005: blocks nested in a tight list item; 0006: a no-break space that kept
emphasis). Each such migration calls `rerender_body_text` once.

It renders `body` again with the current renderer (daemon.text.markdown_to_text) and stores
the result where it differs from `body_text`, for every revision (a later version is
compared with its head; `redline diff` compares any two), a chunk of revisions at a time.
The search entry of each statement whose head revision changed is brought up to date:
SQLite's external-content FTS5 index is told the old title and text to delete, then the new
ones; PostgreSQL's tsvector is computed again from the head revision. Run again with the
same renderer, it changes nothing (a database upgraded through 0005 with today's renderer
finds nothing left for 0006).

The queries are those of the schema at 0005/0006 and are kept here, not shared with
daemon.store.records: migrations must not follow later changes of the schema. A later
migration that changes `revisions` or `statement_search` needs its own copy.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.text import markdown_to_text

CHUNK = 500  # revisions read at a time: bodies average about 10 KB, the largest 160 KB

_READ = sa.text("""
    SELECT r.id, r.statement_id, r.title, r.body, r.body_text,
           CASE WHEN s.head_revision = r.number THEN 1 ELSE 0 END AS is_head
    FROM revisions r JOIN statements s ON s.id = r.statement_id
    WHERE r.id > :after ORDER BY r.id LIMIT :limit""")
_UPDATE = sa.text("UPDATE revisions SET body_text = :body_text WHERE id = :id")
# as daemon.store.records._PG_INDEX at 0005 and 0006
_PG_INDEX = sa.text("""
    INSERT INTO statement_search (statement_id, tsv)
    SELECT s.id, setweight(to_tsvector('english', r.title), 'A') ||
                 setweight(to_tsvector('english', r.body_text), 'B')
    FROM statements s JOIN revisions r ON r.statement_id = s.id AND r.number = s.head_revision
    WHERE s.id = ANY(CAST(:ids AS integer[]))
    ON CONFLICT (statement_id) DO UPDATE SET tsv = excluded.tsv""")


def rerender_body_text(conn: Connection) -> None:
    """Store every revision's text as the current renderer renders its body (see above)."""
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

"""Re-render the stored text of every revision in which a no-break space kept emphasis.

pandoc writes <strong>IBM&nbsp;</strong>announced as `**IBM\xa0**announced` and reads it
back as bold; so does the site. The renderer (CommonMark) took the no-break space for white
space, next to which `**` cannot close, and stored "**IBM **announced": asterisks no reader
sees (217 of the 2,353 files of the shared corpus, current and revisions, rendered
differently; only asterisks and the spaces next to them differ). A new version of such a
statement that writes the space as `&nbsp;` or moves it out of the bold would read as
`revised` against that stored head. As 0005 did, this migration (daemon.store.rerender)
renders `body` again with the current renderer (daemon.text.markdown_to_text) and stores the
result where it differs from `body_text`, for every revision, a chunk at a time, and brings
the search entry of each statement whose head revision changed up to date (SQLite's
external-content FTS5 index is told the old title and text to delete, then the new ones;
PostgreSQL's tsvector is computed again from the head revision).

Events keep their summaries and word counts as recorded. The downgrade changes nothing: the
old text was wrong, and the schema is the same (README, "Upgrade").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

from daemon.store.rerender import rerender_body_text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rerender_body_text(op.get_bind())


def downgrade() -> None:
    """Nothing to undo: the schema is unchanged, and the old text was wrong (see above)."""

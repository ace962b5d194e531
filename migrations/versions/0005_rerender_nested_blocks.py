"""Re-render the stored text of every revision whose rendering has changed.

The renderer ran a block nested directly under a tight list item (a list, a code block, a
quote, a heading, an HTML block) into the item's text: `- Parent item one.\n - Child item
two.` was stored as `Parent item one.Child item two.` (108 of the 1,638 files of the shared
corpus rendered differently). A new version of such a statement compared with that stored
head would read as `revised` although its words did not change, and search missed the joined
words. This migration (daemon.store.rerender) renders `body` again with the current renderer
(daemon.text.markdown_to_text) and stores the result where it differs from `body_text`, for
every revision (a later version is compared with its head; `redline diff` compares any two),
a chunk of revisions at a time. The search entry of each statement whose head revision
changed is brought up to date: SQLite's external-content FTS5 index is told the old title
and text to delete, then the new ones; PostgreSQL's tsvector is computed again from the head
revision (as daemon.store.records._PG_INDEX does).

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

from alembic import op

from daemon.store.rerender import rerender_body_text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rerender_body_text(op.get_bind())


def downgrade() -> None:
    """Nothing to undo: the schema is unchanged, and the old text was wrong (see above)."""

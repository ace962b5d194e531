"""SQLite: the search index flushes and merges less often while a large ingest writes it.

FTS5 keeps the words of a transaction in an in-memory hash and writes a new segment each
time that hash passes `hashsize` (1 MB by default), then merges segments whenever
`automerge` (4) of them share a level. A 400-file ingest transaction holds about 2 MB of
text, so each wrote several small segments, merged soon after. With an 8 MB hash and
merges of 8 segments, indexing 13,000 statements in 400-row transactions took about 28 %
less time on its own (medians of three alternating runs, twice: 5.97 -> 4.22 s and
6.32 -> 4.58 s; the index 1 MB larger). A live edit's transaction is far below 8 MB.

Both settings are stored in the index itself (its `_config` table), so every connection,
the daemon's and a user's, uses them. PostgreSQL: nothing to do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SETTINGS = {"hashsize": 8 * 1024 * 1024, "automerge": 8}
DEFAULTS = {"hashsize": 1024 * 1024, "automerge": 4}  # FTS5's own


def _configure(settings: dict[str, int]) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for key, value in settings.items():
        op.execute(f"INSERT INTO statement_search(statement_search, rank) "
                   f"VALUES ('{key}', {value})")


def upgrade() -> None:
    _configure(SETTINGS)


def downgrade() -> None:
    _configure(DEFAULTS)

"""The database: tables, engines, migrations and the writes of one statement change."""

# The newest migration in migrations/versions/ (a test keeps them equal). Here, not in
# migrate.py, so that checking it needs no SQLAlchemy (daemon.survey).
SCHEMA_HEAD = "0006"

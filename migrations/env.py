"""Alembic environment: runs on the connection redline hands over (see daemon/store/migrate.py).

It does not call logging.config.fileConfig(): that would silence the loggers redline set up.
"""

from alembic import context
from sqlalchemy import create_engine

from daemon.store.schema import metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic upgrade` from a shell
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
        return
    _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `redline db upgrade`")
run_migrations()

"""Tests for the pg_notify channel: a real LISTEN on PostgreSQL sees each event id."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from daemon.config import parse_config
from daemon.ingest import Ingestor
from daemon.notify.outbox import DeliveryOutbox
from daemon.store import migrate
from daemon.store.engine import make_engine


def test_listen_receives_event_ids_on_commit(pg_url: str, sample: Path, tmp_path: Path) -> None:
    """`pg_notify('redline_events', id)` is sent in the event's transaction; a LISTENing
    session receives exactly the committed event ids, and no delivery rows are written."""
    import psycopg

    folder = tmp_path / "w"
    folder.mkdir()
    for src in sorted((sample / "current").rglob("*.md"))[:3]:
        shutil.copy(src, folder / src.name)
    config = parse_config({"watch": {"paths": [str(folder)]},
                           "channels": [{"name": "sql", "type": "pg_notify",
                                         "kinds": ["added", "revised"]}]},
                          tmp_path, {"REDLINE_DATABASE_URL": pg_url})
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN redline_events")
        Ingestor(engine, config.watch, DeliveryOutbox(config.channels)).scan()
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=3)]
    with engine.connect() as conn:
        ids = [str(i) for i in conn.execute(sa.text(
            "SELECT event_id FROM change_log ORDER BY event_id")).scalars()]
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar() == 0
    assert sorted(got) == ids and len(ids) == 3

"""Tests for the pg_notify channel: a real LISTEN on PostgreSQL sees each event id."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import sys
import threading
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


def test_the_readme_consumer_prints_each_committed_event(pg_url: str, sample: Path,
                                                         tmp_path: Path) -> None:
    """The README's LISTEN consumer, run as printed (only its DSN pointed at the test's
    database), prints one line per event: kind, URL and summary. (The first version read
    the event on the listening connection, which psycopg 3.2+ holds during notifies():
    it hung at the first event and printed nothing.)"""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### `pg_notify`: LISTEN from SQL", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    script = code.group(1).replace("postgresql://redline@db.example.org/redline", dsn)
    assert dsn in script
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    folder = tmp_path / "w"
    folder.mkdir()
    sources = sorted((sample / "current").rglob("*.md"))[:3]
    config = parse_config({"watch": {"paths": [str(folder)]},
                           "channels": [{"name": "sql", "type": "pg_notify"}]},
                          tmp_path, {"REDLINE_DATABASE_URL": pg_url})
    consumer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        with engine.connect() as conn:  # wait until the consumer LISTENs
            while not conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = "
                    "'LISTEN redline_events' AND datname = current_database()")).scalar():
                assert consumer.poll() is None, consumer.stderr.read()
                conn.rollback()
        for src in sources[:2]:  # two transactions: two events, then one more
            shutil.copy(src, folder / src.name)
        Ingestor(engine, config.watch, DeliveryOutbox(config.channels)).scan()
        shutil.copy(sources[2], folder / sources[2].name)
        Ingestor(engine, config.watch, DeliveryOutbox(config.channels)).scan()
        with engine.connect() as conn:
            expected = [" ".join(str(v) for v in row) for row in conn.execute(sa.text(
                "SELECT kind, source_url, summary FROM change_log ORDER BY event_id"))]
        assert len(expected) == 3
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line.rstrip("\n"))
                                         for line in consumer.stdout], daemon=True).start()
        got = []
        for _ in expected:  # a bound for a hung consumer, not a measure of speed
            try:
                got.append(lines.get(timeout=60))
            except queue.Empty:
                break
    finally:
        consumer.kill()
        consumer.wait()
    assert sorted(got) == sorted(expected)

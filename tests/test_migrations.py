"""Tests for daemon.store.migrate: the Alembic migrations on both databases."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import FIXTURES, search_index_drift, write_config

from daemon import query, text
from daemon.config import WatchConfig
from daemon.document import parse_document
from daemon.errors import DatabaseError
from daemon.ingest import Ingestor
from daemon.store import migrate
from daemon.store.engine import make_engine
from daemon.store.schema import VIEW_NAMES, lz4_available
from daemon.text import markdown_to_text

VIEW_COLUMNS = {
    "current_statements": ["statement_id", "source_url", "title", "date", "published_time",
                           "modified_time", "tags", "body", "body_text", "revision_number",
                           "revision_count", "first_seen_at", "last_changed_at", "deleted_at"],
    "statement_revisions": ["statement_id", "source_url", "revision_number", "kind",
                            "changed_fields", "title", "date", "published_time",
                            "modified_time", "tags", "body", "body_text", "content_sha256",
                            "path", "observed_at"],
    "change_log": ["event_id", "occurred_at", "kind", "statement_id", "source_url", "title",
                   "from_revision", "to_revision", "changed_fields", "summary", "words_added",
                   "words_removed"],
    "ingest_errors": ["path", "reason", "detail", "first_seen_at", "last_seen_at"],
    "delivery_status": ["event_id", "channel", "status", "attempts", "last_error",
                        "next_attempt_at", "delivered_at"],
}


def alembic_to(engine: sa.Engine, direction: str, revision: str) -> None:
    """Alembic's `upgrade` or `downgrade` to `revision`, on a connection of `engine` (as
    daemon.store.migrate runs it): a database left at an older schema, or taken back."""
    from alembic import command

    cfg = migrate._alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)


def test_schema_head_constant_matches_the_newest_migration(db_url: str) -> None:
    """SCHEMA_HEAD (the fast start-up check) names the newest file in migrations/."""
    assert migrate.head_revision(make_engine(db_url)) == migrate.SCHEMA_HEAD


def test_upgrade_creates_the_views_with_spec_columns(db_url: str) -> None:
    """An empty database upgrades to head; every SPEC §4 view has exactly its columns."""
    engine = make_engine(db_url)
    assert migrate.current_revision(engine) is None
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD  # idempotent
    with engine.connect() as conn:
        for view in VIEW_NAMES:
            cols = list(conn.execute(sa.text(f"SELECT * FROM {view} LIMIT 0")).keys())
            assert cols == VIEW_COLUMNS[view], view


# SPEC §4 on PostgreSQL: JSON arrays are jsonb, times timestamptz; the rest as it reads
VIEW_PG_TYPES = {
    **dict.fromkeys(("tags", "changed_fields"), "jsonb"),
    **dict.fromkeys(("published_time", "modified_time", "first_seen_at", "last_changed_at",
                     "deleted_at", "observed_at", "occurred_at", "last_seen_at",
                     "next_attempt_at", "delivered_at"), "timestamp with time zone"),
    "date": "date",
    **dict.fromkeys(("statement_id", "revision_number", "revision_count", "event_id",
                     "from_revision", "to_revision", "words_added", "words_removed",
                     "attempts"), "integer"),
    **dict.fromkeys(("source_url", "title", "body", "body_text", "path", "summary", "detail",
                     "last_error"), "text"),
    **dict.fromkeys(("kind", "content_sha256", "reason", "channel", "status"),
                    "character varying"),
}


def test_every_view_column_has_its_spec_type_on_postgresql(pg_url: str) -> None:
    """Every column of the five views: JSON arrays jsonb, times timestamptz (a view that
    cast a time to text, or JSON to json, would still have the SPEC's column names)."""
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        types = conn.execute(sa.text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_name IN :views ORDER BY table_name, ordinal_position").bindparams(
                sa.bindparam("views", expanding=True)), {"views": list(VIEW_NAMES)}).all()
    assert sorted({t for t, _c, _d in types}) == sorted(VIEW_NAMES)
    assert [(t, c, d) for t, c, d in types if VIEW_PG_TYPES[c] != d] == []


def test_view_values_answer_the_readme_sql_on_either_database(db_url: str,
                                                              tmp_path: Path) -> None:
    """SPEC §4: times are UTC (text `YYYY-MM-DD HH:MM:SS.ffffff` on SQLite, timestamptz on
    PostgreSQL), JSON arrays JSON text on SQLite (`json_each`) and jsonb on PostgreSQL
    (`?`): the README's example queries find a real statement's values written that way."""
    src = FIXTURES / "corpus" / "current" / "articles" / "2025-07" / (
        "2025-07-25-the-one-big-beautiful-bill-is-a-historic-investment-in-rural-healthcare.md")
    folder = tmp_path / "statements"
    folder.mkdir()
    path = folder / src.name
    path.write_bytes(src.read_bytes())
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    ing = Ingestor(engine, WatchConfig(paths=(folder,)))
    ing.scan()
    path.write_text(path.read_text("utf-8").replace(
        "\npublished_time: ", "\nmodified_time: 2025-07-26 09:00:00-04:00\npublished_time: "),
        "utf-8")
    ing.scan()
    sqlite = engine.dialect.name == "sqlite"
    has = ("EXISTS (SELECT 1 FROM json_each({col}) WHERE value = :v)" if sqlite
           else "{col} ? :v")
    week = "datetime('now', '-7 days')" if sqlite else "now() - interval '7 days'"
    with engine.connect() as conn:
        def one(sql_text: str, **params: Any) -> Any:
            return conn.execute(sa.text(sql_text), params).one()

        times = one("SELECT published_time, modified_time, first_seen_at, last_changed_at "
                    "FROM current_statements")
        assert one(f"SELECT count(*) FROM current_statements WHERE {has.format(col='tags')}",
                   v="articles") == (1,)
        assert one(f"SELECT count(*) FROM change_log WHERE occurred_at >= {week} AND "
                   f"{has.format(col='changed_fields')}", v="modified_time") == (1,)
    if sqlite:  # the view hands over the stored text as it is
        assert times[:2] == ("2025-07-25 20:05:19.000000", "2025-07-26 13:00:00.000000")
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", t) for t in times)
    else:
        assert times[:2] == (dt.datetime(2025, 7, 25, 20, 5, 19, tzinfo=dt.UTC),
                             dt.datetime(2025, 7, 26, 13, 0, tzinfo=dt.UTC))
        assert all(isinstance(t, dt.datetime) and t.tzinfo is not None for t in times)
    engine.dispose()


def test_downgrade_then_upgrade_round_trips(db_url: str) -> None:
    """The migration can be undone and redone (batch mode on SQLite)."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    alembic_to(engine, "downgrade", "base")
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("statements")
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD


def test_0003_indexes_the_revisions_text_instead_of_a_copy_and_back(db_url: str) -> None:
    """Upgrading a database that holds statements rebuilds its search index over the
    revisions' own text; downgrading brings the copy back: the same searches find the same
    statements, ranked alike, both ways."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    Ingestor(engine, WatchConfig(paths=(FIXTURES / "corpus" / "current",))).scan()
    words = ("President", "trade", "America -China", '"United States"', "energy OR oil")

    def searches() -> list[list[dict[str, Any]]]:
        with engine.connect() as conn:
            return [query.search(conn, w, limit=100) for w in words]

    before = searches()
    assert all(before) and len({h["statement_id"] for hits in before for h in hits}) > 10
    copy = {"sqlite": "SELECT rowid, title, body_text FROM statement_search ORDER BY rowid",
            "postgresql": "SELECT statement_id, title, body_text FROM statement_search "
                          "ORDER BY statement_id"}[engine.dialect.name]
    current = "SELECT statement_id, title, body_text FROM current_statements ORDER BY 1"
    alembic_to(engine, "downgrade", "0002")
    with engine.connect() as conn:
        assert conn.exec_driver_sql(copy).all() == conn.exec_driver_sql(current).all()
    assert searches() == before
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD
    with engine.connect() as conn:
        assert search_index_drift(conn) == []
    assert searches() == before


def test_0004_search_index_writes_one_segment_per_large_transaction_and_back(
        tmp_path: Path) -> None:
    """0004 stores FTS5's hashsize (8 MB) and automerge (8) in the index: a transaction of
    about 3 MB of real statement text is written as one segment, where FTS5's defaults (what
    the downgrade restores) write several."""

    texts = [markdown_to_text(doc.body) for doc in (
        parse_document(p.read_bytes(), 5_000_000) for p in sorted(
            (FIXTURES / "corpus" / "current").rglob("*.md")))]
    rows = [(i + 1, "title", texts[i % len(texts)]) for i in range(10 * len(texts))]
    assert 2_000_000 < sum(len(t) for _i, _title, t in rows) < 8_000_000

    def segments_after_one_transaction() -> tuple[dict[str, int], int]:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO statement_search(statement_search) "
                                 "VALUES ('delete-all')")  # an empty index to start from
            conn.exec_driver_sql("INSERT INTO statement_search(rowid, title, body_text) "
                                 "VALUES (?, ?, ?)", rows)
        with engine.connect() as conn:
            settings = dict(conn.exec_driver_sql(
                "SELECT k, v FROM statement_search_config WHERE k != 'version'").all())
            return settings, conn.exec_driver_sql(
                "SELECT count(DISTINCT segid) FROM statement_search_idx").scalar_one()

    engine = make_engine(f"sqlite:///{tmp_path / 'redline.db'}")
    migrate.upgrade(engine)
    assert segments_after_one_transaction() == ({"hashsize": 8388608, "automerge": 8}, 1)
    alembic_to(engine, "downgrade", "0003")
    settings, segments = segments_after_one_transaction()
    assert settings == {"hashsize": 1048576, "automerge": 4} and segments > 1
    engine.dispose()


NESTED_CHAIN = (FIXTURES / "nested-list" / "revisions" / "statements-releases" / "2023-06" /
                "2023-06-08-fact-sheet-vice-president-harris-announces-new-initiatives-to-"
                "strengthen-u-s-caribbean-partnership")
ORDERED = """---
date: '2026-12-01'
source_url: https://example.org/ordered/
title: Ordered lists
---
1.  First
    1.  Nested
"""


def test_0005_rerenders_text_the_old_renderer_joined(db_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at 0004 holds the old renderer's text, in which a list nested under a
    tight item ran into the item ("infrastructure.Climate", "FirstNested": no search finds
    "Nested"). 0005 renders it again: the stored text and the search index are the
    current renderer's, and re-ingesting the same words makes no revision (an ingest that
    parses the file again, CRLF, compares it with the stored head) while the real
    un-nesting is metadata, not revised."""
    engine = make_engine(db_url)
    alembic_to(engine, "upgrade", "0004")
    folder = tmp_path / "statements"
    folder.mkdir()
    real, ordered = folder / "caribbean.md", folder / "ordered.md"
    versions = sorted(NESTED_CHAIN.glob("v0*.md"))
    real.write_bytes(versions[0].read_bytes())
    ordered.write_text(ORDERED)
    ingestor = Ingestor(engine, WatchConfig(paths=(folder,)))
    with monkeypatch.context() as m:  # written the old way: no block start separates
        m.setattr(text, "_START_BLOCKS", frozenset())
        assert ingestor.scan().added == 2

    def stored(column: str = "body_text") -> dict[str, str]:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text(
                f"SELECT source_url, {column} FROM current_statements")).all())

    def hits(words: str) -> int:
        with engine.connect() as conn:
            return len(query.search(conn, words))

    before = stored()
    assert before["https://example.org/ordered/"] == "FirstNested"
    assert sum("infrastructure.Climate Resilient" in t for t in before.values()) == 1
    assert hits("Nested") == 0
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD  # 0005 and what follows it
    after = stored()
    assert after == {url: markdown_to_text(body) for url, body in stored("body").items()}
    assert after["https://example.org/ordered/"] == "First\n\nNested"
    assert sum("infrastructure.\n\nClimate Resilient" in t for t in after.values()) == 1
    assert hits("Nested") == 1 and hits('"First Nested"') == 1
    assert hits('"infrastructure Climate Resilient Debt"') == 1
    with engine.connect() as conn:
        assert search_index_drift(conn) == []

    def revisions() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM revisions")).scalar_one()

    assert ingestor.scan().unchanged == 2 and revisions() == 2
    for f in (real, ordered):  # other bytes, the same parsed values: read and compared
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    counts = ingestor.scan()
    assert (counts.unchanged, counts.revised, counts.formatting) == (2, 0, 0)
    assert revisions() == 2
    real.write_bytes(versions[1].read_bytes())
    counts = ingestor.scan()
    assert (counts.metadata, counts.revised) == (1, 0)
    with engine.connect() as conn:
        assert search_index_drift(conn) == []
    engine.dispose()


NBSP_BOLD = (FIXTURES / "corpus" / "current" / "statements-releases" / "2022-09" /
             "2022-09-23-fact-sheet-biden-harris-administration-announces-new-actions-and-"
             "funding-to-address-the-overdose-epidemic-and-support-recovery.md")


def test_0006_rerenders_text_a_no_break_space_kept_from_emphasis(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at 0005 holds the old renderer's text, in which a no-break space inside a
    bold lead-in kept its asterisks ("**Awarding $1.5 Billion … Crisis. **The U.S"). 0006
    renders it again: stored text and search index are the current renderer's, and a new
    version that moves those spaces out of the bold is `formatting`, not `revised`."""
    engine = make_engine(db_url)
    alembic_to(engine, "upgrade", "0005")
    folder = tmp_path / "statements"
    folder.mkdir()
    statement = folder / "overdose.md"
    statement.write_bytes(NBSP_BOLD.read_bytes())
    ingestor = Ingestor(engine, WatchConfig(paths=(folder,)))
    with monkeypatch.context() as m:  # written the old way: no stand-in for the space
        m.setattr(text, "_nbsp_standins", lambda markdown: markdown)
        assert ingestor.scan().added == 1

    def stored() -> tuple[str, str]:
        with engine.connect() as conn:
            body, body_text = conn.execute(sa.text(
                "SELECT body, body_text FROM current_statements")).one()
            return body, body_text

    body, before = stored()
    assert "**Awarding $1.5 Billion" in before and "Opioid Crisis. **The" in before
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD == "0006"
    _body, after = stored()
    assert after == markdown_to_text(body) and "*" not in after
    assert "Awarding $1.5 Billion" in after and "Opioid Crisis. The U.S" in after
    with engine.connect() as conn:
        assert search_index_drift(conn) == []
    assert ingestor.scan().unchanged == 1
    statement.write_bytes(NBSP_BOLD.read_bytes().replace(".\xa0**".encode(), b".** "))
    counts = ingestor.scan()
    assert (counts.formatting, counts.revised) == (1, 0)
    engine.dispose()


def test_a_database_whose_path_has_odd_characters_is_migrated(tmp_path: Path) -> None:
    """A folder named with "#", "%" or a space (URL-quoted "#" becomes "%23") holds the
    database like any other: `redline ingest` creates and migrates it, without a traceback
    from the migration tool's configuration file syntax, and the no-change answer reads
    it (no SQLAlchemy loaded)."""
    folder = tmp_path / "odd #1 100%"
    folder.mkdir()
    cfg = write_config(tmp_path, f"sqlite:///{folder / 'redline.db'}",
                       [FIXTURES / "corpus" / "current" / "briefings-statements"])
    for full_pass in (True, False):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "daemon", "--config",
                               str(cfg), "ingest", "--json"], capture_output=True, text=True,
                              timeout=120)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 0, proc.stderr
        assert [line for line in lines if not line.startswith("import time:")] == []
        assert any(line.rsplit("|", 1)[-1].strip() == "sqlalchemy"
                   for line in lines) == full_pass
    assert json.loads(proc.stdout)["unchanged"] == json.loads(proc.stdout)["files"] > 0
    engine = make_engine(f"sqlite:///{folder / 'redline.db'}")
    assert migrate.current_revision(engine) == migrate.SCHEMA_HEAD
    assert migrate.head_revision(engine) == migrate.SCHEMA_HEAD
    engine.dispose()


def test_a_database_upgraded_by_a_newer_redline_is_refused_clearly(
        db_url: str, tmp_path: Path) -> None:
    """An older redline (or a rolled-back upgrade, or an old instance beside upgraded ones)
    meeting a schema it does not know says so in one line, exits 2 (a configuration error:
    the systemd unit does not restart the daemon to fail again every 5 s) and changes
    nothing; it does not ask for `redline db upgrade`, which cannot help."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    for step in (migrate.upgrade, migrate.require_current):
        with pytest.raises(DatabaseError, match=r"^database schema is at 0099, newer than "
                           rf"this redline knows \(up to {migrate.SCHEMA_HEAD}\)"):
            step(engine)
    cfg = write_config(tmp_path, db_url)
    for args, code in ((["ingest"], 2), (["db", "upgrade"], 2), (["run"], 2),
                       (["db", "current"], 0)):
        proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        if code:
            assert proc.stderr.strip().splitlines() == [
                "redline: error: database schema is at 0099, newer than this redline knows "
                f"(up to {migrate.SCHEMA_HEAD}): a newer redline has upgraded it; run that "
                "version, or point this one at another database"]
        else:
            assert (f"current: 0099  head: {migrate.SCHEMA_HEAD}  (newer than this redline"
                    in proc.stdout)
    assert migrate.current_revision(engine) == "0099"
    engine.dispose()


def assert_refused_by_every_command(cfg: Path, message: str) -> None:
    """A command that writes, the migration and one that reads: each exits 2 with
    `message` as its one line."""
    for args in (["ingest"], ["db", "upgrade"], ["status"]):
        proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stderr.splitlines()) == (2, [message]), args


def test_another_applications_alembic_database_is_named_as_such(
        db_url: str, tmp_path: Path) -> None:
    """database.url naming another application's Alembic database (its own
    alembic_version, none of redline's tables) was reported as upgraded by a newer redline
    ("run the redline that upgraded it"), which sends the operator looking for a version
    that does not exist. It is named as what it is; nothing is changed (exit 2 as before)."""
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('3f2a1b9c8d7e')"))
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    cfg = write_config(tmp_path, db_url)
    message = ("redline: error: not a redline database: its schema is at 3f2a1b9c8d7e, which "
               "is no redline migration, and it has no redline tables; check database.url")
    assert_refused_by_every_command(cfg, message)
    proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "db",
                           "current"], capture_output=True, text=True, timeout=60)
    assert proc.stdout == (f"current: 3f2a1b9c8d7e  head: {migrate.SCHEMA_HEAD}  (not a "
                           "redline database: no redline migration, no redline tables)\n")
    assert migrate.current_revision(engine) == "3f2a1b9c8d7e"
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("statements")
    engine.dispose()


def test_a_database_holding_another_applications_tables_is_left_as_it_is(
        db_url: str, tmp_path: Path) -> None:
    """database.url naming another application's database that has no Alembic table (a
    wrong path to some app's SQLite file; on PostgreSQL, tables named like redline's) had
    redline's tables added to it by `db upgrade` or a first `ingest` (on PostgreSQL, the
    clash was a traceback). Every command now names it and changes nothing (exit 2); on
    PostgreSQL a shared database with unrelated tables is still upgraded."""
    clash = "invoices" if db_url.startswith("sqlite") else "statements"
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {clash} (id INTEGER PRIMARY KEY, amount TEXT)"))
    cfg = write_config(tmp_path, db_url)
    message = (f"redline: error: not a redline database: it has no redline schema but holds "
               f"a table ({clash}); redline adds its tables only to an empty database: check "
               "database.url")
    assert_refused_by_every_command(cfg, message)
    proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "db",
                           "current", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["state"] == "not_redline"
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == [clash]
    if db_url.startswith("postgresql"):
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE statements RENAME TO invoices"))
        assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD
        with engine.connect() as conn:
            assert {"invoices", "statements"} <= set(sa.inspect(conn).get_table_names())
    engine.dispose()


def test_db_current_on_a_mistyped_path_creates_nothing(tmp_path: Path) -> None:
    """`redline db current` reads: on a SQLite path where no database is (a typo), it says
    so (exit 1, one line) instead of creating an empty file and answering `none`."""
    missing = tmp_path / "typo" / "redlin.db"
    missing.parent.mkdir()
    cfg = write_config(tmp_path, f"sqlite:///{missing}")
    proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "db",
                           "current"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"redline: error: database {missing} does not exist "
                                        "yet: run `redline ingest` or `redline db upgrade` "
                                        "first"]
    assert list(missing.parent.iterdir()) == []


def test_a_file_that_is_not_a_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """database.url naming a file that is not SQLite (a wrong path, a damaged copy): SQLite
    says "file is not a database", a DatabaseError that is no OperationalError, and every
    command printed a traceback. Now: one line naming the file, exit 1, file untouched."""
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"not a database, just some notes\n" * 100)
    cfg = write_config(tmp_path, f"sqlite:///{junk}")
    for args in (["db", "current"], ["db", "upgrade"], ["status"], ["events"], ["ingest"]):
        proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (1, ""), (args, proc.stderr)
        assert proc.stderr.splitlines() == [f"redline: error: cannot open the database {junk}:"
                                            " file is not a database"], args
    assert junk.read_bytes() == b"not a database, just some notes\n" * 100


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    """libpq puts its hint on a line of its own ("\\n\\tIs the server running on that
    host ...?"): the error took two lines where README promises one."""
    cfg = write_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/redline")
    proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "status"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("redline: error: cannot open the database: ")
    assert "Connection refused; Is the server running" in proc.stderr


def test_db_current_json_gives_the_state_for_scripts(db_url: str, tmp_path: Path) -> None:
    """SPEC §6: commands that print data take --json. `db current` printed only its line
    (and `--json` was "No such option"), so a deploy script had to parse prose to know
    whether to migrate. Old, head and newer schemas each give their state."""
    engine = make_engine(db_url)
    alembic_to(engine, "upgrade", "0003")
    cfg = write_config(tmp_path, db_url)

    def current() -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "db",
                               "current", "--json"], capture_output=True, text=True,
                              timeout=60)
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        return json.loads(proc.stdout)

    head = migrate.SCHEMA_HEAD
    assert current() == {"current": "0003", "head": head, "state": "needs_upgrade"}
    migrate.upgrade(engine)
    assert current() == {"current": head, "head": head, "state": "up_to_date"}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    assert current() == {"current": "0099", "head": head, "state": "newer"}
    engine.dispose()


def test_large_text_compresses_with_lz4_on_postgresql(pg_url: str) -> None:
    """Revision and search text use lz4 where the server has it (0002); downgrade undoes it."""
    engine = make_engine(pg_url)
    migrate.upgrade(engine)
    query = sa.text("SELECT attrelid::regclass::text || '.' || attname, attcompression "
                    "FROM pg_attribute WHERE attrelid IN ('revisions'::regclass, "
                    "'statement_search'::regclass) AND attname IN ('body', 'body_text', 'tsv')")
    with engine.connect() as conn:
        if not lz4_available(conn):
            pytest.skip("this PostgreSQL server was built without lz4")
        methods = dict(conn.execute(query).all())
    assert methods == {"revisions.body": "l", "revisions.body_text": "l",
                       "statement_search.tsv": "l"}  # 0003: the search table has no text
    alembic_to(engine, "downgrade", "0002")
    with engine.connect() as conn:
        assert dict(conn.execute(query).all()) == {
            "revisions.body": "l", "revisions.body_text": "l",
            "statement_search.body_text": "l", "statement_search.tsv": "l"}
    alembic_to(engine, "downgrade", "0001")
    with engine.connect() as conn:
        assert set(dict(conn.execute(query).all()).values()) == {""}
    assert migrate.upgrade(engine) == migrate.SCHEMA_HEAD

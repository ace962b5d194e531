"""Shared fixtures: a real SQLite file and a real PostgreSQL database for every database
test, the real corpus (when ../shared is present) and the small real sample in fixtures/."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.store import migrate
from daemon.store.engine import make_engine

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_ADMIN_URL = os.environ.get("REDLINE_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _corpus_dir() -> Path | None:
    env = os.environ.get("REDLINE_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "corpus")
    for c in candidates:
        if (c / "current").is_dir() and (c / "revisions" / "INDEX.tsv").is_file():
            return c
    return None


CORPUS = _corpus_dir()


@pytest.fixture
def corpus() -> Path:
    """The whole shared corpus; tests using it skip where a clone has no ../shared/."""
    if CORPUS is None:
        pytest.skip("the shared corpus (../shared/corpus or $REDLINE_CORPUS) is absent: "
                    "only the sample in tests/fixtures/ is exercised")
    return CORPUS


@pytest.fixture
def sample() -> Path:
    """The small real sample shipped with the repository (tests/fixtures/corpus)."""
    return FIXTURES / "corpus"


_pg_state: dict[str, object] = {}


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    if "reason" not in _pg_state:
        try:
            engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            engine.dispose()
            _pg_state["reason"] = None
        except ModuleNotFoundError:
            _pg_state["reason"] = "psycopg is not installed (pip install 'redline[postgres]')"
        except sa.exc.OperationalError as exc:
            _pg_state["reason"] = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: " \
                                  f"{str(exc.orig).strip().splitlines()[0]}"
    return _pg_state["reason"]  # type: ignore[return-value]


def _skip_or_fail_without_postgres() -> None:
    reason = _postgres_available()
    if reason is None:
        return
    if os.environ.get("REDLINE_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required here (REDLINE_REQUIRE_POSTGRES): {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    _skip_or_fail_without_postgres()
    name = f"redline_test_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may restart the server, and the drop below must still work after it
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(
        hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a real SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'redline.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine on each database."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def unprivileged() -> list[str]:
    """A command prefix that runs a program bound by file permissions: nothing for a
    normal user; for root (who reads anything), setpriv without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: no folder can be made unreadable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def write_config(tmp_path: Path, db_url: str, watch: list[Path] | None = None,
                 extra: str = "") -> Path:
    """Write a config.toml for a test: watch the given folders, use the given database."""
    folders = watch or [tmp_path / "statements"]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    paths = ", ".join(f'"{f}"' for f in folders)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\npaths = [{paths}]\ndebounce_ms = 50\n\n'
                   f'[database]\nurl = "{db_url}"\n\n{extra}')
    return cfg


def search_index_drift(conn: sa.Connection) -> list[Any]:
    """What the search index holds that indexing the current statements afresh would not
    hold, and the reverse: empty when every change of words reached the index exactly."""
    if conn.dialect.name == "sqlite":
        for sql_text in (
                "CREATE VIRTUAL TABLE temp.fresh USING fts5(title, body_text, "
                "tokenize = 'unicode61 remove_diacritics 2')",
                "INSERT INTO temp.fresh(rowid, title, body_text) "
                "SELECT statement_id, title, body_text FROM current_statements",
                "CREATE VIRTUAL TABLE temp.live_words USING "
                "fts5vocab('main', 'statement_search', 'instance')",
                "CREATE VIRTUAL TABLE temp.fresh_words USING "
                "fts5vocab('temp', 'fresh', 'instance')"):
            conn.exec_driver_sql(sql_text)
        words = "SELECT term, doc, col, offset FROM temp.{} EXCEPT SELECT term, doc, col, " \
                "offset FROM temp.{}"
        drift = [*conn.exec_driver_sql(words.format("live_words", "fresh_words")).all(),
                 *conn.exec_driver_sql(words.format("fresh_words", "live_words")).all()]
        for name in ("fresh_words", "live_words", "fresh"):
            conn.exec_driver_sql(f"DROP TABLE temp.{name}")
        return drift
    return conn.exec_driver_sql("""
        SELECT statement_id, s.tsv FROM current_statements c
        FULL JOIN statement_search s USING (statement_id)
        WHERE s.tsv IS DISTINCT FROM setweight(to_tsvector('english', c.title), 'A') ||
                                     setweight(to_tsvector('english', c.body_text), 'B')
        """).all()


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """structlog prints nothing in tests (capture_logs still sees every event); its global
    state is reset afterwards."""
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory(),
                        cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


def file_state(path: Path) -> tuple[int, int, str] | None:
    """A file's size, mtime and SHA-256; None when it is not there."""
    if not path.exists():
        return None
    st = path.stat()
    return st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def leave_wal(db: Path, sql_text: str) -> None:
    """Commit `sql_text` and exit without closing: the change stays in the WAL, as when a
    writer is killed or another connection is still open."""
    code = ("import os, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA wal_autocheckpoint = 0')\n"
            "c.execute(sys.argv[2])\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(db), sql_text], check=True)


def leave_heartbeat_in_wal(db: Path, host: str) -> tuple[Any, Any]:
    """Commit a heartbeat row that stays in the WAL of the SQLite file `db` (no writer left
    to checkpoint it); return the state of the file and of its WAL then (file_state)."""
    leave_wal(db, "INSERT INTO heartbeats (instance, hostname, pid, started_at, seen_at, "
                  f"watching, status) VALUES ('gone', '{host}', 1, '2026-01-01 00:00:00', "
                  "'2026-01-01 00:00:00', 0, 'killed')")
    before = file_state(db), file_state(Path(f"{db}-wal"))
    assert before[1] is not None and before[1][0] > 0
    return before


@pytest.fixture
def logging_reset() -> Iterator[None]:
    """configure_logging touches the stdlib root logger: undo it after the test."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_redline", False):
            root.removeHandler(handler)
    root.setLevel(level)

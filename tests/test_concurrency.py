"""Tests for concurrent ingest into one database: several instances, one record."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import sqlalchemy as sa

from daemon.config import WatchConfig
from daemon.ingest import Ingestor
from daemon.store import migrate
from daemon.store.engine import make_engine


def _statements(sample: Path, n: int) -> list[Path]:
    """n real statements with distinct source_url."""
    seen: dict[str, Path] = {}
    for p in sorted((sample / "current").rglob("*.md")):
        url = re.search(r"^source_url: (.*)$", p.read_text(encoding="utf-8"), re.M)
        assert url is not None
        seen.setdefault(url.group(1), p)
    return list(seen.values())[:n]


def _ingest_all_at_once(url: str, folders: list[Path]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(folders))

    def worker(folder: Path) -> None:
        engine = make_engine(url)
        try:
            barrier.wait()
            Ingestor(engine, WatchConfig(paths=(folder,))).scan()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_two_instances_writing_the_same_statements_keep_numbers_gapless(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """Two instances ingest the same 25 statements at once, then the same revision of
    10 of them: revision numbers run 1..n without gaps or duplicates, one event each."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    folders = [tmp_path / "a", tmp_path / "b"]
    sources = _statements(sample, 25)
    for folder in folders:
        folder.mkdir()
        for src in sources:
            shutil.copy(src, folder / src.name)
    assert _ingest_all_at_once(db_url, folders) == []
    for folder in folders:
        for src in sources[:10]:
            f = folder / src.name
            text = f.read_text(encoding="utf-8")
            f.write_text(re.sub(r"\n---\n", "\n---\nA correction was added.\n\n", text,
                                count=1), encoding="utf-8")
    assert _ingest_all_at_once(db_url, folders) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM statements")).scalar() == 25
        rows = conn.execute(sa.text(
            "SELECT statement_id, revision_number FROM statement_revisions "
            "ORDER BY statement_id, revision_number")).all()
        by_statement: dict[int, list[int]] = {}
        for sid, n in rows:
            by_statement.setdefault(sid, []).append(n)
        assert all(ns == list(range(1, len(ns) + 1)) for ns in by_statement.values())
        events = conn.execute(sa.text(
            "SELECT statement_id, to_revision, count(*) FROM change_log "
            "GROUP BY statement_id, to_revision")).all()
        assert len(events) == len(rows) and all(c == 1 for _s, _r, c in events)
        revised = conn.execute(sa.text(
            "SELECT count(*) FROM change_log WHERE kind = 'revised'")).scalar()
        assert revised == 10
        assert len(rows) == 35
    engine.dispose()

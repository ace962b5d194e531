"""Tests for daemon.notify.jsonl: one event body per line, appended, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from notify_support import FakeClock, config_for, copy_statements, edit_one_word, ingestor, rows

from daemon.notify.dispatch import Dispatcher


def jsonl_channel(path: Path) -> str:
    return f'[[channels]]\nname = "archive"\ntype = "jsonl"\npath = "{path}"\n\n'


def test_one_parseable_line_per_event_appended(engine: sa.Engine, db_url: str, sample: Path,
                                               tmp_path: Path) -> None:
    """Every event becomes one JSON line holding its SPEC §7 body; a later pass appends."""
    clock = FakeClock()
    out = tmp_path / "events.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(out))
    paths = copy_statements(sample, tmp_path / "statements", 3)
    ing = ingestor(engine, config, clock)
    ing.process_paths([str(p) for p in paths])
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    try:
        assert d.dispatch_due(wait=10) == 3
        first = out.read_bytes()
        edit_one_word(paths[0])
        clock.advance(10)
        ing.process_paths([str(paths[0])])
        assert d.dispatch_due(wait=10) == 1
    finally:
        d.close()
    data = out.read_bytes()
    assert data.startswith(first) and data.endswith(b"\n")
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert [b["kind"] for b in lines] == ["added", "added", "added", "revised"]
    event_ids = [r[0] for r in rows(engine, "SELECT event_id FROM change_log ORDER BY event_id")]
    assert [b["event_id"] for b in lines] == event_ids
    assert all(b["diff"]["words"] for b in lines)
    assert {r[0] for r in rows(engine, "SELECT status FROM delivery_status")} == {"delivered"}


def test_an_unwritable_path_is_a_recorded_failure(engine: sa.Engine, db_url: str,
                                                  sample: Path, tmp_path: Path) -> None:
    """A JSONL path in a missing folder fails the delivery with the reason; nothing is lost."""
    clock = FakeClock()
    out = tmp_path / "missing" / "events.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(out))
    (path,) = copy_statements(sample, tmp_path / "statements", 1)
    ingestor(engine, config, clock).process_paths([str(path)])
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    try:
        d.dispatch_due(wait=10)
        (row,) = rows(engine, "SELECT status, attempts, last_error FROM delivery_status")
        assert row[:2] == ("failed", 1) and "No such file or directory" in row[2]
        out.parent.mkdir()
        clock.advance(3600)
        d.dispatch_due(wait=10)
    finally:
        d.close()
    assert rows(engine, "SELECT status, attempts FROM delivery_status")[0] == ("delivered", 2)
    assert len(out.read_text().splitlines()) == 1

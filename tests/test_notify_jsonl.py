"""Tests for daemon.notify.jsonl: one event body per line, appended, on real files."""

from __future__ import annotations

import inspect
import json
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import sqlalchemy as sa
from notify_support import (
    FakeClock,
    config_for,
    copy_statements,
    dispatch_once,
    edit_one_word,
    ingestor,
    rows,
    wait_until,
)
from structlog.testing import capture_logs

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


def test_kinds_and_ignore_fields_choose_the_channels_an_event_reaches(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """SPEC §5: a channel takes the events of its `kinds` (by default all but
    `formatting`), and with `ignore_fields = ["modified_time"]` a `metadata` change of only
    that field notifies no one, while one that also changes `tags`, or a change of words
    along with it, still does."""
    clock = FakeClock()
    every, quiet = tmp_path / "every.jsonl", tmp_path / "quiet.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(every).replace('"archive"', '"every"')
                        + jsonl_channel(quiet).replace('"archive"', '"quiet"')
                        + 'ignore_fields = ["modified_time"]\n')
    assert [ch.ignore_fields for ch in config.channels] == [(), ("modified_time",)]
    (path,) = copy_statements(sample, tmp_path / "statements", 1)
    text = path.read_text("utf-8")
    assert "\nmodified_time: " not in text and "\ntags: articles\n" in text
    ing = ingestor(engine, config, clock)
    ing.process_paths([str(path)])

    def edit(new_text: str) -> None:
        path.write_text(new_text, "utf-8")
        clock.advance(60)
        ing.process_paths([str(path)])

    stamped = text.replace("\npublished_time: ", "\nmodified_time: 2025-07-26 09:00:00-04:00"
                                                 "\npublished_time: ", 1)
    edit(stamped)  # metadata: modified_time only
    edit(stamped.replace("\ntags: articles\n", "\ntags: [articles, rural]\n", 1)
         .replace("09:00:00", "10:00:00", 1))  # metadata: modified_time and tags
    retagged = stamped.replace("\ntags: articles\n", "\ntags: [articles, rural]\n", 1)
    edit(retagged.replace("09:00:00", "10:00:00", 1) + "\n\n")  # formatting: white space
    edit_one_word(path)
    edit(path.read_text("utf-8").replace("10:00:00", "11:00:00", 1))  # revised
    dispatch_once(engine, config, clock)
    log = rows(engine, "SELECT event_id, kind, changed_fields FROM change_log ORDER BY event_id")
    assert [(k, json.loads(c) if isinstance(c, str) else c) for _e, k, c in log] == [
        ("added", []), ("metadata", ["modified_time"]),
        ("metadata", ["modified_time", "tags"]), ("formatting", ["body"]),
        ("revised", ["body", "modified_time"])]
    ids = [e for e, _k, _c in log]
    reached = {name: [json.loads(line)["event_id"] for line in out.read_text().splitlines()]
               for name, out in (("every", every), ("quiet", quiet))}
    assert reached == {"every": [ids[0], ids[1], ids[2], ids[4]],
                       "quiet": [ids[0], ids[2], ids[4]]}
    assert {r[0] for r in rows(engine, "SELECT status FROM delivery_status")} == {"delivered"}


def test_a_wake_as_a_worker_ends_is_not_lost(engine: sa.Engine, db_url: str, sample: Path,
                                             tmp_path: Path) -> None:
    """A wake that comes just as a channel's worker has taken its last look for work (and
    found none) starts a new worker: the event is delivered at once, not at the next
    dispatch tick. The wake is made at that exact moment by tracing the worker's thread:
    at the first line it runs after its last look (the one line of `finally` that every
    ending passes)."""
    clock = FakeClock()
    out = tmp_path / "events.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(out))
    first, late = copy_statements(sample, tmp_path / "statements", 2)
    ing = ingestor(engine, config, clock)
    ing.process_paths([str(first)])
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    lines, start = inspect.getsourcelines(Dispatcher._drain)
    after_last_look = start + next(i for i, line in enumerate(lines)
                                   if line.strip() == "finally:") + 1
    fired: list[bool] = []
    woke = threading.Event()

    def in_drain(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == after_last_look and not fired:
            fired.append(True)  # the worker has taken its last look; an edit arrives now
            ing.process_paths([str(late)])
            d.wake()
            woke.set()
        return in_drain

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return in_drain if frame.f_code is Dispatcher._drain.__code__ else None

    threading.settrace(tracer)
    try:
        d.wake()
        wait_until(woke.is_set, what="the worker reaching its end")
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
        sys.settrace(None)
    try:
        assert d.wait_idle(10)
        lines_out = out.read_text("utf-8").splitlines()
        assert len(lines_out) == 2, "the event of the wake was not delivered"
    finally:
        d.close()
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


def test_a_database_outage_in_a_worker_is_one_line_and_the_worker_comes_back(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A channel worker that loses the database logs one warning line naming it (no
    traceback, which reads like a crash in the journal); its deliveries stay pending and
    the next wake, with the database back, says so and delivers them."""
    clock = FakeClock()
    out = tmp_path / "events.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(out))
    (path,) = copy_statements(sample, tmp_path / "statements", 1)
    away = sa.create_engine("sqlite:////nonexistent-folder/redline.db"
                            if db_url.startswith("sqlite") else
                            "postgresql+psycopg://postgres@127.0.0.1:1/postgres")
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    try:
        assert d.dispatch_due(wait=10) == 0  # its start-up work done, nothing due yet
        ingestor(engine, config, clock).process_paths([str(path)])
        d.engine = away
        with capture_logs() as logs:
            assert d.dispatch_due(wait=10) == 0
        failed = [e for e in logs if e["event"] == "delivery_database_unreachable"]
        assert len(failed) == 1, logs
        assert failed[0]["log_level"] == "warning" and "exc_info" not in failed[0]
        assert failed[0]["error"] and "\n" not in failed[0]["error"]
        assert not [e for e in logs if e["event"] == "delivery_worker_failed"], logs
        assert rows(engine, "SELECT status FROM delivery_status") == [("pending",)]
        d.engine = engine
        with capture_logs() as logs:
            assert d.dispatch_due(wait=10) == 1
        assert [e["event"] for e in logs if "database" in e["event"]] == [
            "delivery_database_reachable"]
    finally:
        d.close()
        away.dispose()
    assert rows(engine, "SELECT status FROM delivery_status") == [("delivered",)]
    assert len(out.read_text().splitlines()) == 1


def test_a_full_disk_leaves_no_half_line(engine: sa.Engine, db_url: str, sample: Path,
                                         tmp_path: Path, monkeypatch: Any) -> None:
    """A full disk takes the part of a line that fits and fails the rest (ENOSPC): that
    part used to stay, and the retry appended the whole line after it, so the file held a
    line that was no JSON. The disk is modelled at the OS boundary: os.write writes what
    "fits" (4096 bytes, as a filled tmpfs did) for real, then fails with a real ENOSPC.
    The failed attempt leaves the file as it was; the retry, with space, appends whole
    lines."""
    import errno

    import daemon.notify.jsonl as jsonl_mod

    clock = FakeClock()
    out = tmp_path / "events.jsonl"
    config = config_for(tmp_path, db_url, jsonl_channel(out))
    paths = copy_statements(sample, tmp_path / "statements", 2)
    ing = ingestor(engine, config, clock)
    ing.process_paths([str(paths[0])])
    d = Dispatcher(engine, config, clock=clock, instance_id="test:1")
    try:
        assert d.dispatch_due(wait=10) == 1
        before = out.read_bytes()
        real_write = jsonl_mod.os.write
        space = [4096]

        def full_disk(fd: int, data: Any) -> int:
            if not space[0]:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = real_write(fd, data[:space[0]])
            space[0] -= n
            return n

        monkeypatch.setattr(jsonl_mod.os, "write", full_disk)
        ing.process_paths([str(paths[1])])
        clock.advance(10)
        d.dispatch_due(wait=10)
        (row,) = rows(engine, "SELECT status, last_error FROM delivery_status "
                              "WHERE status <> 'delivered'")
        assert row[0] == "failed" and "No space left on device" in row[1]
        assert space[0] == 0, "the line was longer than the space left"
        assert out.read_bytes() == before
        monkeypatch.undo()
        clock.advance(3600)
        d.dispatch_due(wait=10)
    finally:
        d.close()
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [b["event_id"] for b in lines] == [
        r[0] for r in rows(engine, "SELECT event_id FROM change_log ORDER BY event_id")]

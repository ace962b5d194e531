"""Tests for daemon.watch: the debounce as a pure state machine (fake clock, scripted
events), then the real watchdog (inotify) in tmp_path driving a real daemon on both
databases through what editors and tools really do."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import unprivileged
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from daemon import ingest
from daemon.config import Config, WatchConfig, parse_config
from daemon.debounce import OPEN_WRITE_SECONDS, PathCollector
from daemon.files import PathFilter
from daemon.service import Service
from daemon.systemd import SystemdNotifier
from daemon.watch import (
    FolderWatcher,
    WatchHandler,
    WatchPlan,
    count_folders,
    plan_observer,
)

TIMEOUT = 30.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Stats:
    """A scripted os.stat for the stability check: path -> (size, mtime)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[int, int] | None] = {}

    def __call__(self, path: str) -> tuple[int, int] | None:
        return self.values.get(path)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def collector(clock: Clock, stats: Stats) -> PathCollector:
    return PathCollector(200, clock=clock, stat=stats)


# ---- the debounce -------------------------------------------------------------------------

def test_complete_write_is_ready_after_the_debounce(collector: PathCollector,
                                                    clock: Clock) -> None:
    """A closed-after-write path comes out once debounce_ms passed without another event."""
    collector.touch("/w/a.md", complete=True)
    clock.advance(0.19)
    assert collector.take(0).paths == []
    clock.advance(0.02)
    assert collector.take(0).paths == ["/w/a.md"]
    assert collector.pending_count() == 1  # in the worker's hands until done()
    collector.done()
    assert collector.pending_count() == 0


def test_every_event_restarts_the_debounce(collector: PathCollector, clock: Clock) -> None:
    """Writes with pauses shorter than the debounce keep the path waiting."""
    for _ in range(5):
        collector.touch("/w/a.md", complete=False)
        clock.advance(0.15)
        assert collector.take(0).paths == []
    collector.touch("/w/a.md", complete=True)
    clock.advance(0.21)
    assert collector.take(0).paths == ["/w/a.md"]


def test_write_without_close_waits_for_a_stable_size_and_mtime(
        collector: PathCollector, clock: Clock, stats: Stats) -> None:
    """Without a close event the path must keep its size and mtime from its last event
    through a debounce window, and through a further one each time it did not (polling
    observers, writers that keep the file open)."""
    stats.values["/w/a.md"] = (10, 1)
    collector.touch("/w/a.md", complete=False)  # first look: at the event
    stats.values["/w/a.md"] = (20, 2)  # still growing, no event seen
    clock.advance(0.21)
    assert collector.take(0).paths == []
    stats.values["/w/a.md"] = (30, 3)
    clock.advance(0.21)
    assert collector.take(0).paths == []
    clock.advance(0.21)
    assert collector.take(0).paths == ["/w/a.md"]
    stats.values["/w/b.md"] = (10, 1)
    collector.touch("/w/b.md", complete=False)
    clock.advance(0.21)
    assert collector.take(0).paths == ["/w/b.md"], "held still since its event: one window"


def test_move_ends_come_out_together(collector: PathCollector, clock: Clock) -> None:
    """A move's source waits for its destination, so the pair is one batch and the move
    is never seen as a deletion."""
    collector.touch("/w/new.md", complete=True)
    collector.touch("/w/old.md", complete=True, link="/w/new.md")
    clock.advance(0.1)
    collector.touch("/w/new.md", complete=False)  # the editor touches it again
    clock.advance(0.15)
    assert collector.take(0).paths == []  # old.md is due, but new.md is not
    clock.advance(0.1)
    collector.touch("/w/new.md", complete=True)
    clock.advance(0.21)
    assert sorted(collector.take(0).paths) == ["/w/new.md", "/w/old.md"]


def test_take_waits_for_the_earliest_due_path() -> None:
    """take(timeout) blocks only until the first path settles, not the whole timeout."""
    real = PathCollector(50)
    real.touch("/w/a.md", complete=True)
    started = time.monotonic()
    assert real.take(TIMEOUT).paths == ["/w/a.md"]
    assert time.monotonic() - started < TIMEOUT / 2


def test_wake_ends_a_waiting_take() -> None:
    """wake() makes a blocked take() return an empty batch (the worker is stopping)."""
    real = PathCollector(50)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(real.take(TIMEOUT)))
    thread.start()
    while not thread.is_alive():
        pass
    real.wake()
    thread.join(TIMEOUT / 2)
    assert not thread.is_alive() and not got[0]


def test_flush_returns_only_complete_writes(collector: PathCollector) -> None:
    """At stop, paths known to be complete are handed over at once; a write in
    progress is left for the next start."""
    collector.touch("/w/done.md", complete=True)
    collector.touch("/w/half.md", complete=False)
    assert collector.flush() == ["/w/done.md"]
    assert collector.pending_count() == 1


def test_reconcile_requests_and_folders_come_out_at_once(collector: PathCollector) -> None:
    """Folder changes and reconcile requests are not debounced; duplicates collapse."""
    collector.request_reconcile("overflow")
    collector.request_reconcile("overflow")
    collector.folder_moved_in("/w/new")
    collector.folder_moved_in("/w/new")
    collector.folder_gone("/w/old")
    batch = collector.take(0)
    assert batch.reconcile == ["overflow"]
    assert batch.dirs_added == ["/w/new"]
    assert batch.dirs_gone == ["/w/old"]
    assert not collector.take(0)


def test_take_paths_gives_settled_paths_but_never_jumps_folder_work(
        collector: PathCollector, clock: Clock) -> None:
    """A live stream asks for more settled paths without waiting; folder work and
    reconcile requests must come first (through take), so then it gets none."""
    collector.touch("/w/a.md", complete=True)
    collector.touch("/w/b.md", complete=True)
    assert collector.take_paths() == [], "not settled yet"
    clock.advance(1)
    collector.touch("/w/c.md", complete=True)
    assert sorted(collector.take_paths()) == ["/w/a.md", "/w/b.md"]
    clock.advance(1)
    collector.folder_gone("/w/old")
    assert collector.take_paths() == []
    batch = collector.take(0)
    assert batch.dirs_gone == ["/w/old"] and batch.paths == ["/w/c.md"]
    collector.touch("/w/d.md", complete=True)
    clock.advance(1)
    collector.request_reconcile("overflow")
    assert collector.take_paths() == []
    assert collector.take(0).paths == ["/w/d.md"]


# ---- the handler: scripted watchdog events (the fake OS event source) ------------------------

@pytest.fixture
def handler(collector: PathCollector, tmp_path: Path) -> WatchHandler:
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path / "w",)), collector)
    return watcher.handler


def routed(handler: WatchHandler, clock: Clock, *events: Any) -> list[str]:
    for ev in events:
        handler.dispatch(ev)
    clock.advance(1)
    return sorted(handler.collector.take(0).paths)


def test_atomic_save_over_an_ignored_temp_name(handler: WatchHandler, clock: Clock,
                                               tmp_path: Path) -> None:
    """gedit-style save: the temp file is ignored, the rename's destination is looked at
    (PatternMatchingEventHandler would have dropped the whole move)."""
    w = tmp_path / "w"
    assert routed(handler, clock,
                  FileCreatedEvent(f"{w}/.goutputstream-X1"),
                  FileClosedEvent(f"{w}/.goutputstream-X1"),
                  FileMovedEvent(f"{w}/.goutputstream-X1", f"{w}/a.md")) == [f"{w}/a.md"]


def test_vim_backup_rename_keeps_the_original_path(handler: WatchHandler, clock: Clock,
                                                   tmp_path: Path) -> None:
    """Vim renames a.md to a.md~ and writes a new a.md: only a.md is looked at."""
    w = tmp_path / "w"
    assert routed(handler, clock,
                  FileMovedEvent(f"{w}/a.md", f"{w}/a.md~"),
                  FileCreatedEvent(f"{w}/a.md"), FileModifiedEvent(f"{w}/a.md"),
                  FileClosedEvent(f"{w}/a.md"), FileDeletedEvent(f"{w}/a.md~")
                  ) == [f"{w}/a.md"]


def test_reads_hidden_folders_and_other_patterns_are_ignored(
        handler: WatchHandler, clock: Clock, tmp_path: Path) -> None:
    """Opens and read-only closes (our own reads), hidden folders and non-matching names
    never queue anything."""
    w = tmp_path / "w"
    assert routed(handler, clock,
                  FileOpenedEvent(f"{w}/a.md"), FileClosedNoWriteEvent(f"{w}/a.md"),
                  FileClosedEvent(f"{w}/.git/x.md"), FileClosedEvent(f"{w}/a.png"),
                  FileClosedEvent(f"{w}/a.md.swp"), FileClosedEvent(f"{tmp_path}/elsewhere.md"),
                  ) == []


def test_attribute_change_keeps_the_completion_state(handler: WatchHandler, clock: Clock,
                                                     tmp_path: Path) -> None:
    """chmod/touch on a file at rest is looked at; during a write it does not end it."""
    w = tmp_path / "w"
    assert routed(handler, clock, FileAttribEvent(f"{w}/a.md")) == [f"{w}/a.md"]
    handler.dispatch(FileModifiedEvent(f"{w}/b.md"))
    handler.dispatch(FileAttribEvent(f"{w}/b.md"))
    assert handler.collector._pending[f"{w}/b.md"].complete is False


def test_a_file_its_writer_holds_open_waits_for_the_close(
        handler: WatchHandler, clock: Clock, stats: Stats, tmp_path: Path) -> None:
    """inotify: a file written to and not closed is being written, however long it holds
    still (a writer pausing between pieces): its close ends the write. Without a close, its
    size and mtime must hold still for OPEN_WRITE_SECONDS."""
    a, b = f"{tmp_path}/w/a.md", f"{tmp_path}/w/b.md"
    stats.values[a] = stats.values[b] = (40, 1)  # the first piece, then a pause
    handler.dispatch(FileModifiedEvent(a))
    handler.dispatch(FileModifiedEvent(b))
    clock.advance(1)
    assert handler.collector.take(0).paths == []
    handler.dispatch(FileAttribEvent(a))  # e.g. a chmod meanwhile: the write goes on
    clock.advance(1)
    assert handler.collector.take(0).paths == []
    stats.values[a] = (90, 2)
    handler.dispatch(FileModifiedEvent(a))
    handler.dispatch(FileClosedEvent(a))
    clock.advance(0.21)
    assert handler.collector.take(0).paths == [a]
    clock.advance(OPEN_WRITE_SECONDS - 2.5)
    assert handler.collector.take(0).paths == [], "b: no close yet"
    clock.advance(0.5)
    assert handler.collector.take(0).paths == [b], "b held still that long: taken"


def test_polling_reports_no_close_so_a_write_only_holds_still(
        collector: PathCollector, clock: Clock, stats: Stats, tmp_path: Path) -> None:
    """The polling observer never reports a close: a modified file that held still for a
    debounce window is taken, as before."""
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path / "w",)), collector)
    watcher.plan = WatchPlan("polling")
    a = f"{tmp_path}/w/a.md"
    stats.values[a] = (40, 1)
    watcher.handler.dispatch(FileModifiedEvent(a))
    clock.advance(0.21)
    assert collector.take(0).paths == [a]


def test_folder_events_become_folder_work(handler: WatchHandler, collector: PathCollector,
                                          tmp_path: Path) -> None:
    """Folders moved within the tree are listed; folders moved out/deleted are looked up.
    A created folder is no folder work: watchdog reports the files in it."""
    w = tmp_path / "w"
    handler.dispatch(DirMovedEvent(f"{w}/a", f"{w}/b"))
    handler.dispatch(DirCreatedEvent(f"{w}/c"))
    handler.dispatch(DirDeletedEvent(f"{w}/d"))
    handler.dispatch(DirMovedEvent(f"{w}/e", f"{w}/.cache"))
    batch = collector.take(0)
    assert batch.dirs_added == [f"{w}/b"], "not the created one, nor one moved to .cache"
    assert batch.dirs_gone == [f"{w}/a", f"{w}/d", f"{w}/e"]


def test_a_stopped_emitters_last_word_is_neither_an_error_nor_a_rescan(
        collector: PathCollector, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """watchdog's emitter, stopped by a reload that changed [watch], may log an error as it
    reads one last event. That is no lost event (the new watcher runs already): no error
    line, no reconcile; a real warning of watchdog still asks for one."""
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path,)), collector)
    watcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="watchdog"):
            logging.getLogger("watchdog.observers.inotify").error(
                "InotifyEmitter.queue_events() called when the thread is inactive")
            assert collector.take(timeout=0).reconcile == []
            assert caplog.records == []
            logging.getLogger("watchdog.observers.inotify").warning(
                "Inotify queue overflowed; filesystem events were lost")
            assert collector.take(timeout=0).reconcile == [
                "watcher: Inotify queue overflowed; filesystem events were lost"]
    finally:
        watcher.stop()


def test_handler_error_requests_a_reconcile(collector: PathCollector, tmp_path: Path) -> None:
    """An exception inside the handler is logged and turned into a reconcile, never
    raised into watchdog's dispatcher thread (which would stop all events)."""
    def broken(path: str) -> bool:
        raise OSError("stale file handle")

    h = WatchHandler(collector, broken, lambda p: True)
    h.dispatch(FileClosedEvent(str(tmp_path / "a.md")))
    assert collector.take(0).reconcile == ["event handler error"]


# ---- inotify limits -------------------------------------------------------------------------

def test_plan_observer() -> None:
    """inotify when the folders fit the limit (minus a margin and what is in use);
    polling when configured or when they do not fit, with the reason."""
    assert plan_observer(False, 100, 8192, 0).mode == "inotify"
    assert plan_observer(False, 100, None, 0).mode == "inotify"
    assert plan_observer(True, 1, 8192, 0).mode == "polling"
    tight = plan_observer(False, 8000, 8192, 0)
    assert tight.mode == "polling" and "max_user_watches = 8192" in (tight.reason or "")
    assert plan_observer(False, 5000, 8192, 3000).mode == "polling"


def test_count_folders_skips_hidden_ones(tmp_path: Path) -> None:
    """One watch per folder that would be watched; hidden folders are not descended."""
    for d in ("a/b", "a/c", ".git/objects", "d"):
        (tmp_path / d).mkdir(parents=True)
    accept = PathFilter(("*.md",))
    assert count_folders([tmp_path], accept, recursive=True) == 5
    assert count_folders([tmp_path], accept, recursive=False) == 1


def test_count_folders_leaves_out_what_cannot_be_listed(tmp_path: Path) -> None:
    """A folder the daemon may not list cannot get an inotify watch either: counting it
    would be a shortfall that switches to polling and blames the inotify limit. Counted
    by a process bound by permissions (for root: one without its DAC capabilities)."""
    for d in ("a/b", "locked/inner", "d"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "locked").chmod(0)
    try:
        proc = subprocess.run(
            [*unprivileged(), sys.executable, "-c",
             "import sys; from pathlib import Path; from daemon.files import PathFilter; "
             "from daemon.watch import count_folders; "
             "print(count_folders([Path(sys.argv[1])], PathFilter(('*.md',)), True))",
             str(tmp_path)], capture_output=True, text=True, timeout=60)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert (proc.returncode, proc.stdout) == (0, "4\n"), proc.stderr  # root, a, a/b, d


def test_low_inotify_limit_falls_back_to_polling_loudly(tmp_path: Path) -> None:
    """When the watches would not fit, the watcher polls instead and logs why."""
    from structlog.testing import capture_logs

    (tmp_path / "w" / "a").mkdir(parents=True)
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path / "w",)), PathCollector(50),
                            limits=lambda: (2, 1))
    with capture_logs() as logs:
        plan = watcher.start()
    try:
        assert plan.mode == "polling"
        assert type(watcher.observer).__name__ == "PollingObserver"
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["inotify_limit"]
    finally:
        watcher.stop()


# ---- the real watcher driving a real daemon --------------------------------------------------

BASE = """---
date: '2025-07-25'
published_time: 2025-07-25 16:05:19-04:00
source_url: {url}
tags: articles
title: {title}
---

{body}
"""
BODY = ("Today the White House published a memo that outlines in detail how the "
        "legislation invests in rural healthcare across the country.\n\n"
        "The memo lists the programs that benefit and the states that gain the most.\n")


def doc(n: int | str, body: str = BODY, title: str = "Rural healthcare investment") -> str:
    return BASE.format(url=f"https://www.whitehouse.gov/articles/2025/07/s{n}/", title=title,
                       body=body)


class Live:
    """A daemon (Service) running in this process on a real database with the real
    observer; the main loop runs in a thread."""

    def __init__(self, config: Config, **kwargs: Any) -> None:
        self.config = config
        self.service = Service(config, load_config=lambda: self.config,
                               notifier=kwargs.pop("notifier", SystemdNotifier({})), **kwargs)
        self.thread: threading.Thread | None = None

    def start(self) -> Live:
        self.service.start()
        self.thread = threading.Thread(target=self.service.serve, name="test-main")
        self.thread.start()
        return self

    def stop(self) -> None:
        self.service.request_stop()
        if self.thread is not None:
            self.thread.join(TIMEOUT)
        self.service.stop()

    @property
    def engine(self) -> sa.Engine:
        assert self.service.engine is not None
        return self.service.engine

    def q(self, sql: str, **params: Any) -> list[sa.Row[Any]]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))

    def revisions(self, n: int | str) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self.q(
            "SELECT revision_number, kind FROM statement_revisions WHERE source_url = :u "
            "ORDER BY revision_number", u=f"https://www.whitehouse.gov/articles/2025/07/s{n}/")]

    def body(self, n: int | str) -> str:
        return self.q("SELECT body FROM current_statements WHERE source_url = :u",
                      u=f"https://www.whitehouse.gov/articles/2025/07/s{n}/")[0][0]

    def wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def settle(self, root: Path) -> None:
        """Everything done before this call has been ingested: a marker file written now
        is ingested after every earlier event (inotify keeps order), then the worker is
        idle."""
        marker = f"marker{time.monotonic_ns()}"
        # words of its own: a new file with the words of a statement whose deletion is
        # still settling would be taken for that statement moved and re-addressed
        (root / f"{marker}.md").write_text(doc(marker, body=f"Marker {marker}.",
                                               title=marker))
        self.wait_for(lambda: bool(self.revisions(marker)), "the marker to be ingested")
        assert self.service.wait_idle(TIMEOUT)

    def errors(self) -> list[Any]:
        return self.q("SELECT path, reason FROM ingest_errors")

    def wait_for_statements(self, root: Path, prefix: str, n: int) -> None:
        """Wait until n statements written by doc(f"{prefix}...") are current, let the
        daemon settle, and check that no file was rejected."""
        self.wait_for(lambda: self.q(
            "SELECT count(*) FROM current_statements WHERE source_url LIKE :u",
            u=f"%/s{prefix}%")[0][0] == n, f"{n} statements")
        self.settle(root)
        assert self.errors() == []

    def deleted(self) -> list[Any]:
        return self.q("SELECT source_url FROM statement_revisions WHERE kind = 'deleted'")


def live_config(tmp_path: Path, db_url: str, roots: list[Path], debounce_ms: int = 150,
                extra: dict[str, Any] | None = None) -> Config:
    for r in roots:
        r.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"watch": {"paths": [str(r) for r in roots],
                                      "debounce_ms": debounce_ms},
                            "database": {"url": db_url}}
    for key, value in (extra or {}).items():
        data.setdefault(key, {}).update(value)
    return parse_config(data, base=tmp_path, environ={})


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> Iterator[tuple[Live, Path]]:
    """A running daemon watching tmp_path/watched, which already holds statement s1."""
    root = tmp_path / "watched"
    root.mkdir()
    (root / "s1.md").write_text(doc(1))
    (root / "keep.md").write_text(doc("keep"))  # the folder never becomes empty
    daemon = Live(live_config(tmp_path, db_url, [root])).start()
    assert daemon.revisions(1) == [(1, "added")]
    try:
        yield daemon, root
    finally:
        daemon.stop()


EDITED = BODY.replace("rural healthcare", "rural hospitals")


def assert_one_revision_with_final_text(daemon: Live) -> None:
    assert daemon.revisions(1) == [(1, "added"), (2, "revised")]
    assert "rural hospitals" in daemon.body(1)
    assert daemon.errors() == []
    assert daemon.deleted() == []


def test_atomic_save_by_rename(live: tuple[Live, Path]) -> None:
    """Temp file written in the same folder, then os.replace() over the target: one
    revision with the final text."""
    daemon, root = live
    tmp = root / ".s1.md.tmp-1234"
    tmp.write_text(doc(1, EDITED))
    os.replace(tmp, root / "s1.md")
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


def test_vim_backup_rename_write(live: tuple[Live, Path]) -> None:
    """Vim's backupcopy=no: rename to s1.md~, write a new s1.md, delete the backup."""
    daemon, root = live
    os.rename(root / "s1.md", root / "s1.md~")
    with open(root / "s1.md", "w") as fh:
        fh.write(doc(1, EDITED))
    os.unlink(root / "s1.md~")
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


def test_sed_in_place(live: tuple[Live, Path]) -> None:
    """sed -i: a temp file sedXXXXXX in the same folder renamed over the original."""
    daemon, root = live
    tmp = root / "sedAb12Cd"
    tmp.write_text(re.sub("rural healthcare", "rural hospitals",
                          (root / "s1.md").read_text()))
    os.rename(tmp, root / "s1.md")
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


def write_in_pieces(path: Path, text: str, cuts: list[int], pause: float) -> None:
    """Write `text` through one open descriptor, up to each cut in turn, flushing and
    pausing `pause` seconds after each piece (a writer that writes as it goes)."""
    with open(path, "w") as fh:
        done = 0
        for cut in cuts:
            fh.write(text[done:cut])
            fh.flush()
            done = cut
            time.sleep(pause)


def test_in_place_rewrite_in_several_writes(live: tuple[Live, Path]) -> None:
    """One open, several writes with pauses shorter than the debounce, then close: the
    half-written file (even one cut inside the front matter) is never read."""
    daemon, root = live
    text = doc(1, EDITED)
    # the writer's pause: a third of the debounce (not a wait)
    write_in_pieces(root / "s1.md", text, [40, len(text) // 2, len(text) - 10, len(text)],
                    pause=0.05)
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


def test_slow_writer_pausing_longer_than_the_debounce(live: tuple[Live, Path]) -> None:
    """A writer that pauses between its pieces for longer than the debounce (a slow
    download, a generator writing as it goes) holds the half-written file still: it is
    never read, and the write is one revision with the final text once the file is
    closed — not a revision per piece."""
    daemon, root = live
    text = doc(1, EDITED)
    # the writer's pause: over three debounce windows (not a wait)
    write_in_pieces(root / "s1.md", text, [len(text) // 2, len(text) * 3 // 4, len(text)],
                    pause=0.5)
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


@pytest.mark.parametrize("events", ["seen", "lagging"])
def test_a_rewrite_begun_after_the_path_was_taken_is_not_read_half_written(
        live: tuple[Live, Path], monkeypatch: pytest.MonkeyPatch, events: str) -> None:
    """A file saved, then rewritten by a slow writer that starts after the worker took
    the path and before it read it (in a burst, reading lags the take by up to a second):
    the half it reads is not recorded, whether the watcher has reported the rewrite by
    then or its events still lag behind (a burst keeps its thread busy); the rewrite,
    once closed, is one revision."""
    daemon, root = live
    target = root / "s1.md"
    rewrite = doc(1, EDITED + "\nA second paragraph added by the rewrite, long enough "
                  "that half of the file ends inside the body of the statement.\n" * 3)
    real_prepare_many = ingest.prepare_many
    writer: list[Any] = []
    watcher = daemon.service.watcher
    assert watcher is not None
    real_dispatch = watcher.handler.dispatch
    released = threading.Event()

    def dispatch_later(event: Any) -> None:
        # the watcher's thread, busy with a burst, reaches the rewrite's events late
        if writer and os.fsdecode(event.src_path) == str(target):
            released.wait(TIMEOUT)
        real_dispatch(event)

    def rewrite_begins() -> None:
        # the worker took the path: a writer truncates it now and writes half
        writer.append(open(target, "w"))  # noqa: SIM115 - closed by the test below
        writer[0].write(rewrite[:len(rewrite) // 2])
        writer[0].flush()
        if events == "seen":
            daemon.wait_for(lambda: daemon.service.collector.waiting() > 0,
                            "the watcher to see the rewrite")

    def read_after_a_rewrite_began(jobs: Any, *args: Any, **kwargs: Any) -> Any:
        def jobs_then_rewrite() -> Iterator[Any]:
            for job in jobs:
                if job is not None and job[0] == str(target) and not writer:
                    rewrite_begins()
                yield job
        stream = jobs_then_rewrite()
        return real_prepare_many(stream if kwargs.get("stream_size") is not None
                                 else list(stream), *args, **kwargs)

    ingestor = daemon.service.ingestor
    assert ingestor is not None
    real_process = ingestor.process_paths
    applied = threading.Event()

    def process_then_say_so(*args: Any, **kwargs: Any) -> Any:
        try:
            return real_process(*args, **kwargs)
        finally:
            if writer:
                applied.set()

    monkeypatch.setattr(ingest, "prepare_many", read_after_a_rewrite_began)
    monkeypatch.setattr(ingestor, "process_paths", process_then_say_so)
    if events == "lagging":
        monkeypatch.setattr(watcher.handler, "dispatch", dispatch_later)
    target.write_text(doc(1, EDITED))
    assert applied.wait(TIMEOUT)  # what the worker read of the half-written file is done
    released.set()
    writer[0].write(rewrite[len(rewrite) // 2:])
    writer[0].close()
    daemon.settle(root)
    assert daemon.revisions(1) == [(1, "added"), (2, "revised")]
    assert daemon.body(1).strip() == rewrite.split("---\n", 2)[2].strip()
    assert daemon.errors() == []


def _reconcile_now(daemon: Live) -> None:
    """Ask for a rescan and wait until it has run."""
    before = daemon.service.reconciles
    daemon.service.collector.request_reconcile("test")
    daemon.wait_for(lambda: daemon.service.reconciles > before, "the reconcile")


def test_a_reconcile_leaves_a_file_being_written_to_its_close(live: tuple[Live, Path]) -> None:
    """A rescan (hourly, after an overflow, at start) while a slow writer is half-way
    through a file it has open: the half is not recorded; the write is one revision once
    the file is closed."""
    daemon, root = live
    text = doc(1, EDITED + "\nA second paragraph that the slow writer adds at the end.\n")
    with open(root / "s1.md", "w") as fh:
        fh.write(text[:len(text) * 2 // 3])
        fh.flush()
        daemon.wait_for(lambda: daemon.service.collector.waiting() > 0,
                        "the watcher to see the write")
        _reconcile_now(daemon)
        fh.write(text[len(text) * 2 // 3:])
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)
    assert "slow writer adds at the end" in daemon.body(1)


def test_a_file_renamed_while_a_reconcile_runs_is_no_change(tmp_path: Path,
                                                            db_url: str) -> None:
    """A rescan that runs while a rename's events still wait out the debounce leaves both
    ends to the live path, which sees one move: no deletion, no revision."""
    root = tmp_path / "watched"
    root.mkdir()
    (root / "s1.md").write_text(doc(1))
    (root / "keep.md").write_text(doc("keep"))
    # a long debounce: the rescan surely runs while the rename waits
    daemon = Live(live_config(tmp_path, db_url, [root], debounce_ms=3000)).start()
    try:
        os.rename(root / "s1.md", root / "s1-renamed.md")
        daemon.wait_for(lambda: daemon.service.collector.waiting() == 2,
                        "the watcher to see both ends of the rename")
        _reconcile_now(daemon)
        daemon.settle(root)
        assert daemon.revisions(1) == [(1, "added")]
        assert daemon.deleted() == []
        assert daemon.q("SELECT path FROM files WHERE path LIKE '%s1%'") == [
            (str(root / "s1-renamed.md"),)]
    finally:
        daemon.stop()


def test_rewrite_with_reopens(live: tuple[Live, Path]) -> None:
    """Truncate-and-write, then two appends, each its own open/close, quickly: one
    revision with the final text."""
    daemon, root = live
    text = doc(1, EDITED)
    third = len(text) // 3
    (root / "s1.md").write_text(text[:third])
    for part in (text[third:2 * third], text[2 * third:]):
        with open(root / "s1.md", "a") as fh:
            fh.write(part)
    daemon.settle(root)
    assert_one_revision_with_final_text(daemon)


def test_renames_and_moves_inside_the_tree_are_no_change(live: tuple[Live, Path]) -> None:
    """Renaming a file, moving it into a subfolder and renaming that folder record
    nothing: same statement, one revision, no deletion."""
    daemon, root = live
    os.rename(root / "s1.md", root / "renamed.md")
    (root / "sub").mkdir()
    os.rename(root / "renamed.md", root / "sub" / "renamed.md")
    os.rename(root / "sub", root / "sub2")
    daemon.settle(root)
    assert daemon.revisions(1) == [(1, "added")]
    assert daemon.deleted() == []
    paths = [r[0] for r in daemon.q("SELECT path FROM files WHERE source_url = :u",
                                    u="https://www.whitehouse.gov/articles/2025/07/s1/")]
    assert paths == [str(root / "sub2" / "renamed.md")]


def test_two_files_that_swap_names_are_no_change(live: tuple[Live, Path]) -> None:
    """mv s1.md t.md; mv keep.md s1.md; mv t.md keep.md: each statement is at the other's
    old path, none is deleted and restored (the file that now carries another statement
    is not taken for the last file of its old one before the other is applied)."""
    daemon, root = live
    os.rename(root / "s1.md", root / "t.md")
    os.rename(root / "keep.md", root / "s1.md")
    os.rename(root / "t.md", root / "keep.md")
    daemon.settle(root)
    assert daemon.revisions(1) == [(1, "added")] and daemon.revisions("keep") == [(1, "added")]
    assert daemon.deleted() == []
    assert sorted(tuple(r) for r in daemon.q(
        "SELECT path, source_url FROM files WHERE path NOT LIKE '%marker%'")) == [
        (str(root / "keep.md"), "https://www.whitehouse.gov/articles/2025/07/s1/"),
        (str(root / "s1.md"), "https://www.whitehouse.gov/articles/2025/07/skeep/")]


def test_folder_moved_in_and_out(live: tuple[Live, Path], tmp_path: Path) -> None:
    """A folder moved in from outside is ingested; moved out again, its statements are
    deleted (the watched folder itself is still there)."""
    daemon, root = live
    outside = tmp_path / "outside" / "batch"
    outside.mkdir(parents=True)
    for i in range(10, 15):
        (outside / f"s{i}.md").write_text(doc(i))
    os.rename(outside, root / "batch")
    daemon.settle(root)
    assert all(daemon.revisions(i) == [(1, "added")] for i in range(10, 15))
    os.rename(root / "batch", tmp_path / "outside" / "back")
    daemon.settle(root)
    assert all(daemon.revisions(i) == [(1, "added"), (2, "deleted")] for i in range(10, 15))
    assert daemon.revisions(1) == [(1, "added")]


def test_a_folder_moved_out_takes_its_rejected_files_off_the_errors(
        live: tuple[Live, Path], tmp_path: Path) -> None:
    """`ingest_errors` lists the files failing now. A folder moved out of the tree (to an
    archive) holding rejected files took its statements' files along but left its
    rejections listed, under paths that no longer exist, until the next reconcile (an hour
    by default); folders archived one after the other piled them up in the meantime."""
    daemon, root = live
    batch = root / "batch"
    (batch / "sub").mkdir(parents=True)
    (batch / "s20.md").write_text(doc(20))
    (batch / "draft.md").write_text("no front matter yet\n")
    (batch / "sub" / "notes.md").write_text("---\ntitle: [unclosed\n---\nbody\n")
    daemon.settle(root)
    assert sorted(r.reason for r in daemon.errors()) == ["invalid_yaml", "no_front_matter"]
    reconciles = daemon.service.reconciles
    os.rename(batch, tmp_path / "archived")
    daemon.settle(root)
    assert daemon.errors() == []
    assert daemon.revisions(20) == [(1, "added"), (2, "deleted")]
    assert daemon.service.reconciles == reconciles  # the live path did it, not a rescan


def test_a_name_that_is_not_utf8_is_rejected_while_running(live: tuple[Live, Path],
                                                           tmp_path: Path) -> None:
    """A file whose name is not UTF-8 written while the daemon runs is rejected (listed
    under its path with the bytes as \\xNN), not a failed batch; a folder of such a name
    moved in and out again fails nothing either; renamed, the file is ingested and its
    rejection is gone."""
    daemon, root = live
    bad = root / os.fsdecode(b"bad\xff.md")
    folder = tmp_path / "outside" / os.fsdecode(b"dir\xfe")
    with capture_logs() as logs:
        bad.write_text(doc(20))
        folder.mkdir(parents=True)
        (folder / "s21.md").write_text(doc(21))
        os.rename(folder, root / folder.name)
        daemon.settle(root)
        assert sorted(tuple(r) for r in daemon.errors()) == [
            (f"{root}/bad\\xff.md", "bad_file_name"),
            (f"{root}/dir\\xfe/s21.md", "bad_file_name")]
        os.rename(root / folder.name, tmp_path / "outside" / "back")
        bad.rename(root / "s20.md")
        daemon.settle(root)
    assert daemon.revisions(20) == [(1, "added")] and daemon.revisions(21) == []
    assert f"{root}/bad\\xff.md" not in {r[0] for r in daemon.errors()}
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


def test_delete_then_restore(live: tuple[Live, Path]) -> None:
    """Deleting a file records `deleted`; writing it again records `restored`."""
    daemon, root = live
    (root / "s1.md").unlink()
    daemon.settle(root)
    assert daemon.revisions(1) == [(1, "added"), (2, "deleted")]
    (root / "s1.md").write_text(doc(1))
    daemon.settle(root)
    assert daemon.revisions(1) == [(1, "added"), (2, "deleted"), (3, "restored")]


def test_burst_of_a_thousand_files(live: tuple[Live, Path], tmp_path: Path) -> None:
    """1,000 files copied in at once all arrive, none rejected."""
    daemon, root = live
    source = tmp_path / "source"
    source.mkdir()
    for i in range(1000):
        (source / f"b{i}.md").write_text(doc(f"b{i}"))
    (root / "burst").mkdir()
    for i in range(1000):
        shutil.copyfile(source / f"b{i}.md", root / "burst" / f"b{i}.md")
    daemon.wait_for_statements(root, "b", 1000)
    assert daemon.q("SELECT count(*) FROM statement_revisions WHERE source_url LIKE '%/sb%'"
                    )[0][0] == 1000


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_nested_tree_copied_in_arrives_whole(tmp_path: Path, db_url: str,
                                             polling: bool) -> None:
    """A tree of nested folders copied in (cp -r): files written into a folder before its
    watch exists and after both arrive, each once, though created folders are not listed
    by redline itself (either observer reports what they hold)."""
    root = tmp_path / "watched"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "keep.md").write_text(doc("keep"))
    daemon = Live(live_config(tmp_path, db_url, [root],
                              extra={"watch": {"polling": polling}})).start()
    try:
        assert daemon.service.watcher is not None
        assert daemon.service.watcher.plan.mode == ("polling" if polling else "inotify")
        _copy_tree_in(daemon, root, tmp_path)
    finally:
        daemon.stop()


def _copy_tree_in(daemon: Live, root: Path, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    for i in range(300):
        folder = source / f"y{i % 3}" / f"m{i % 5}" / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"t{i}.md").write_text(doc(f"t{i}"))
    shutil.copytree(source, root / "tree")
    daemon.wait_for_statements(root, "t", 300)
    assert daemon.q("SELECT count(*), count(DISTINCT source_url) FROM statement_revisions "
                    "WHERE source_url LIKE '%/st%'")[0] == (300, 300)
    assert daemon.q("SELECT count(*) FROM files WHERE path LIKE :p",
                    p=f"{root}/tree/%")[0][0] == 300


def test_a_database_error_mid_stream_holds_what_the_stream_took(
        live: tuple[Live, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The database fails while a live stream is under way: the batch is held and
    retried together with the paths the stream had already taken from the collector, not
    left to a reconcile (stubbed out here, so only the retry can ingest them)."""
    from daemon.ingest import IngestCounts

    daemon, root = live
    ingestor = daemon.service.ingestor
    assert ingestor is not None
    real = ingestor.process_paths
    reconciles: list[str] = []
    monkeypatch.setattr(daemon.service, "reconcile",
                        lambda reason, startup=False: reconciles.append(reason) or IngestCounts())
    calls: list[list[str]] = []

    def fails_once(paths: list[str], stop: Any = None, more: Any = None,
                   leaving: Any = (), busy: Any = None) -> IngestCounts:
        calls.append(list(paths))
        if len(calls) > 1:
            return real(paths, stop=stop, more=more, leaving=leaving, busy=busy)
        (root / "late.md").write_text(doc("late"))  # settles while the stream is open
        assert more is not None, "a live batch is a stream"
        taken: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not taken and time.monotonic() < deadline:
            taken = list(more())
        assert taken == [str(root / "late.md")]
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(ingestor, "process_paths", fails_once)
    (root / "early.md").write_text(doc("early"))
    daemon.wait_for(lambda: bool(daemon.revisions("early") and daemon.revisions("late")),
                    "both files, through the retry")
    assert sorted(calls[1]) == sorted([str(root / "early.md"), str(root / "late.md")])
    assert daemon.revisions("late") == [(1, "added")]
    assert reconciles == ["database reachable again"]


def test_watched_folder_that_disappears_is_not_a_deletion(
        live: tuple[Live, Path], tmp_path: Path) -> None:
    """A watched folder moved away (unmounted) deletes nothing and is reported; when it
    comes back, watching resumes and new files are ingested."""
    daemon, root = live
    away = tmp_path / "away"
    os.rename(root, away)
    daemon.wait_for(lambda: "MISSING" in daemon.service.status_text(), "the missing report")
    assert daemon.service.wait_idle(TIMEOUT)
    assert daemon.deleted() == []
    assert daemon.q("SELECT count(*) FROM current_statements WHERE deleted_at IS NULL"
                    )[0][0] == 2
    os.rename(away, root)
    daemon.wait_for(lambda: "MISSING" not in daemon.service.status_text(), "the folder back")
    (root / "s2.md").write_text(doc(2))
    daemon.settle(root)
    assert daemon.revisions(2) == [(1, "added")]
    assert daemon.deleted() == []


def test_a_watched_folder_replaced_by_another_at_once_is_watched_again(
        live: tuple[Live, Path], tmp_path: Path) -> None:
    """Another folder put at the watched path in one step (a file system unmounted and
    mounted again, as with a tmpfs; here the folder moved away and another moved in, which
    a non-root test can do): the watch stayed on the old folder, no change under the path
    was seen any more, and nothing said so. The daemon notices that the folder at the path
    is another one, watches it and reconciles it."""
    daemon, root = live
    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / "s1.md").write_text(doc(1, EDITED))  # changed while "unmounted"
    os.rename(root, tmp_path / "away")
    os.rename(other, root)
    daemon.wait_for(lambda: daemon.revisions(1) == [(1, "added"), (2, "revised")],
                    "the reconcile of the new folder")
    (root / "s2.md").write_text(doc(2))
    daemon.settle(root)
    assert daemon.revisions(2) == [(1, "added")]
    assert daemon.deleted() == []


def test_watched_folder_removed_file_by_file_is_not_a_deletion(
        live: tuple[Live, Path]) -> None:
    """rm -rf of a watched folder: the per-file delete events are held, not applied."""
    daemon, root = live
    shutil.rmtree(root)
    daemon.wait_for(lambda: "MISSING" in daemon.service.status_text(), "the missing report")
    assert daemon.service.wait_idle(TIMEOUT)
    assert daemon.deleted() == []


def test_a_file_renamed_and_readdressed_at_once_is_one_metadata_revision(
        live: tuple[Live, Path]) -> None:
    """`mv s1.md s1b.md` and, within the debounce, its source_url rewritten in place (as
    `sed -i` does: a new file renamed over it): the same statement, a `metadata` revision
    changing source_url, the old URL kept — no `deleted`, no `added`."""
    daemon, root = live
    os.rename(root / "s1.md", root / "s1b.md")
    tmp = root / ".sedXYZ"
    tmp.write_text(doc("1b"))
    os.rename(tmp, root / "s1b.md")
    daemon.settle(root)
    assert daemon.deleted() == []
    assert daemon.q("""SELECT r.revision_number, r.kind, r.source_url
                       FROM statement_revisions r JOIN current_statements c
                       ON c.statement_id = r.statement_id WHERE c.source_url = :u
                       ORDER BY r.revision_number""",
                    u="https://www.whitehouse.gov/articles/2025/07/s1b/") == [
        (1, "added", "https://www.whitehouse.gov/articles/2025/07/s1/"),
        (2, "metadata", "https://www.whitehouse.gov/articles/2025/07/s1b/")]
    assert daemon.q("SELECT count(*) FROM statement_urls WHERE url = :u",
                    u="https://www.whitehouse.gov/articles/2025/07/s1/")[0][0] == 1


def test_a_watched_folder_given_as_a_symbolic_link(tmp_path: Path, db_url: str) -> None:
    """A watched folder configured as a symbolic link to a folder (/srv/statements ->
    /data/statements, a release's `current`): edits inside are seen live (watchdog alone
    watches the link itself, and sees nothing inside), stored under the path as
    configured, as a pass stores them; when the link is switched to another folder (a
    release deployed), that folder is watched and reconciled."""
    r1 = tmp_path / "releases" / "r1"
    r1.mkdir(parents=True)
    (r1 / "s1.md").write_text(doc(1))
    (r1 / "keep.md").write_text(doc("keep", body="Words of another statement."))
    root = tmp_path / "current"
    root.symlink_to(r1)
    daemon = Live(live_config(tmp_path, db_url, [root])).start()
    try:
        (root / "s1.md").write_text(doc(1, EDITED))
        daemon.settle(root)  # its marker is written through the link: a live event
        assert daemon.revisions(1) == [(1, "added"), (2, "revised")]
        r2 = tmp_path / "releases" / "r2"
        shutil.copytree(r1, r2)
        (r2 / "s1.md").write_text(doc(1, EDITED.replace("hospitals", "clinics")))
        (tmp_path / "next").symlink_to(r2)
        os.replace(tmp_path / "next", root)  # the release switched at once
        daemon.settle(root)
        assert daemon.revisions(1) == [(1, "added"), (2, "revised"), (3, "revised")]
        (root / "s2.md").write_text(doc(2))
        daemon.settle(root)
        assert daemon.revisions(2) == [(1, "added")]
        assert daemon.deleted() == [] and daemon.errors() == []
        assert {os.path.dirname(r[0]) for r in daemon.q("SELECT path FROM files")} == {
            str(root)}
    finally:
        daemon.stop()


def test_a_statement_held_under_a_missing_folder_is_never_taken_for_a_move(
        tmp_path: Path, db_url: str) -> None:
    """A watched folder is removed file by file (its deletions held) while a file with the
    same words and a new URL appears in another watched folder: an addition, not the held
    statement re-addressed — the folder may come back; and when it does, nothing was
    lost."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "s1.md").write_text(doc(1))
    (second / "keep.md").write_text(doc("keep", body="Words of another statement."))
    daemon = Live(live_config(tmp_path, db_url, [first, second])).start()
    try:
        shutil.copytree(first, tmp_path / "away")
        shutil.rmtree(first)  # one delete event per file: s1's deletion settles, held
        daemon.wait_for(lambda: str(first / "s1.md") in daemon.service.live.gone,
                        "s1's deletion settling")
        (second / "s9.md").write_text(doc(9))  # meanwhile: s1's words, a new URL
        daemon.settle(second)
        daemon.wait_for(lambda: "MISSING" in daemon.service.status_text(), "the report")
        assert daemon.revisions(9) == [(1, "added")]
        assert daemon.revisions(1) == [(1, "added")] and daemon.deleted() == []
        os.rename(tmp_path / "away", first)
        daemon.wait_for(lambda: "MISSING" not in daemon.service.status_text(), "it back")
        daemon.settle(second)
        assert daemon.revisions(1) == [(1, "added")] and daemon.deleted() == []
    finally:
        daemon.stop()


def test_emptied_folder_filled_again_applies_only_the_real_deletion(
        live: tuple[Live, Path], tmp_path: Path) -> None:
    """Every file moved out of a watched folder (an unmount, a careless mv): the deletions
    are held. When the files come back without one of them, a reconcile runs on its own:
    that one is deleted, the others are unchanged, and the folder's error is cleared."""
    daemon, root = live
    hold = tmp_path / "hold"
    hold.mkdir()
    for f in list(root.iterdir()):
        os.rename(f, hold / f.name)
    daemon.wait_for(lambda: str(root) in daemon.service.folder_errors, "the held deletions")
    assert daemon.service.wait_idle(TIMEOUT)
    assert daemon.deleted() == []
    before = daemon.service.reconciles
    os.rename(hold / "s1.md", tmp_path / "aside.md")  # the one that really went
    for f in list(hold.iterdir()):
        os.rename(f, root / f.name)
    daemon.wait_for(lambda: daemon.service.reconciles > before, "the reconcile")
    assert daemon.service.wait_idle(TIMEOUT)
    assert len(daemon.deleted()) == 1 and daemon.revisions(1)[-1] == (2, "deleted")
    assert daemon.revisions("keep") == [(1, "added")]
    assert daemon.service.folder_errors == {}


def test_own_inotify_watches_are_counted(tmp_path: Path) -> None:
    """inotify_watches() sees the watches a real inotify observer set up (one per
    folder), so a shortfall can be noticed."""
    from daemon.watch import inotify_watches

    for d in ("a/b", "c"):
        (tmp_path / "w" / d).mkdir(parents=True)
    before = inotify_watches()
    assert before is not None
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path / "w",)), PathCollector(50))
    watcher.start()
    try:
        assert inotify_watches() == before + 4
        assert watcher.verify() is True
    finally:
        watcher.stop()


def test_silently_unwatched_subfolders_switch_to_polling(tmp_path: Path) -> None:
    """If fewer folders got a watch than exist (watchdog skips a subfolder it cannot
    watch without a word), a second look confirms it and the watcher polls instead."""
    from structlog.testing import capture_logs

    for d in ("a/b", "c"):
        (tmp_path / "w" / d).mkdir(parents=True)
    watcher = FolderWatcher(WatchConfig(paths=(tmp_path / "w",)), PathCollector(50),
                            limits=lambda: (None, 0), own_watches=lambda: 2)
    with capture_logs() as logs:
        assert watcher.start().mode == "inotify"
        try:
            assert watcher.verify() is True and watcher.suspect  # one look: maybe a race
            assert watcher.verify() is False  # the second look confirms it
            assert watcher.plan.mode == "polling"
            assert type(watcher.observer).__name__ == "PollingObserver"
        finally:
            watcher.stop()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["inotify_limit"]
    assert "only 2 of 4 folders got an inotify watch" in errors[0]["reason"]


class TouchLog(PathCollector):
    """A collector that also remembers every path an event touched, in order."""

    def __init__(self) -> None:
        super().__init__(50)
        self.touched: list[str] = []
        self.seen = threading.Condition()

    def touch(self, path: str, complete: bool | None, link: str | None = None,
              writing: bool = False) -> None:
        super().touch(path, complete, link, writing)
        with self.seen:
            self.touched.append(path)
            self.seen.notify_all()

    def wait_for(self, path: str) -> list[str]:
        """The paths touched up to `path` (bounded wait: it is written by the test)."""
        with self.seen:
            assert self.seen.wait_for(lambda: path in self.touched, TIMEOUT), path
            return self.touched[:self.touched.index(path)]


def test_folders_moved_out_of_the_tree_do_not_keep_their_watches(tmp_path: Path) -> None:
    """watchdog 7.1 keeps the inotify watches of a folder moved out of the watched tree
    for as long as that folder lives, and reports what happens in it under its old path.
    A daemon whose folders are archived (`mv 2025-01 /archive/`) month after month would
    pile them up towards fs.inotify.max_user_watches, and the extra watches would hide
    from verify() a subfolder left unwatched. The second look at the excess renews the
    watches: the tree's folders only, and no event from the archive any more."""
    from daemon.watch import inotify_watches

    root, archive = tmp_path / "w", tmp_path / "archive"
    (root / "keep").mkdir(parents=True)
    archive.mkdir()
    collector = TouchLog()
    watcher = FolderWatcher(WatchConfig(paths=(root,)), collector)
    before = inotify_watches()
    assert before is not None
    watcher.start()
    try:
        for cycle in range(20):  # a month's folder, with a day in it, filled and archived
            day = root / f"month{cycle}" / "day"
            day.mkdir(parents=True)
            (day / "s.md").write_text(doc(cycle))
            collector.wait_for(str(day / "s.md"))  # watched by now: its event came
            os.rename(root / f"month{cycle}", archive / f"month{cycle}")
        assert watcher.verify() is True and watcher.suspect  # one look: maybe a race
        assert watcher.verify() is False  # renewed: the caller reconciles
        assert watcher.plan.mode == "inotify"
        assert inotify_watches() == before + 2  # w and w/keep; 40 were held before
        assert watcher.verify() is True and not watcher.suspect
        # the archive is no longer watched; the tree still is (inotify keeps the order)
        renewed = len(collector.touched)
        (archive / "month3" / "day" / "s.md").write_text(doc(3, "Archived and edited."))
        marker = root / "keep" / "marker.md"
        marker.write_text(doc("marker"))
        assert collector.wait_for(str(marker))[renewed:] == []
    finally:
        watcher.stop()


def test_a_root_inside_another_is_not_taken_for_missing_watches(tmp_path: Path) -> None:
    """Watched folders `w` and `w/sub`: watchdog holds one watch for `w/sub`, so counting it
    twice made verify() see a shortfall, log inotify_limit and poll for good."""
    root = tmp_path / "w"
    (root / "sub" / "deeper").mkdir(parents=True)
    watcher = FolderWatcher(WatchConfig(paths=(root, root / "sub")), TouchLog())
    watcher.start()
    try:
        assert watcher.plan.mode == "inotify"
        assert [watcher.verify() for _ in range(3)] == [True, True, True]
        assert watcher.plan.mode == "inotify" and not watcher.suspect
    finally:
        watcher.stop()


_NAME_CHARS = st.sampled_from(list("abx.~#$-_4913[]*?") + ["md", "txt", "swp", "sb-", "\n"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_NAME_CHARS, min_size=1, max_size=8).map("".join),
       st.lists(st.sampled_from(["*.md", "*.txt", "a?c.md", "[ab]*", "*x*", "draft/*", "*",
                                 "a.md", "ab*", "4913"]), min_size=1, max_size=3),
       st.lists(st.sampled_from(["*.draft.md", "x*", "[!a]*.txt", "sub/*.md", "*~", "b",
                                 "*.md"]), max_size=2))
def test_path_filter_is_fnmatch_of_each_pattern(name: str, patterns: list[str],
                                                ignore: list[str]) -> None:
    """The patterns tested together (suffixes, prefixes and whole names without a regex,
    the rest as one regex) decide exactly as fnmatchcase pattern by pattern."""
    import fnmatch

    from daemon.files import BUILTIN_IGNORES

    path = f"/w/sub/{name}"

    def one(p: str) -> bool:
        if "/" in p:
            return fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, "*/" + p)
        return fnmatch.fnmatchcase(name, p)

    want = any(one(p) for p in patterns) and not any(
        one(p) for p in BUILTIN_IGNORES + tuple(ignore))
    assert PathFilter(tuple(patterns), tuple(ignore))(path) == want

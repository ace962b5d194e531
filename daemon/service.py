"""The daemon's life: start-up order, signals, reload, health and stop.

Start-up: migrate, start the watcher (collecting events), reconcile what changed while we
were down, start the live worker (daemon.live: the one thread that writes live changes,
with the same `Ingestor` as `redline ingest`) and the scheduler, and only then READY=1.
The main thread handles signals (as requests), polls for missing watched folders and dead
watches, and keeps systemd's STATUS= line current.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
import structlog

from daemon import reader
from daemon.config import Config, LogConfig
from daemon.debounce import OPEN_WRITE_SECONDS, PathCollector
from daemon.errors import DatabaseError, RedlineError, first_line
from daemon.files import OpenWriters, identity
from daemon.ingest import IngestCounts, Ingestor
from daemon.jobs import (
    Heartbeat,
    Jobs,
    RunnerFactory,
    default_digest,
    default_dispatch,
    write_heartbeat,
)
from daemon.live import MAX_BACKOFF, STOP_BUDGET, TICK, LiveWorker, transient
from daemon.notify.outbox import DeliveryOutbox
from daemon.store import migrate
from daemon.store.engine import make_engine, require_sqlite_file
from daemon.store.schema import events
from daemon.systemd import SystemdNotifier, Watchdog
from daemon.watch import FolderWatcher, inotify_limits, inotify_watches, make_observer

log = structlog.get_logger(__name__)

VERIFY_SECONDS = 60.0  # how often the inotify watches are counted (FolderWatcher.verify)
STARTUP_DB_WAIT = 60.0  # seconds to wait for an unreachable database at start
EXIT_GRACE = 0.2  # after the stop, how long threads that would hold up the exit may take


class _Stopped(Exception):
    """A stop was requested during start-up."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SignalSafeEvent:
    """threading.Event's interface over a re-entrant lock. Python runs a signal handler in
    the main thread between two of its bytecodes, so a handler setting an event may run
    while that thread is inside the same event (the main loop clears and waits on its wake
    event every tick): with Event's plain lock that is a deadlock for ever. Re-entered, the
    handler's set() lands; at worst the interrupted clear() undoes the wake, and the loop
    finds the request one tick later."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._flag:
                self._cond.wait(timeout)
            return self._flag


class SignalInbox:
    """Stop and reload requests: set by signal handlers (or tests), read by the main loop."""

    def __init__(self) -> None:
        self.stop = SignalSafeEvent()
        self.reload = SignalSafeEvent()
        self.wake = SignalSafeEvent()

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload.set()
        self.wake.set()

    def install(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads (Python's default SIGHUP would kill us)."""
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())


class Service:
    """One running daemon. `start()`, then `serve()` until `request_stop()`, then `stop()`."""

    def __init__(self, config: Config, *, load_config: Callable[[], Config],
                 notifier: SystemdNotifier,
                 configure_logs: Callable[[LogConfig], None] | None = None,
                 observer_factory: Callable[[str], Any] = make_observer,
                 limits: Callable[[], tuple[int | None, int]] = inotify_limits,
                 own_watches: Callable[[], int | None] = inotify_watches,
                 dispatch_factory: RunnerFactory = default_dispatch,
                 digest_factory: RunnerFactory = default_digest,
                 inbox: SignalInbox | None = None,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.config = config
        self._load_config = load_config
        self.notifier = notifier
        self._configure_logs = configure_logs
        self._observer_factory = observer_factory
        self._limits = limits
        self._own_watches = own_watches
        self._factories = (dispatch_factory, digest_factory)
        self.clock = clock
        self.hostname = socket.gethostname()
        self.instance_id = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started_at = clock()
        self.inbox = inbox or SignalInbox()
        self.stop_requested = self.inbox.stop
        self._reload_requested = self.inbox.reload
        self.wake_main = self.inbox.wake
        self.worker_stop = threading.Event()
        self.ingest_lock = threading.RLock()
        self.collector = PathCollector(config.watch.debounce_ms)
        self._open_writers = OpenWriters()
        self._watching_since_ns = 0  # wall clock: an mtime from then on has its events
        self.engine: sa.Engine | None = None
        self.ingestor: Ingestor | None = None
        self.watcher: FolderWatcher | None = None
        self.jobs: Jobs | None = None
        self._worker: threading.Thread | None = None
        self._watchdog: Watchdog | None = None
        self._watchdog_stop = threading.Event()
        self._main_tick = time.monotonic()
        self._verified = time.monotonic() - VERIFY_SECONDS + 2 * TICK  # first look soon
        self.folder_errors: dict[str, str] = {}
        self._folders_back: set[str] = set()  # folders with an error seen healthy last tick
        self._readable_asked: set[str] = set()  # unreadable folders readable again: asked
        self._reload_error: str | None = None
        self._last_change: dt.datetime | None = None
        self._status = ""
        self.reconciles = 0
        self._changes = 0  # events committed since start
        self.live = LiveWorker(self)
        self.ready = False
        self._stopped = False
        self._db_file: tuple[str, tuple[int, int] | None] | None = None  # SQLite: its identity
        self.exit_status = 0

    def request_stop(self) -> None:
        self.inbox.request_stop()

    def request_reload(self) -> None:
        self.inbox.request_reload()

    # ---- start-up ------------------------------------------------------------------------

    def start(self) -> None:
        """Migrate, watch, reconcile, start the worker and the jobs; then READY=1."""
        self._say("starting: migrating the database")
        if not self.config.database.auto_migrate:  # nothing would create its tables
            require_sqlite_file(self.config.database.url, "`redline db upgrade`")
        self.engine = make_engine(self.config.database.url)
        self._until_database(self._probe)
        self._migrate()
        self._db_file = _sqlite_file(self.engine)
        self._last_change = self._until_database(self._last_event_time)
        self.ingestor = self._make_ingestor(self.config)
        self.watcher = self._make_watcher(self.config)
        self._watching_since_ns = time.time_ns()
        plan = self.watcher.start()  # events from now on are queued, not lost
        self._say(f"starting: reconciling {len(self.watcher.roots)} watched folder(s)")
        self._until_database(lambda: self.reconcile("start-up", startup=True))
        reader.start()  # a burst's first batches are read beside the writer too
        self._worker = threading.Thread(target=self.live.run, name="redline-live", daemon=True)
        self._worker.start()
        self.jobs = Jobs(self.config, self.engine, instance_id=self.instance_id,
                         request_reconcile=self.collector.request_reconcile,
                         heartbeat=self.heartbeat, dispatch_factory=self._factories[0],
                         digest_factory=self._factories[1], clock=self.clock)
        self.jobs.start()
        self.ready = True
        self._status = self.status_text()
        self.notifier.ready(status=self._status)
        self._watchdog = Watchdog(self.notifier, self.healthy, self._watchdog_stop)
        self._watchdog.start()
        log.info("ready", instance=self.instance_id, mode=plan.mode,
                 roots=self.watcher.roots, pid=os.getpid())
        self._beat()

    def _probe(self) -> None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def _migrate(self) -> None:
        assert self.engine is not None
        if self.config.database.auto_migrate:
            migrate.upgrade(self.engine)
        else:
            migrate.require_current(self.engine)

    def _last_event_time(self) -> dt.datetime | None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(events.c.occurred_at))).scalar()
        return value  # type: ignore[no-any-return]

    def _until_database(self, step: Callable[[], Any]) -> Any:
        """Run a start-up step, waiting (with backoff, up to STARTUP_DB_WAIT) while the
        database is unreachable; a stop request ends the wait."""
        give_up = time.monotonic() + STARTUP_DB_WAIT
        delay = 1.0
        while True:
            if self.stop_requested.is_set():
                raise _Stopped
            try:
                return step()
            except sa.exc.DBAPIError as exc:
                if not transient(exc) or time.monotonic() + delay > give_up:
                    raise DatabaseError(f"{_hide(self.config.database.url)}: {first_line(exc)}"
                                        ) from None
                self._say(f"starting: database unreachable ({first_line(exc)}); retrying in "
                          f"{delay:.0f} s")
                log.warning("database_unreachable", error=first_line(exc), retry_in=delay)
                self.stop_requested.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    def _make_ingestor(self, config: Config) -> Ingestor:
        assert self.engine is not None
        return Ingestor(self.engine, config.watch, DeliveryOutbox(config.channels),
                        clock=self.clock, on_commit=self._on_commit)

    def _make_watcher(self, config: Config) -> FolderWatcher:
        return FolderWatcher(config.watch, self.collector, self._observer_factory,
                             self._limits, self._own_watches)

    def _on_commit(self, event_ids: list[int]) -> None:
        self._last_change = self.clock()
        self._changes += len(event_ids)
        if self.jobs is not None:
            self.jobs.wake_dispatch()

    def reconcile(self, reason: str, startup: bool = False) -> IngestCounts:
        """A full rescan of the watched folders with the one-shot ingest's code."""
        assert self.ingestor is not None
        progress = self._startup_progress if startup else None
        started = time.monotonic()
        with self.ingest_lock:
            counts = self.ingestor.scan(progress=progress, busy=self._has_event_waiting)
        self.reconciles += 1
        self.folder_errors = {e.split(":", 1)[0]: e for e in counts.folder_errors}
        self._readable_asked = set()
        for err in counts.folder_errors:
            log.error("watched_folder_error", detail=err)
        log.info("reconciled", reason=reason, seconds=round(time.monotonic() - started, 2),
                 **counts.as_dict())
        return counts

    def _has_event_waiting(self, item: reader.Prepared) -> bool:
        """A path the live path will look at after the rescan: a file being written (read
        now, it may be half of it), or an end of a rename (whose other end it sees too).
        A file written shortly before that a process still holds open for writing is one
        too: its write began before the watcher started (a restart in the middle of it),
        so no event says so, and its close will; it is handed to the live path, which
        waits for that close (or OPEN_WRITE_SECONDS of stillness)."""
        if self.collector.pending(item.path):
            return True
        if item.stat is None or item.sha256 is None \
                or time.time_ns() - item.stat[1] > OPEN_WRITE_SECONDS * 1e9:
            return False
        # at start, written since the watcher started: its events, the close included, are
        # on their way (the rescan keeps the watcher's thread behind), and no one took them
        if self._worker is None and self._watching_since_ns <= item.stat[1] <= time.time_ns():
            log.debug("written_while_read", path=item.path)
        else:
            key = identity(item.path)
            if key is None or key[1] != item.stat[2] or not self._open_writers.holds(key):
                return False
            log.info("held_open_for_writing", path=item.path,
                     detail="recorded once the writer closes it")
        self.recheck_after_write(item.path)
        return True

    def recheck_after_write(self, path: str) -> None:
        """Look at `path` again once the write on it has ended: at its close where the
        observer reports closes (inotify), else once the file holds still."""
        watcher = self.watcher
        self.collector.recheck(path, closes=watcher is not None and
                               watcher.plan.mode == "inotify")

    def _startup_progress(self, done: int, total: int) -> None:
        if self.stop_requested.is_set():
            raise _Stopped
        # a long first scan must not trip systemd's start timeout
        self.notifier.send("EXTEND_TIMEOUT_USEC=30000000",
                           f"STATUS=starting: reconciling, {done}/{total} changed files")

    # ---- the main loop -----------------------------------------------------------------------

    def serve(self) -> None:
        """Handle reload/stop requests, poll roots and health, until a stop is requested."""
        while not self.stop_requested.is_set():
            self.wake_main.wait(TICK)
            self.wake_main.clear()
            self._main_tick = time.monotonic()
            if self.stop_requested.is_set():
                break
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the main loop outlives any one tick
                log.exception("main_loop_error")

    def _tick(self) -> None:
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self.reload()
        if self._database_file_gone():
            return
        self._check_watcher()
        status = self.status_text()
        if status != self._status:
            self._status = status
            self.notifier.status(status)

    def _check_watcher(self) -> None:
        assert self.watcher is not None
        roots = self.watcher.check()
        now = time.monotonic()
        if now - self._verified > (5 * TICK if self.watcher.suspect else VERIFY_SECONDS):
            self._verified = now
            if not self.watcher.verify():
                roots = list(self.watcher.roots)
        if roots:
            self.collector.request_reconcile(f"watch (re)started on {', '.join(roots)}")
        # A folder that was missing or suddenly empty (its deletions held) and holds files
        # again: a reconcile applies what really went meanwhile and clears the error, once
        # the watcher was quiet at two ticks in a row (files moved back in one go are all
        # there). One that stays empty keeps its error, and its statements.
        quiet = self.collector.waiting() == 0
        back = {root for root in self.folder_errors
                if quiet and root in self.watcher.roots and self.watcher.has_files(root)}
        if settled := back & self._folders_back:
            for root in sorted(settled):  # one unreadable at its watch got none: watch now
                self.watcher.rewatch(root)
            self.collector.request_reconcile(
                f"folder has files again: {', '.join(sorted(settled))}")
        self._folders_back = back - settled
        # A folder below a watched one that could not be read (its files kept, unknown,
        # and unwatched: inotify needs read permission too) and can be now, its
        # permissions mended: its root is watched afresh and a reconcile sees what it holds.
        again = sorted(f for f in self.folder_errors if f not in self.watcher.roots
                       and f not in self._readable_asked and _listable(f))
        if again:
            self._readable_asked.update(again)
            for root in sorted({r for r in map(self.watcher.root_of, again) if r}):
                self.watcher.rewatch(root)
            self.collector.request_reconcile(f"folder readable again: {', '.join(again)}")

    def _database_file_gone(self) -> bool:
        """SQLite: the database file was deleted, or another file put at its path (a
        backup restored with `mv`), while the daemon had it open. SQLite goes on writing
        into the file it opened, which no other program can see any more: every change
        recorded from then on would be lost, while STATUS counted it. The daemon stops
        (exit status 1: systemd restarts it on the file now at that path, a new one if
        none, and the start's reconcile catches up)."""
        if self._db_file is None or self.stop_requested.is_set():
            return False
        path, opened = self._db_file
        now = identity(path)
        if now == opened:
            return False
        what = "deleted" if now is None else "replaced by another file"
        log.error("database_file_replaced", path=path, what=what,
                  detail="stopping: what it records would go to a file no one can read; a "
                         "restart opens the file now at that path and catches up")
        self._say(f"stopping: the database file {path} was {what} while open")
        self.exit_status = 1
        self.request_stop()
        return True

    def reload(self) -> None:
        """Re-read the configuration; an invalid file keeps the running one. RELOADING=1
        is always followed by READY=1, whatever happens in between."""
        self.notifier.reloading(status="reloading the configuration")
        try:
            self._reload()
        except RedlineError as exc:
            self._reload_error = str(exc)
            log.error("reload_failed", error=str(exc),
                      detail="kept the previous configuration")
        except Exception as exc:  # noqa: BLE001 - a failed reload must not end the daemon
            self._reload_error = f"{type(exc).__name__}: {exc}"
            log.exception("reload_failed", detail="kept what could be kept")
        self._status = self.status_text()
        self.notifier.ready(status=self._status)

    def _reload(self) -> None:
        new = self._load_config()
        old = self.config
        self._reload_error = None
        if new.database != old.database:
            log.warning("reload_database_ignored",
                        detail="database settings take effect at the next restart")
            new = replace(new, database=old.database)
        if self._configure_logs is not None:
            self._configure_logs(new.log)
        with self.ingest_lock:
            self.ingestor = self._make_ingestor(new)
        if new.watch != old.watch:
            self.collector.debounce = new.watch.debounce_ms / 1000
            watcher = self._make_watcher(new)
            watcher.start()  # before the old one stops: no gap; duplicates are harmless
            old_watcher, self.watcher = self.watcher, watcher
            if old_watcher is not None:
                old_watcher.stop()
            self.collector.request_reconcile("configuration reloaded")
        if self.jobs is not None:
            self.jobs.reload(new)
        self.config = new
        log.info("reloaded", roots=[str(p) for p in new.watch.paths],
                 channels=[c.name for c in new.channels], log_level=new.log.level)

    def idle(self) -> bool:
        """Nothing pending in the watcher and no batch in the worker's hands."""
        return self.collector.pending_count() == 0 and not self.live.gone

    def wait_idle(self, timeout: float) -> bool:
        """Wait (checking every 10 ms, up to `timeout`) until idle()."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # ---- health, status, heartbeat ------------------------------------------------------------

    def healthy(self) -> bool:
        """What the systemd watchdog pings on: the worker, the observer and the scheduler
        threads are alive and the main loop is turning."""
        return bool(self._worker is not None and self._worker.is_alive()
                    and self.watcher is not None and self.watcher.alive()
                    and self.jobs is not None and self.jobs.running
                    and time.monotonic() - self._main_tick < 30 * TICK)

    def status_text(self) -> str:
        watcher = self.watcher
        if watcher is None:
            return "starting"
        n = len(watcher.roots) - len(watcher.missing)
        parts = [f"watching {n} folder(s) ({watcher.plan.mode})"]
        if watcher.plan.mode == "polling" and watcher.plan.reason:
            parts[0] += f": {watcher.plan.reason}"
        if watcher.missing:
            parts.append("MISSING: " + ", ".join(sorted(watcher.missing))
                         + " (statements kept)")
        for root, err in sorted(self.folder_errors.items()):
            if root not in watcher.missing:
                parts.append(err)
        if self.live.db_error:
            parts.append(f"DATABASE UNREACHABLE: {self.live.db_error}; retrying")
        if self._reload_error:
            parts.append(f"reload failed, previous configuration kept: {self._reload_error}")
        if self.jobs is not None:
            for name, how in sorted(self.jobs.failing_channels().items()):
                parts.append(f"DELIVERIES FAILING: channel {name}: {how}")
            if not self.live.db_error:  # an outage is said once, above
                for name, error in sorted(self.jobs.last_error.items()):
                    parts.append(f"JOB FAILING: {name}: {error}")
        if self._last_change:
            parts.append(f"{self._changes} change(s) since start; last change "
                         f"{self._last_change:%Y-%m-%d %H:%M:%S} UTC")
        return "; ".join(parts)

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.instance_id, self.hostname, os.getpid(), self.started_at,
                         self.clock(), watching=bool(self.watcher and self.watcher.watching
                                                     and not self._stopped),
                         status="stopped" if self._stopped else self._status)

    def _beat(self) -> None:
        assert self.engine is not None
        try:
            write_heartbeat(self.engine, self.heartbeat())
        except sa.exc.DBAPIError as exc:
            log.warning("heartbeat_failed", error=first_line(exc))

    def _say(self, status: str) -> None:
        log.info("status", status=status)
        self.notifier.status(status)

    # ---- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """STOPPING=1; stop watching, finish in-flight work, stop the jobs; within 10 s."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        self.notifier.stopping(status="stopping: finishing in-flight changes")
        log.info("stopping")
        self._watchdog_stop.set()
        if self.watcher is not None:
            self.watcher.stop()
        self.worker_stop.set()
        self.collector.wake()
        if self._worker is not None:
            self._worker.join(STOP_BUDGET * 0.75)
        if self.jobs is not None:
            left = max(0.5, STOP_BUDGET - (time.monotonic() - started))
            if not self.jobs.shutdown(left):
                log.warning("jobs_still_running", detail="exiting without them")
        if self.engine is not None:
            if self.ready:
                self._beat()
            self.engine.dispose()
        log.info("stopped", seconds=round(time.monotonic() - started, 2))


def _sqlite_file(engine: sa.Engine) -> tuple[str, tuple[int, int] | None] | None:
    """The path of a SQLite database file and its identity now; None for PostgreSQL or
    an in-memory database."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or db in (None, "", ":memory:") or \
            db.startswith("file:"):
        return None
    path = os.path.abspath(db)
    return path, identity(path)


def _listable(folder: str) -> bool:
    """Whether a folder can be listed now, or is gone (either way a pass can tell)."""
    try:
        with os.scandir(folder):
            return True
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False


def _hide(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def run_daemon(load_config: Callable[[], Config],
               configure_logs: Callable[[LogConfig], None],
               environ: dict[str, str] | None = None) -> int:
    """`redline run`: the daemon in the foreground until SIGTERM/SIGINT; its exit status."""
    inbox = SignalInbox()
    inbox.install()  # first: a SIGHUP during start-up must not kill us
    config = load_config()
    configure_logs(config.log)
    notifier = SystemdNotifier(os.environ if environ is None else environ)
    service = Service(config, load_config=load_config, notifier=notifier,
                      configure_logs=configure_logs, inbox=inbox)
    try:
        service.start()
        service.serve()
    except _Stopped:
        log.info("stopped_during_start_up")
    finally:
        service.stop()
    return service.exit_status


def lingering_threads(grace: float = EXIT_GRACE) -> list[threading.Thread]:
    """The threads the interpreter would wait for at exit that are still alive after
    `grace` seconds: a job of the scheduler's thread pool in the middle of a send (a
    digest to a receiver that holds the request), say.

    Those are the non-daemon threads and the workers of every concurrent.futures thread
    pool: the interpreter joins those at exit even when they are daemon threads (they
    are, when started from one, like APScheduler's, started from its daemon thread)."""
    from concurrent.futures import thread as pool_threads

    pooled = list(getattr(pool_threads, "_threads_queues", {}))  # joined at exit
    # a pool nobody shut down (Apprise keeps one for its sends) is told now, as the
    # interpreter would tell it at exit: its idle workers end, its busy ones stay
    for thread in pooled:
        pool = _pool_of(thread)
        if pool is not None:
            pool.shutdown(wait=False)
    candidates = dict.fromkeys([*(t for t in threading.enumerate() if not t.daemon),
                                *pooled])
    deadline = time.monotonic() + grace
    left = []
    for thread in candidates:
        if thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(thread)
    return left


def _pool_of(thread: threading.Thread) -> Any:
    """The concurrent.futures pool whose worker `thread` is (its first argument is a weak
    reference to it); None if that cannot be told."""
    from concurrent.futures import ThreadPoolExecutor

    args = getattr(thread, "_args", ())
    ref = args[0] if args else None
    pool = ref() if isinstance(ref, weakref.ref) else None
    return pool if isinstance(pool, ThreadPoolExecutor) else None


def exit_without_waiting(status: int) -> None:
    """After the daemon's orderly stop: if threads would hold up the exit, say which and
    end the process now with `status` (os._exit), so a stop takes the budget (8 s) and not
    a receiver's timeout. What they were sending is owed still: a digest's watermark has
    not moved and a delivery stays claimed (released at the next start), so it is sent
    again, with the same delivery id. Returns when no such thread is left.

    Only for the `redline run` process: it ends the process, whoever called it."""
    left = lingering_threads()
    if not left:
        return
    log.warning("exiting_without_threads", threads=[t.name for t in left],
                detail="not waited for; what they were sending is sent again after a start")
    logging.shutdown()  # flushes the log handlers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)

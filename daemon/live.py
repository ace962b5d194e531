"""The live worker: the one thread that writes live changes.

It takes the batches of settled paths from the service's collector and ingests them with
the same `Ingestor` as `redline ingest`. A path found gone waits until the watcher is quiet
before it counts as deleted (a move into a folder inotify was not yet watching shows up
at its new place first). While the database is unreachable it holds the batch and retries
with backoff; when it is back, a reconcile catches up. Reconciles run on this thread too,
so a rescan and a live move never interleave. At stop it drains what is complete.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
import structlog

from daemon.debounce import Batch
from daemon.errors import first_line
from daemon.files import stored_path, walk
from daemon.ingest import IngestCounts
from daemon.reader import Prepared
from daemon.store.schema import files, rejected_files

if TYPE_CHECKING:
    from daemon.service import Service

log = structlog.get_logger("daemon.service")  # one logger name for the daemon's life

TICK = 1.0  # the daemon's period: the main loop's polling, the longest a take waits
MAX_BACKOFF = 30.0  # the longest wait between retries while the database is unreachable
STOP_BUDGET = 8.0  # SIGTERM to exit, leaving systemd's 10 s some headroom
# A deletion waits until it is GONE_SETTLE old and the watcher is quiet (watchdog holds
# every event for 0.5 s while it tries to pair a rename's two halves), at most GONE_GRACE.
GONE_SETTLE = 1.0
GONE_GRACE = 5.0
STREAM_SECONDS = 5.0  # the longest that settled paths keep joining one live stream


def transient(exc: BaseException) -> bool:
    """The database is unreachable or busy (worth retrying), not a bug."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)


class LiveWorker:
    """The service's live worker (see the module docstring); `run` is the thread's loop."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.gone: dict[str, float] = {}  # paths found gone -> when; see ingest_paths
        self.streamed: list[str] = []  # paths the batch's stream took beyond the batch
        self.taken: dict[str, int] = {}  # paths being ingested -> when taken (time.time_ns)
        self.db_error: str | None = None  # the last error while the database is unreachable

    def run(self) -> None:
        """The worker thread's loop, until the service's worker stop is set; then drain."""
        retry: Batch | None = None
        delay = 1.0
        while not self.service.worker_stop.is_set():
            batch = retry or self.service.collector.take(timeout=0.1 if self.gone else TICK)
            if not batch:
                if self.gone:
                    self._attempt(Batch())
                continue
            outcome = self._attempt(batch)
            if outcome == "retry":  # held with what its stream had taken from the collector
                retry = dataclasses.replace(batch, paths=list(dict.fromkeys(
                    batch.paths + self.streamed)))
                self.service.worker_stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self.service.collector.done()
            retry, delay = None, 1.0
            if outcome == "ok" and self.db_error is not None:
                log.info("database_reachable", detail="reconciling what may have been missed")
                self.db_error = None
                self.service.wake_main.set()
                self.service.collector.request_reconcile("database reachable again")
        if retry is not None:
            self.service.collector.done()  # left to the next start's reconcile
        self._drain()

    def _attempt(self, batch: Batch) -> str:
        """Handle one batch: "ok", "retry" (database unreachable) or "failed" (a bug,
        logged; the batch is dropped and the next reconcile covers it)."""
        self.streamed = []
        try:
            self._handle(batch)
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
            if not transient(exc):
                log.exception("live_ingest_failed",
                              paths=len(batch.paths) + len(self.streamed))
                return "failed"
            if self.db_error is None:
                log.error("database_unreachable", error=first_line(exc),
                          detail="live changes are held and retried")
            self.db_error = first_line(exc)
            self.service.wake_main.set()
            return "retry"
        return "ok"

    def _handle(self, batch: Batch) -> None:
        watcher = self.service.watcher
        assert watcher is not None
        with self.service.ingest_lock:
            if batch.reconcile:
                self.service.reconcile("; ".join(batch.reconcile))
            for folder in batch.dirs_gone:
                for path in self._known_under(folder):
                    self.service.collector.touch(path, complete=True)
            for folder in batch.dirs_added:
                if watcher.folder_ok(folder):
                    for found in walk(folder, watcher.accept, watcher.watch.recursive):
                        self.service.collector.notice(found.path, complete=True)
            if batch.paths:
                self.ingest_paths(batch.paths)
            else:
                self._release_gone()

    def _known_under(self, folder: str) -> list[str]:
        """The paths recorded under a folder that went: its files, and its rejected files
        (listed in ingest_errors until a look finds them gone)."""
        assert self.service.engine is not None
        prefix = stored_path(folder.rstrip(os.sep) + os.sep)
        with self.service.engine.connect() as conn:
            return [path for table in (files, rejected_files)
                    for path in conn.execute(sa.select(table.c.path).where(
                        sa.func.substr(table.c.path, 1, len(prefix)) == prefix)).scalars()]

    def ingest_paths(self, paths: list[str], budget: float | None = None) -> IngestCounts:
        """Ingest the present paths now; a path that is gone waits until the watcher is
        quiet (see GONE_SETTLE), so a file that went away and shows up elsewhere (moved
        into a folder inotify was not watching yet) is seen at its new place first and
        never recorded as deleted."""
        present = self._present(paths)
        counts = self._process(present, budget, stream=budget is None)
        counts.merge(self._release_gone(force=budget is not None))
        return counts

    def _present(self, paths: list[str]) -> list[str]:
        """The paths that exist, each noted with when it was taken (see
        _written_since_taken); the others join `gone` (see ingest_paths)."""
        now = time.monotonic()
        taken = time.time_ns()
        present = []
        for path in dict.fromkeys(paths):
            if os.path.exists(path):
                present.append(path)
                self.taken[path] = taken
                self.gone.pop(path, None)
            else:
                self.gone.setdefault(path, now)
        return present

    def _release_gone(self, force: bool = False) -> IngestCounts:
        """Apply the deletions that waited, once they settled and nothing else is pending
        (or they waited GONE_GRACE). Deletions under a watched folder that is missing or
        suddenly empty are held, never applied."""
        if not self.gone:
            return IngestCounts()
        now = time.monotonic()
        settled = (now - max(self.gone.values()) >= GONE_SETTLE
                   and self.service.collector.waiting() == 0)
        if not (force or settled or now - min(self.gone.values()) > GONE_GRACE):
            return IngestCounts()
        watcher = self.service.watcher
        assert watcher is not None
        paths = list(self.gone)  # cleared only once applied: idle() stays False until then
        present = [p for p in paths if os.path.exists(p)]
        gone, held = self._deletable(paths)
        for root, n in held.items():
            reason = "missing" if not os.path.isdir(root) else "suddenly empty (unmounted?)"
            self.service.folder_errors[root] = f"{root} is {reason}: {n} deletion(s) held"
            log.error("deletions_held", path=root, files=n, reason=reason,
                      detail="statements are kept; a reconcile runs when the folder has files "
                             "again")
        counts = self._process(present + gone)
        for path in paths:
            self.gone.pop(path, None)
        return counts

    def _deletable(self, paths: list[str]) -> tuple[list[str], dict[str, int]]:
        """Of these paths, the gone ones whose watched folder is healthy (holds files), and
        how many gone ones each missing or suddenly empty folder holds back."""
        watcher = self.service.watcher
        assert watcher is not None
        gone: list[str] = []
        held: dict[str, int] = {}
        healthy: dict[str, bool] = {}
        for path in paths:
            root = watcher.root_of(path)
            if root is None or os.path.exists(path):
                continue
            if root not in healthy:
                healthy[root] = watcher.has_files(root)
            if healthy[root]:
                gone.append(path)
            else:
                held[root] = held.get(root, 0) + 1
        return gone, held

    def _process(self, todo: list[str], budget: float | None = None,
                 stream: bool = False) -> IngestCounts:
        """`Ingestor.process_paths` in one stream (the reader keeps reading ahead across
        its transactions), stopping between transactions once a stop is requested or the
        drain's `budget` is spent: a stop is never stuck behind a burst. With `stream`,
        paths that settle meanwhile join it (for at most STREAM_SECONDS, so that folder
        work and reconciles, which wait for the stream to end, never wait long)."""
        ingestor = self.service.ingestor
        assert ingestor is not None
        started = time.monotonic()

        def stop() -> bool:
            if budget is not None:
                return time.monotonic() - started > budget
            return self.service.worker_stop.is_set()

        collector = self.service.collector

        def more() -> list[str]:
            while not stop() and time.monotonic() - started < STREAM_SECONDS:
                paths = collector.take_paths(timeout=collector.debounce)
                if not paths:
                    return []
                if present := self._present(paths):
                    self.streamed += present  # a retry of the batch must include them
                    return present
            return []

        # the deletions still settling: a file among `todo` may be one of them moved and
        # re-addressed (a new name and a new source_url at once), not a new statement —
        # never one held under a missing or empty folder, which may yet come back
        leaving = self._deletable(list(self.gone))[0] if self.gone else []
        # not at stop: a drain takes complete writes before their debounce ran out
        try:
            counts = ingestor.process_paths(todo, stop=stop, more=more if stream else None,
                                            leaving=leaving,
                                            busy=self._written_since_taken if budget is None
                                            else None)
        finally:
            self.taken.clear()
        if counts.left:
            log.warning("ingest_interrupted", left=counts.left,
                        detail="the rest is picked up by the next start's reconcile")
        return counts

    def _written_since_taken(self, item: Prepared) -> bool:
        """Whether a file was written to after the collector handed its path over, so that
        what was read of it may be half of that write (see Ingestor._apply_stream): an
        event for it came since, or its mtime (read with it) is later than half a debounce
        before the path was taken. A path is taken only a debounce after its last event,
        and the write it waited for is older than that: this write's events lag behind (a
        burst keeps the watcher's thread busy). The path is then looked at again once it
        holds still, or once its events say that the write ended. (An mtime later than
        the read, set by hand or from another clock, tells nothing.)"""
        collector = self.service.collector
        if collector.pending(item.path):
            return True
        taken = self.taken.get(item.path)
        if taken is None or item.sha256 is None or item.stat is None or not item.started:
            return False  # not taken by the live path, or nothing was read
        read_at = time.time_ns() - int((time.monotonic() - item.started) * 1e9)
        if taken - collector.debounce * 5e8 < item.stat[1] <= read_at:
            log.debug("written_while_read", path=item.path)
            self.service.recheck_after_write(item.path)
            return True
        return False

    def _drain(self) -> None:
        """At stop: ingest every path whose write is complete, without the debounce."""
        paths = self.service.collector.flush()
        if not paths and not self.gone:
            return
        try:
            counts = self.ingest_paths(paths, budget=STOP_BUDGET / 2)
            log.info("drained", paths=len(paths), **counts.as_dict())
        except Exception as exc:  # noqa: BLE001
            log.error("drain_failed", paths=len(paths), error=first_line(exc),
                      detail="the next start's reconcile picks them up")

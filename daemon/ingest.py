"""The one path from "this file may have changed" to a committed change.

Used by `redline ingest`, the live watcher and the reconcile job alike. Reading, hashing,
parsing and rendering (`prepare`) happen outside any transaction; `apply` decides identity
and calls `classify_change` inside the transaction that writes the revision, its event, the
file record, the search row and the outbox rows together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from daemon.changes import Change, Version, classify_change
from daemon.config import WatchConfig
from daemon.document import Rejection
from daemon.files import PathFilter, stored_path
from daemon.notify.outbox import DeliveryOutbox
from daemon.reader import Job, Prepared, prepare_many
from daemon.store import records
from daemon.store.engine import Checkpointer
from daemon.store.schema import files, rejected_files
from daemon.survey import IngestCounts, read_known, survey

log = structlog.get_logger(__name__)

BATCH_FILES = 400
BATCH_SECONDS = 1.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


TRANSIENT_RETRIES = 5
_TRANSIENT_PGCODES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def is_transient(exc: sa.exc.DBAPIError) -> bool:
    """A conflict that a retry of the whole transaction resolves."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _TRANSIENT_PGCODES:
        return True
    return "database is locked" in str(exc.orig)


# SQLSTATE classes of a change the database refuses for what it holds, not for its state:
# data exceptions (22: a NUL character, an invalid value) and program limits (54: an index
# entry or a tsvector too large). Retrying cannot help; connection errors are not these.
_REFUSED_CLASSES = ("22", "54")


def refused_by_database(exc: sa.exc.DBAPIError) -> bool:
    """The database refused the data of the change (retrying it cannot help)."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in _REFUSED_CLASSES


class Ingestor:
    """Applies prepared files to the database, one transaction per change (or per batch)."""

    def __init__(self, engine: Engine, watch: WatchConfig, outbox: DeliveryOutbox | None = None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 on_commit: Callable[[list[int]], None] | None = None) -> None:
        self.engine = engine
        self.watch = watch
        self.accept = PathFilter(watch.patterns, watch.ignore)
        self.outbox = outbox or DeliveryOutbox(())
        self.clock = clock
        self.on_commit = on_commit

    # ---- single paths: the watcher's entry point -------------------------------------

    def process_paths(self, paths: Sequence[str],
                      stop: Callable[[], bool] | None = None,
                      more: Callable[[], Sequence[str]] | None = None,
                      leaving: Iterable[str] = (),
                      busy: Callable[[Prepared], bool] | None = None) -> IngestCounts:
        """Look at these paths now: present ones first and oldest first (so a move is never
        a deletion, and the newest of several files carrying one URL wins). `stop` is asked
        between transactions; once it says yes, the paths not yet applied are left (to the
        next reconcile) and `counts.left` says how many. `more`, when given, is asked for
        further paths each time the reading runs out of them (the daemon's settled paths
        during a burst): they join the same stream, so reading never stops and starts
        again between the batches of a burst; an empty answer ends the stream. `leaving`
        names paths known to be gone whose deletion is applied later (the daemon's
        settling deletions): with the paths here that are gone, they tell a file moved
        and re-addressed from a new statement (see `apply`). `busy` tells files written to
        again since their paths were handed over (the daemon's): what was read of them may
        be half a write, and is left out (see _apply_stream)."""
        counts = IngestCounts()
        gone: list[str] = []
        first = self._jobs(paths, with_known=True, gone=gone)
        moves = self._moves([*gone, *leaving], len(first) - len(gone))
        if more is None:
            self._apply_stream(prepare_many(first), counts, stop=stop,
                               total=lambda: len(first), moves=moves, busy=busy)
            return counts
        taken = [len(first)]

        def stream() -> Iterator[Job | None]:
            # further paths are read on the reader's feeding thread, which must not wait
            # for the write lock: their stored hashes are not looked up (a file touched
            # but unchanged is parsed, then found unchanged by its hash)
            jobs = first
            while jobs:
                yield from jobs
                yield None  # `more` may wait: what was read so far goes on meanwhile
                jobs = self._jobs(more(), with_known=False)
                taken[0] += len(jobs)

        self._apply_stream(prepare_many(stream(), stream_size=len(first)), counts, stop=stop,
                           total=lambda: taken[0], moves=moves, busy=busy)
        return counts

    def _jobs(self, paths: Sequence[str], with_known: bool,
              gone: list[str] | None = None) -> list[Job]:
        """The paths as jobs, present ones first and oldest first; `gone`, when given,
        receives the paths that are not there (from the same stat)."""
        order = {p: _present_oldest_first(p)
                 for p in dict.fromkeys(os.path.abspath(p) for p in paths)}
        wanted = sorted(order, key=order.__getitem__)
        if gone is not None:
            gone += [p for p in wanted if order[p][0]]
        known = self._known_hashes(wanted) if with_known else {}
        return [(p, self.watch.max_file_bytes, known.get(p)) for p in wanted]

    def _known_hashes(self, paths: list[str]) -> dict[str, str]:
        """The stored SHA-256 of these paths, in one query per 500 paths (looked up by
        their stored form, `stored_path`)."""
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(paths), 500):
                names = {stored_path(p): p for p in paths[i:i + 500]}
                found.update((names[p], sha) for p, sha in conn.execute(
                    sa.select(files.c.path, files.c.file_sha256)
                    .where(files.c.path.in_(list(names)))))
        return found

    # ---- full passes: `redline ingest` and reconcile ---------------------------------

    def scan(self, roots: Iterable[str] | None = None,
             progress: Callable[[int, int], None] | None = None,
             stop: Callable[[], bool] | None = None, empty_ok: bool = False,
             busy: Callable[[Prepared], bool] | None = None) -> IngestCounts:
        """One pass over the watched folders: ingest what changed, notice what is gone.
        `stop` is asked between transactions, as in process_paths; `empty_ok`: see
        survey; `busy`: see _apply_stream (the daemon's rescan leaves the paths with an
        event waiting to its live path: a file being written, both ends of a rename)."""
        with self.engine.connect() as conn:
            known, known_rejected = read_known(conn.exec_driver_sql)
        found = survey(self.watch, roots, known, known_rejected, self.accept, empty_ok)
        counts = found.counts
        jobs = [(f.path, self.watch.max_file_bytes,
                 known.get(stored_path(f.path), (None,) * 4)[3]) for f in found.todo]
        total = len(jobs) + len(found.gone)
        moves = self._moves(found.gone, len(jobs))
        self._apply_stream(prepare_many(jobs), counts, found.gone, lambda: total, progress,
                           stop, moves, busy)
        if counts.left:
            return counts
        if found.stale:
            with self.engine.begin() as conn:
                conn.execute(rejected_files.delete().where(
                    rejected_files.c.path.in_(found.stale)))
        return counts

    def _moves(self, gone: list[str], arriving: int) -> dict[tuple[str, str], int]:
        """Statements leaving with the `gone` paths, by their words, when files arrive in
        the same pass (records.leaving_statements); nothing to look up otherwise."""
        if not gone or not arriving:
            return {}
        with self.engine.connect() as conn:
            return records.leaving_statements(conn, list(dict.fromkeys(map(stored_path, gone))))

    # ---- applying ----------------------------------------------------------------------

    def _apply_stream(self, prepared: Generator[Prepared | None, None, None],
                      counts: IngestCounts, gone: Sequence[str] = (),
                      total: Callable[[], int] = lambda: 0,
                      progress: Callable[[int, int], None] | None = None,
                      stop: Callable[[], bool] | None = None,
                      moves: dict[tuple[str, str], int] | None = None,
                      busy: Callable[[Prepared], bool] | None = None) -> None:
        """Apply files as they are read, in transactions of up to BATCH_FILES files or
        BATCH_SECONDS, or of what was read when the reading has nothing ready (None);
        then the `gone` paths (deleted since the last pass). `moves`: see `apply`.

        A file (or a path gone) that is `busy` when its transaction is applied is left
        out: a writer began on it after its path was handed over, maybe before it was read
        (in a burst the reading lags by up to a second), or is at work on it while a
        rescan reads it, so what was read may be a half-written file. The daemon looks at
        the path again once that write is complete."""
        done = 0
        batch: list[Prepared] = []
        started = time.monotonic()
        with contextlib.closing(prepared):  # an error or Ctrl-C here ends the reading now
            for item in prepared:
                if item is not None:
                    batch.append(item)
                    if len(batch) < BATCH_FILES and time.monotonic() - started <= BATCH_SECONDS:
                        continue
                elif not batch:
                    continue
                if stop is not None and stop():
                    counts.left = total() - done
                    return
                done += len(batch)
                self._apply_batch(_not_busy(batch, busy), counts, moves)
                batch = []
                started = time.monotonic()
                if progress:
                    progress(done, total())
        batch.extend(Prepared(p, None) for p in gone)
        self._apply_batch(_not_busy(batch, busy), counts, moves)
        if progress:
            progress(total(), total())

    def _apply_batch(self, batch: list[Prepared], counts: IngestCounts,
                     moves: dict[tuple[str, str], int] | None = None) -> None:
        if not batch:
            return
        attempt = 0
        while True:
            try:
                # a retried transaction starts from the moves as they were before it
                left = dict(moves or {})
                outcomes, event_ids = self._apply_in_transaction(batch, left)
                if moves:
                    moves.clear()
                    moves.update(left)
                break
            except sa.exc.DBAPIError as exc:
                if is_transient(exc) and attempt < TRANSIENT_RETRIES:
                    # a deadlock or serialization conflict with another instance, or a
                    # busy SQLite: the transaction rolled back whole; do it again
                    attempt += 1
                    log.warning("ingest_retry", error=str(exc.orig).strip()[:200],
                                attempt=attempt)
                    time.sleep(min(2.0, 0.05 * 2 ** attempt))
                    continue
                if len(batch) == 1:
                    if refused_by_database(exc):
                        self._refused(batch[0], exc, counts)
                        return
                    raise
                # isolate the file that failed: one transaction each
                for item in batch:
                    self._apply_batch([item], counts, moves)
                return
        Checkpointer.nudge_for(self.engine)
        for outcome in outcomes:
            counts.count(outcome)
        if event_ids and self.on_commit:
            self.on_commit(event_ids)

    def _refused(self, item: Prepared, exc: sa.exc.DBAPIError, counts: IngestCounts) -> None:
        """The database refused this one file's change (PostgreSQL refuses what SQLite
        stores: a path too long for its index, say). It used to fail the whole pass, and
        the daemon, taking it for an outage, held every later change while it retried it
        for ever. The file is rejected instead (`database_refused`, with the server's
        words) and the pass goes on; where even the rejection cannot be stored (the path
        is the problem), it is counted and logged only, and looked at again next pass."""
        error = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        log.error("ingest_refused", path=item.path, error=error)
        if item.stat is None:
            return
        rejected = dataclasses.replace(item, version=None, rejection=Rejection(
            "database_refused", f"the database refused this file: {error}"))
        try:
            outcomes, _events = self._apply_in_transaction([rejected])
        except sa.exc.DBAPIError as again:
            if not refused_by_database(again):
                raise
            outcomes = ["files", "rejected"]
        for outcome in outcomes:
            counts.count(outcome)

    def _apply_in_transaction(self, batch: list[Prepared],
                              moves: dict[tuple[str, str], int] | None = None,
                              ) -> tuple[list[str], list[int]]:
        outcomes: list[str] = []
        with self.engine.begin() as conn:
            changes = records.ChangeSet(conn)
            changes.prefetch((p.path for p in batch),
                             (p.version.source_url for p in batch if p.version))
            applied: list[tuple[Prepared, list[str]]] = []
            orphans: list[tuple[int, list[str]]] = []  # statements a file stopped carrying
            for item in batch:
                left: list[int] = []
                kinds = self.apply(changes, item, left, moves)
                applied.append((item, kinds))
                orphans += [(sid, kinds) for sid in left]
            # only now, with every file of the batch applied, is such a statement without a
            # file: two files that swapped their statements (or a row of files each taking
            # the next one's) move them, they delete and restore none
            for sid, kinds in orphans:
                if deleted := self._maybe_delete(changes, sid, self.clock()):
                    if kinds == ["unchanged"]:
                        kinds.clear()
                    kinds += deleted
            logged = []
            for item, kinds in applied:
                if item.stat is not None:
                    outcomes.append("files")
                outcomes.extend(kinds)
                if kinds != ["unchanged"] and kinds:
                    logged.append((item, kinds))
            events = changes.flush()
            self.outbox.enqueue_many(conn, events, self.clock())
        committed = time.monotonic()
        for item, kinds in logged:  # ms: from starting to read the file to the commit
            log.info("ingested", path=item.path, kind=",".join(kinds),
                     url=item.version.source_url if item.version else None,
                     ms=round((committed - item.started) * 1000, 1) if item.started else None,
                     reason=item.rejection.reason if item.rejection else None)
        return outcomes, [e.event_id for e in events]

    def apply(self, changes: records.ChangeSet, item: Prepared, left: list[int],
              moves: dict[tuple[str, str], int] | None = None) -> list[str]:
        """Apply one prepared file to the batch's state; return its outcome kinds.

        `moves` holds the statements whose every file is gone in this pass, by their words:
        a new file with a URL no statement has and the same words as one of them is that
        statement moved and re-addressed — a `metadata` revision changing `source_url`,
        the old URL kept as an alias — not a deletion and an addition (SPEC §3). Each is
        taken once.

        A file that carried one statement and now carries another may have been that
        statement's last file: the statement is added to `left`, for the caller to decide
        once the whole batch is applied (two files that swapped statements leave none)."""
        now = self.clock()
        row = changes.file(item.path)
        if item.stat is None and item.rejection is None:
            changes.clear_rejection(item.path)
            if row is None:
                return []
            changes.drop_file(item.path, now)
            return self._maybe_delete(changes, row.statement_id, now)
        stat = item.stat
        if item.rejection is not None:
            changes.record_rejection(item.path, item.rejection.reason, item.rejection.message,
                                     stat, item.sha256, now)
            return ["rejected"]
        assert stat is not None and item.sha256 is not None
        changes.clear_rejection(item.path)
        if row is not None and (item.same_bytes or row.file_sha256 == item.sha256):
            if (row.size, row.mtime_ns, row.inode) != stat:
                changes.put_file(records.FileRecord(
                    item.path, row.statement_id, row.source_url, *stat, item.sha256), now)
            return ["unchanged"]
        new = item.version
        assert new is not None
        target = changes.statement_for_url(new.source_url)
        prev = row.statement_id if row else None
        kinds: list[str] = []
        if target is None and prev is not None and row is not None and \
                row.source_url != new.source_url and self._url_moved(changes, prev, new):
            changes.add_alias(prev, new.source_url)
            target = prev
        if target is None and prev is None and moves:
            target = self._moved_here(changes, moves, new)
        if target is None:
            head = changes.new_statement(new.source_url, new, item.sha256, item.path, now)
            changes.add_revision(head, Change("added", ()), new, item.sha256, item.path, now)
            kinds.append("added")
        else:
            head = changes.head(target)
            change = classify_change(head.version, new)
            if head.deleted:
                change = Change("restored", change.changed_fields if change else ())
            elif change is not None and row is None and \
                    changes.moved_file(target, stat[1], item.sha256):
                change = None  # an older file of the statement renamed: not written
            if change is not None:
                changes.add_revision(head, change, new, item.sha256, item.path, now)
                kinds.append(change.kind)
                if head.source_url != new.source_url:  # a URL it had before, found as its
                    changes.add_alias(head.statement_id, new.source_url)  # alias: current again
        changes.put_file(records.FileRecord(
            item.path, head.statement_id, new.source_url, *stat, item.sha256), now)
        if prev is not None and prev != head.statement_id:
            left.append(prev)
        return kinds or ["unchanged"]

    @staticmethod
    def _moved_here(changes: records.ChangeSet, moves: dict[tuple[str, str], int],
                    new: Version) -> int | None:
        """The leaving statement this new file is, re-addressed to its URL (see apply)."""
        sid = moves.pop((new.title_key, new.body_key), None)
        if sid is None or changes.head(sid).deleted:
            return None
        changes.add_alias(sid, new.source_url)
        return sid

    def _url_moved(self, changes: records.ChangeSet, statement_id: int, new: Version) -> bool:
        """A file's source_url changed in place: the same statement when no other file
        still carries the old URL and the words are unchanged (SPEC §3)."""
        if changes.file_counts.get(statement_id, 0) > 1:
            return False
        old = changes.head(statement_id).version
        return old.title_key == new.title_key and old.body_key == new.body_key

    def _maybe_delete(self, changes: records.ChangeSet, statement_id: int | None,
                      now: dt.datetime) -> list[str]:
        """The last file carrying a statement disappeared: record `deleted`."""
        if statement_id is None or changes.file_counts.get(statement_id, 0) > 0:
            return []
        head = changes.head(statement_id)
        if head.deleted:
            return []
        changes.add_revision(head, Change("deleted", ()), head.version, head.content_sha256,
                             head.path, now)
        return ["deleted"]


def _not_busy(batch: list[Prepared], busy: Callable[[Prepared], bool] | None
              ) -> list[Prepared]:
    return batch if busy is None else [item for item in batch if not busy(item)]


def _present_oldest_first(path: str) -> tuple[bool, int]:
    try:
        return False, os.stat(path).st_mtime_ns
    except OSError:
        return True, 0

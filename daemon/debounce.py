"""Per-path debounce: which paths have settled and may be looked at now. No I/O but a stat.

The watcher's handler `touch`es the paths an event named; the daemon's worker `take`s
batches of paths that have settled and hands them to `Ingestor.process_paths`. A path is
ready when its write is complete (IN_CLOSE_WRITE, a rename or a delete was the last thing
seen) and no event came for `debounce_ms`, or, without such a signal, when its size and
mtime also stayed the same from its last event until then (else it waits a further
window, and so on). A path a writer holds open (written to, as inotify reports, and not
closed since) waits for the close: only its size and mtime holding still for
OPEN_WRITE_SECONDS end the wait without one. A move's two ends are one batch.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_UNSET: Any = object()  # "no stat snapshot taken yet"

Stat = tuple[int, int] | None  # size, mtime_ns; None when the file is absent

# A file written to and not closed since (inotify reports both) is being written: a writer
# that pauses between its pieces for longer than the debounce holds it still, half written,
# and its close is what says the write ended. Without a close, its size and mtime must
# hold still for this long (a write through `truncate(2)`, a writer that keeps it open).
OPEN_WRITE_SECONDS = 30.0


def stat_of(path: str) -> Stat:
    """Size and mtime of a path, None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class _Pending:
    due: float
    complete: bool
    snapshot: Any = _UNSET
    group: set[str] | None = None
    settled: bool = False
    writing: bool = False  # written to by a writer that has not closed it (see touch)


@dataclass
class Batch:
    """What the worker should look at now."""

    paths: list[str] = field(default_factory=list)
    dirs_added: list[str] = field(default_factory=list)  # folders moved in
    dirs_gone: list[str] = field(default_factory=list)
    reconcile: list[str] = field(default_factory=list)  # reasons

    def __bool__(self) -> bool:
        return bool(self.paths or self.dirs_added or self.dirs_gone or self.reconcile)


class PathCollector:
    """Thread-safe per-path debounce: event handlers `touch`, the worker `take`s."""

    def __init__(self, debounce_ms: int, clock: Callable[[], float] = time.monotonic,
                 stat: Callable[[str], Stat] = stat_of) -> None:
        self.debounce = debounce_ms / 1000
        self._clock = clock
        self._stat = stat
        self._cond = threading.Condition()
        self._pending: dict[str, _Pending] = {}
        self._due: list[tuple[float, str]] = []  # heap; stale items are skipped
        self._dirs_added: dict[str, None] = {}
        self._dirs_gone: list[str] = []
        self._reconcile: list[str] = []
        self._woken = False
        self._in_hand = False  # a batch was taken and is not done yet

    # ---- the handler's side (observer thread): record, never block on I/O -------------

    def touch(self, path: str, complete: bool | None, link: str | None = None,
              writing: bool = False) -> None:
        """A path may have changed; `complete` says the write is finished (None: unknown,
        keep what an earlier event said). `writing` says a writer has it open and a close
        event will end its write (inotify's "modified"): it then waits for that close, or
        OPEN_WRITE_SECONDS of stillness. `link` ties a move's two ends into one batch."""
        with self._cond:
            entry = self._pending.get(path)
            if entry is None:
                entry = self._pending[path] = _Pending(0.0, True if complete is None
                                                       else complete)
            elif complete is not None:
                entry.complete = complete
            if complete:
                entry.writing = False
            elif writing:
                entry.writing = True
            due = self._clock() + self._window(entry)
            entry.due = due
            # a write not known to be complete must then hold still until `due`: its size
            # and mtime now are the first look (files found by watchdog's listing of a new
            # folder come only as "created", and would otherwise wait two windows)
            entry.snapshot = _UNSET if entry.complete else self._stat(path)
            entry.settled = False
            heapq.heappush(self._due, (due, path))
            if link is not None and link in self._pending:
                self._join(path, link)
            self._cond.notify()

    def _join(self, a: str, b: str) -> None:
        ea, eb = self._pending[a], self._pending[b]
        group = (ea.group or {a}) | (eb.group or {b})
        for p in group:
            if p in self._pending:
                self._pending[p].group = group

    def notice(self, path: str, complete: bool) -> None:
        """A file found by listing a folder: queued unless an event already queued it."""
        with self._cond:
            if path not in self._pending:
                due = self._clock() + self.debounce
                self._pending[path] = _Pending(due, complete)
                heapq.heappush(self._due, (due, path))
                self._cond.notify()

    def wake(self) -> None:
        """Make a waiting `take` return now (the worker is asked to stop)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def folder_moved_in(self, path: str) -> None:
        """A folder was moved in from elsewhere in the tree: its files are complete."""
        with self._cond:
            self._dirs_added[path] = None
            self._cond.notify()

    def folder_gone(self, path: str) -> None:
        """A folder was deleted or moved away: the files known under it may be gone."""
        with self._cond:
            self._dirs_gone.append(path)
            self._cond.notify()

    def request_reconcile(self, reason: str) -> None:
        """Events may have been lost (overflow, watcher error): rescan everything."""
        with self._cond:
            if reason not in self._reconcile:
                self._reconcile.append(reason)
            self._cond.notify()

    # ---- the worker's side ---------------------------------------------------------------

    def take(self, timeout: float) -> Batch:
        """Wait at most `timeout` seconds for settled paths (or folder changes, or a
        reconcile request) and return them; an empty Batch when nothing is ready."""
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                batch = self._ready_batch()
                now = self._clock()
                if batch or now >= deadline or self._woken:
                    self._woken = False
                    self._in_hand = bool(batch)
                    return batch
                wait = deadline - now
                if self._due:
                    wait = min(wait, self._due[0][0] - now)
                self._cond.wait(max(wait, 0.001))

    def take_paths(self, timeout: float = 0.0) -> list[str]:
        """Settled paths for a stream of them already under way: those ready now, else
        the first to settle within `timeout` while paths are pending. None at once when
        nothing is pending, when asked to wake, or while folder changes or a reconcile
        wait: those go first, through `take`, before any path that came after them."""
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                if self._dirs_added or self._dirs_gone or self._reconcile or self._woken:
                    return []
                paths = self._ready_batch().paths
                now = self._clock()
                if paths or not self._pending or now >= deadline:
                    return paths
                due = self._due[0][0] if self._due else deadline
                self._cond.wait(max(min(due, deadline) - now, 0.001))

    def flush(self) -> list[str]:
        """Every pending path whose write is known to be complete, without waiting out the
        debounce (at stop). Paths still being written are left to the next start."""
        with self._cond:
            paths = [p for p, e in self._pending.items() if e.complete]
            for p in paths:
                del self._pending[p]
            return paths

    def pending(self, path: str) -> bool:
        """Whether an event came for `path` since it was last taken: a file read after that
        may be half of a write that has begun, and the path comes out again later."""
        with self._cond:
            return path in self._pending

    def recheck(self, path: str, closes: bool) -> None:
        """A write began on `path` that no event has told yet (they lag): look at it again
        once that write ends — at its close when the observer reports closes, as for a
        file written to and not closed (see touch), else once it holds still. Nothing
        changes if an event has queued it meanwhile."""
        with self._cond:
            if path in self._pending:
                return
        self.touch(path, complete=False, writing=closes)

    def done(self) -> None:
        """The worker finished the batch it took."""
        with self._cond:
            self._in_hand = False

    def waiting(self) -> int:
        """Paths and folders waiting to be taken (not counting a batch in hand)."""
        with self._cond:
            return len(self._pending) + len(self._dirs_added) + len(self._dirs_gone)

    def pending_count(self) -> int:
        """Paths and folders waiting, plus one while a taken batch is being handled."""
        with self._cond:
            return (len(self._pending) + len(self._dirs_added) + len(self._dirs_gone)
                    + len(self._reconcile) + int(self._in_hand))

    def _ready_batch(self) -> Batch:
        batch = Batch(dirs_added=list(self._dirs_added), dirs_gone=self._dirs_gone,
                      reconcile=self._reconcile)
        self._dirs_added, self._dirs_gone, self._reconcile = {}, [], []
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            due, path = heapq.heappop(self._due)
            entry = self._pending.get(path)
            if entry is None or entry.due != due:
                continue  # taken already, or touched again since
            if not self._settled(path, entry, now):
                heapq.heappush(self._due, (entry.due, path))
                continue
            entry.settled = True
            group = [g for g in (entry.group or {path}) if g in self._pending]
            if all(self._pending[g].settled for g in group):
                for g in group:
                    del self._pending[g]
                batch.paths.extend(sorted(group))
        return batch

    def _settled(self, path: str, entry: _Pending, now: float) -> bool:
        if entry.complete:
            return True
        # No sign that the write ended: wait until size and mtime hold still for a window.
        current = self._stat(path)
        if entry.snapshot is not _UNSET and entry.snapshot == current:
            return True
        entry.snapshot = current
        entry.due = now + self._window(entry)
        return False

    def _window(self, entry: _Pending) -> float:
        """How long a path waits after its last event (or its last look)."""
        return max(self.debounce, OPEN_WRITE_SECONDS) if entry.writing else self.debounce

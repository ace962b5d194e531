"""Watchdog events -> paths for the debounce (daemon.debounce). No parsing, no database.

The observer's handler only records which paths (and folders) an event touched, in a
`PathCollector`; the daemon's worker takes the batches that settled. Event types are never
trusted: a move's destination is "changed", its source "maybe gone". This module also
chooses the observer (inotify or polling, within the inotify watch limit) and keeps the
watched folders watched.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from daemon.config import WatchConfig
from daemon.debounce import PathCollector
from daemon.files import PathFilter, identity, walk

log = structlog.get_logger(__name__)

# Only what says a file changed: opens and read-only closes (our own reads!) never arrive.
# Not DirCreatedEvent: for a new folder (created, or moved in from outside the tree)
# watchdog itself reports every file in it: "created" for what was there before its watch
# was added, real events for what comes after. Listing it again here cost a `cp -r` of
# 900 folders a walk per folder, each finding again the files already queued.
EVENT_TYPES: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent, FileDeletedEvent,
    FileMovedEvent, DirDeletedEvent, DirMovedEvent,
]
# Leave this share of the inotify watch limit to the other programs of the same user.
WATCH_LIMIT_MARGIN = 0.1
class WatchHandler(FileSystemEventHandler):
    """Turns watchdog events into `PathCollector` calls. Runs on watchdog's one dispatcher
    thread, so it only records paths and never raises."""

    def __init__(self, collector: PathCollector, accepts: Callable[[str], bool],
                 folder_ok: Callable[[str], bool],
                 closes: Callable[[], bool] = lambda: False) -> None:
        self.collector = collector
        self.accepts = accepts
        self.folder_ok = folder_ok
        # whether the observer reports closes (inotify does, polling does not): a file
        # written to then waits for its close, not only for its size to hold still
        self.closes = closes

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._route(event)
        except Exception:  # an exception here would stop all event dispatching
            log.exception("watch_handler_failed", fs_event=repr(event))
            self.collector.request_reconcile("event handler error")

    def _route(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        c = self.collector
        if isinstance(event, DirMovedEvent):
            if src and self.folder_ok(src):
                c.folder_gone(src)
            if dest and self.folder_ok(dest):
                c.folder_moved_in(dest)
        elif isinstance(event, DirDeletedEvent):
            c.folder_gone(src)
        elif isinstance(event, FileMovedEvent):
            src_ok = bool(src) and self.accepts(src)
            dest_ok = bool(dest) and self.accepts(dest)
            if dest_ok:
                c.touch(dest, complete=True)
            if src_ok:  # maybe gone: decided with its destination, in the same batch
                c.touch(src, complete=True, link=dest if dest_ok else None)
        elif not self.accepts(src):
            return
        elif isinstance(event, FileClosedEvent | FileDeletedEvent):
            c.touch(src, complete=True)
        elif isinstance(event, FileAttribEvent):
            c.touch(src, complete=None)
        elif isinstance(event, FileModifiedEvent):
            # inotify: a write through a descriptor still open (its close ends the write)
            c.touch(src, complete=False, writing=self.closes())
        elif isinstance(event, FileCreatedEvent):
            # no writing: watchdog reports the files of a folder copied in as "created",
            # with no close to come; a file created by a writer is soon "modified" too
            c.touch(src, complete=False)


class RootAlias(FileSystemEventHandler):
    """The handler of a watched root that is a symbolic link (`/srv/statements` ->
    `/data/statements`, a release's `current`): its watch is on the folder the link points
    to, and the paths of its events are given back under the root as configured, the form
    the scanner walks and the database stores."""

    def __init__(self, handler: WatchHandler, root: str, real: str) -> None:
        self.handler = handler
        self.root = root
        self.real = real

    def _alias(self, path: str | bytes) -> str:
        path = os.fsdecode(path)
        if path == self.real or path.startswith(self.real.rstrip(os.sep) + os.sep):
            return self.root + path[len(self.real):]
        return path

    def dispatch(self, event: FileSystemEvent) -> None:
        self.handler.dispatch(dataclasses.replace(
            event, src_path=self._alias(event.src_path),
            dest_path=self._alias(event.dest_path) if event.dest_path else event.dest_path))


class StoppedEmitterNoise(logging.Filter):
    """watchdog 7.1 logs an error when an emitter that has been stopped (the old watcher of
    a reload, a root watched afresh) reads one last event: nothing is wrong, the new watch
    is in place already. Left through, it was an error line in the journal at one reload
    in ten that changed [watch], and a needless full rescan (OverflowSignal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(StoppedEmitterNoise())


class OverflowSignal(logging.Handler):
    """watchdog reports a kernel queue overflow or a failed watch only as a log record
    (warning or worse on its `watchdog` logger): turn those into a reconcile request."""

    def __init__(self, collector: PathCollector) -> None:
        super().__init__(logging.WARNING)
        self.collector = collector

    def emit(self, record: logging.LogRecord) -> None:
        self.collector.request_reconcile(f"watcher: {record.getMessage()}")


# ---- inotify limits ----------------------------------------------------------------------

@dataclass(frozen=True)
class WatchPlan:
    mode: str  # "inotify" | "polling"
    reason: str | None = None


def plan_observer(polling: bool, folders_needed: int, max_watches: int | None,
                  in_use: int) -> WatchPlan:
    """Pick the observer: inotify unless configured for polling or the watches needed do
    not fit the user's inotify limit (then polling, never silently unwatched subtrees)."""
    if polling:
        return WatchPlan("polling", "watch.polling = true")
    if max_watches is None:
        return WatchPlan("inotify")
    available = int(max_watches * (1 - WATCH_LIMIT_MARGIN)) - in_use
    if folders_needed > available:
        return WatchPlan("polling", (
            f"inotify watch limit too low: {folders_needed} folders to watch, {max(available, 0)}"
            f" watches available (fs.inotify.max_user_watches = {max_watches}, {in_use} in use)"
            "; polling instead. Raise it: sysctl fs.inotify.max_user_watches=524288"))
    return WatchPlan("inotify")


def inotify_limits() -> tuple[int | None, int]:
    """(fs.inotify.max_user_watches, watches this user's readable processes hold)."""
    try:
        max_watches = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):  # e.g. systemd's ProcSubset=pid hides /proc/sys
        return None, 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return max_watches, 0
    return max_watches, sum(inotify_watches(pid) or 0 for pid in pids)


def inotify_watches(pid: str = "self") -> int | None:
    """How many inotify watches a process holds (None if /proc cannot tell)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    held = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                held += sum(1 for line in fh if line.startswith("inotify wd:"))
        except OSError:
            continue
    return held


def count_folders(roots: Iterable[Path], accept: PathFilter, recursive: bool) -> int:
    """How many inotify watches the roots need (one per folder). A folder that cannot be
    listed cannot be watched either (inotify needs read permission): it is not counted,
    and a pass reports it (survey)."""
    return len(_listed_folders(roots, recursive, accept.folder_ok))


def count_tree_folders(roots: Iterable[Path], recursive: bool) -> int:
    """How many inotify watches watchdog holds for the roots when nothing leaked: one per
    folder it can list, hidden and ignored ones too (it watches the whole tree)."""
    return len(_listed_folders(roots, recursive, lambda _name: True))


def _listed_folders(roots: Iterable[Path], recursive: bool,
                    descend: Callable[[str], bool]) -> set[tuple[int, int]]:
    """The (device, inode) of every folder under the roots that can be listed, entering
    subfolders whose name `descend` accepts; links to folders are not followed, and a
    folder reached from two roots (one inside another) is one: it holds one watch."""
    seen: set[tuple[int, int]] = set()
    for root in roots:
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    st = os.stat(folder)
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    if recursive:
                        stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False)
                                     and descend(e.name))
            except OSError:
                continue
    return seen


# ---- the observer over the roots ---------------------------------------------------------

def make_observer(mode: str) -> Any:
    if mode == "polling":
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=1.0)
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver()


class FolderWatcher:
    """The watchdog observer over the watched roots. A root that is missing is reported
    and polled for; a root whose watch died is watched again. `check()` returns the roots
    that need a reconcile because events for them may have been missed."""

    def __init__(self, watch: WatchConfig, collector: PathCollector,
                 observer_factory: Callable[[str], Any] = make_observer,
                 limits: Callable[[], tuple[int | None, int]] = inotify_limits,
                 own_watches: Callable[[], int | None] = inotify_watches) -> None:
        self.watch = watch
        self.collector = collector
        self.roots = [os.path.abspath(p) for p in watch.paths]
        self.accept = PathFilter(watch.patterns, watch.ignore)
        self._folder_ok = functools.lru_cache(maxsize=4096)(self._folder_ok_uncached)
        self.handler = WatchHandler(collector, self.accepts, self.folder_ok,
                                    closes=lambda: self.plan.mode == "inotify")
        self._observer_factory = observer_factory
        self._limits = limits
        self._own_watches = own_watches
        self._short: int | None = None  # watches missing at the last verify()
        self._excess: int | None = None  # watches beyond the tree's folders at the last one
        self.plan = WatchPlan("inotify")
        self.observer: Any = None
        self._watches: dict[str, Any] = {}
        self._targets: dict[str, str] = {}  # root -> the folder its watch is on (realpath)
        self._folder_ids: dict[str, tuple[int, int] | None] = {}  # root -> its (dev, inode)
        self.missing: set[str] = set()
        self._signal = OverflowSignal(collector)

    # path rules shared with the scanner: patterns, ignores, hidden folders, recursion
    def root_of(self, path: str) -> str | None:
        for root in self.roots:
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None

    def folder_ok(self, path: str) -> bool:
        """Whether files in this folder are watched (roots, recursion, ignored folders).
        Asked for every event of a burst, mostly about the same few folders: cached."""
        return self._folder_ok(path)

    def _folder_ok_uncached(self, path: str) -> bool:
        root = self.root_of(path)
        if root is None:
            return False
        parts = Path(os.path.relpath(path, root)).parts
        if parts == (".",):
            return True
        if not self.watch.recursive:
            return False
        return all(self.accept.folder_ok(p) for p in parts)

    def accepts(self, path: str) -> bool:
        return self.folder_ok(os.path.dirname(path)) and self.accept(path)

    def has_files(self, root: str) -> bool:
        """Whether the watched folder `root` is there and holds a file it watches: what
        makes a folder healthy (a missing or empty one holds its deletions back)."""
        return os.path.isdir(root) and next(
            walk(root, self.accept, self.watch.recursive), None) is not None

    def start(self) -> WatchPlan:
        """Check the inotify limit, then start the observer on every present root."""
        # watchdog 7.1 warns, with the repr of every watch, when a tree copied in gets a
        # folder watched twice: harmless, and where warnings are errors it would kill its
        # inotify thread.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        needed = count_folders([Path(r) for r in self.roots if os.path.isdir(r)], self.accept,
                               self.watch.recursive)
        max_watches, in_use = self._limits()
        self.plan = plan_observer(self.watch.polling, needed, max_watches, in_use)
        if self.plan.mode == "polling" and not self.watch.polling:
            log.error("inotify_limit", reason=self.plan.reason)
        elif max_watches is None and self.plan.mode == "inotify":
            log.info("inotify_limit_unknown", detail="fs.inotify.max_user_watches is not "
                     "readable; the watches are counted once they are set up instead")
        logging.getLogger("watchdog").addHandler(self._signal)
        self.observer = self._observer_factory(self.plan.mode)
        for root in self.roots:
            self._schedule(root)
        self.observer.start()
        log.info("watching", mode=self.plan.mode, folders=needed, roots=self.roots,
                 missing=sorted(self.missing))
        return self.plan

    def _schedule(self, root: str) -> bool:
        if not os.path.isdir(root):
            if root not in self.missing:
                log.error("watched_folder_missing", path=root,
                          detail="its statements are kept; watching resumes when it is back")
            self.missing.add(root)
            return False
        try:
            self._watch(root)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE) or self.plan.mode == "polling":
                raise
            # The limit was reached despite the check (another program took watches):
            # never leave a subtree silently unwatched.
            self.plan = WatchPlan("polling", f"inotify: {exc.strerror}; polling instead")
            log.error("inotify_limit", reason=self.plan.reason)
            self._restart_observer()
            return True
        self.missing.discard(root)
        return True

    def _watch(self, root: str) -> None:
        """Schedule the watch of one root. watchdog watches a symbolic link itself, not
        the folder it points to (no event from inside, ever): a root that is one is
        watched at its target, its events given back under the root (RootAlias)."""
        target = os.path.realpath(root)
        self._folder_ids[root] = identity(target)
        handler: FileSystemEventHandler = self.handler
        if target != root:
            handler = RootAlias(self.handler, root, target)
        self._watches[root] = self.observer.schedule(
            handler, target, recursive=self.watch.recursive, event_filter=EVENT_TYPES)
        self._targets[root] = target

    @property
    def suspect(self) -> bool:
        """verify() saw fewer (or more) watches than folders once and wants another look
        soon."""
        return self._short is not None or self._excess is not None

    def verify(self) -> bool:
        """inotify only: does every folder that should be watched have a watch, and no
        more? watchdog skips a subfolder it cannot watch (the limit reached) without a
        word, so the watches are counted; a shortfall seen twice in a row switches to
        polling, loudly. And watchdog 7.1 keeps the watches of a folder moved out of the
        tree (to an archive, say) for as long as that folder lives, reporting what happens
        in it under its old path: watches beyond the tree's folders seen twice in a row
        are set up afresh (a new observer, started before the old one stops), so a daemon
        that runs for months does not pile them up. False when the observer was replaced
        (events may have been missed meanwhile: reconcile)."""
        if self.plan.mode != "inotify" or self.observer is None:
            return True
        held = self._own_watches()
        if held is None:
            return True
        present = [Path(r) for r in self.roots if os.path.isdir(r)]
        needed = count_folders(present, self.accept, self.watch.recursive)
        if held >= needed:
            self._short = None
            return self._verify_no_excess(held, present)
        if self._short is None:  # maybe a folder created a moment ago: look again later
            self._short = needed - held
            return True
        self.plan = WatchPlan("polling", (
            f"only {held} of {needed} folders got an inotify watch (fs.inotify."
            "max_user_watches reached?); polling instead. Raise it: "
            "sysctl fs.inotify.max_user_watches=524288"))
        log.error("inotify_limit", reason=self.plan.reason)
        self._short = None
        self._restart_observer()
        return False

    def _verify_no_excess(self, held: int, present: list[Path]) -> bool:
        """The second half of verify(): watches held beyond the folders of the tree."""
        folders = count_tree_folders(present, self.watch.recursive)
        if held <= folders:
            self._excess = None
            return True
        if self._excess is None:  # maybe a folder deleted a moment ago: look again later
            self._excess = held - folders
            return True
        self._excess = None
        log.info("inotify_watches_renewed", held=held, folders=folders,
                    detail="watches of folders no longer in the watched tree (moved out) "
                           "are released; reconciling")
        self._restart_observer()
        return False

    def _restart_observer(self) -> None:
        old = self.observer
        self._watches.clear()
        self.observer = self._observer_factory(self.plan.mode)
        for root in self.roots:
            if os.path.isdir(root):
                self._watch(root)
        self.observer.start()
        _stop_observer(old)

    def check(self) -> list[str]:
        """Poll for missing roots and dead watches; return the roots to reconcile."""
        if self.observer is None:
            return []
        to_reconcile: list[str] = []
        if not self.observer.is_alive():
            log.error("watcher_died", detail="restarting the observer and reconciling")
            self._restart_observer()
            return list(self.roots)
        alive = {os.path.abspath(os.fsdecode(e.watch.path)) for e in self.observer.emitters
                 if e.is_alive()}
        for root in self.roots:
            watch = self._watches.get(root)
            target = self._targets.get(root)
            if watch is not None and target in alive and os.path.isdir(root):
                if os.path.realpath(root) != target:
                    # a root that is a symbolic link now points elsewhere (a release switched)
                    log.info("watched_folder_relinked", path=root, was=target,
                             now=os.path.realpath(root), detail="watching it there; reconciling")
                elif identity(target) != self._folder_ids.get(root):
                    # another folder at the same path: a file system unmounted and mounted
                    # again there, or the folder moved away and another put in its place.
                    # The watch stays on the old one and would never report a change again
                    log.warning("watched_folder_replaced", path=root,
                                detail="another folder is there now: watching it; reconciling")
                else:
                    continue
                self._unschedule(root)
            elif watch is not None:  # its emitter stopped: the root was removed, or it failed
                self._unschedule(root)
                if os.path.isdir(root):
                    log.error("watch_stopped", path=root, detail="watching it again")
            was_missing = root in self.missing
            if self._schedule(root):
                if was_missing:
                    log.info("watched_folder_back", path=root)
                to_reconcile.append(root)
        return to_reconcile

    def rewatch(self, root: str) -> None:
        """Watch `root` afresh: a folder below it that could not be read, and so got no
        watch, can be now. Events meanwhile may be missed: reconcile after."""
        if self.observer is None or root not in self._watches:
            return
        self._unschedule(root)
        self._schedule(root)

    def _unschedule(self, root: str) -> None:
        watch = self._watches.pop(root, None)
        if watch is None:
            return
        try:
            self.observer.unschedule(watch)
        except (KeyError, RuntimeError):
            pass

    @property
    def watching(self) -> bool:
        return self.observer is not None and self.observer.is_alive() and bool(self._watches)

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def stop(self) -> None:
        logging.getLogger("watchdog").removeHandler(self._signal)
        if self.observer is not None:
            _stop_observer(self.observer)
        self._watches.clear()


def _stop_observer(observer: Any) -> None:
    try:
        observer.stop()
        observer.join(5)
    except RuntimeError:  # never started
        pass

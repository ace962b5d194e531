"""Reading files: stat, read, hash and parse, outside any transaction and any database.

This module imports only what parsing needs (no SQLAlchemy, no logging set-up): a large
pass reads in a worker process, and that process's memory and start-up are what this
module pulls in. The worker is started once, on the first large pass, and kept for the
next ones (the daemon's bursts and reconciles); `shutdown()` ends it, and so does exit.
"""

from __future__ import annotations

import atexit
import hashlib
import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from daemon.changes import Version
from daemon.document import Rejection, parse_document

# A pass this large starts the worker; once started, any pass of WARM_MIN_FILES uses it.
PARALLEL_MIN_FILES = 300
WARM_MIN_FILES = 2 * 64
_CHUNK = 64
_WINDOW = 4  # chunks in flight: bounds the memory held by results not yet applied

Job = tuple[str, int, "str | None"]  # path, max_bytes, the stored sha256 if known


@dataclass(frozen=True)
class Prepared:
    """A file read, hashed and parsed outside any transaction."""

    path: str
    stat: tuple[int, int, int] | None  # size, mtime_ns, inode; None when the file is gone
    sha256: str | None = None
    version: Version | None = None
    rejection: Rejection | None = None
    same_bytes: bool = False  # sha256 equals the known one: no parse was needed
    started: float = 0.0  # time.monotonic() when reading began (one clock for all processes)


def prepare(path: str, max_bytes: int, known_sha: str | None = None) -> Prepared:
    """Stat, read, hash and parse one file (pure of the database; safe in a worker)."""
    started = time.monotonic()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Prepared(path, None, started=started)
    except OSError as exc:
        return Prepared(path, None, started=started, rejection=Rejection(
            "unreadable", f"cannot stat: {exc.strerror}"))
    stat = (st.st_size, st.st_mtime_ns, st.st_ino)
    if st.st_size > max_bytes:
        return Prepared(path, stat, started=started, rejection=Rejection(
            "too_large", f"file is {st.st_size:,} bytes, over the limit of {max_bytes:,} "
            "(watch.max_file_bytes)"))
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Prepared(path, stat, started=started, rejection=Rejection(
            "vanished", "the file disappeared while it was being read"))
    except IsADirectoryError:
        return Prepared(path, None, started=started)
    except OSError as exc:
        return Prepared(path, stat, started=started, rejection=Rejection(
            "unreadable", f"cannot read the file: {exc.strerror}"))
    sha = hashlib.sha256(data).hexdigest()
    if known_sha is not None and sha == known_sha:
        return Prepared(path, stat, sha, same_bytes=True, started=started)
    parsed = parse_document(data, max_bytes)
    if isinstance(parsed, Rejection):
        return Prepared(path, stat, sha, rejection=parsed, started=started)
    version = Version.from_document(parsed)
    version.word_count  # noqa: B018 - counted here, in the reader process, not by the writer
    return Prepared(path, stat, sha, version=version, started=started)


def _prepare_chunk(jobs: list[Job]) -> list[Prepared]:
    return [prepare(*job) for job in jobs]


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker(start: bool) -> ProcessPoolExecutor | None:
    """The reader process: the running one, or a new one when `start` is set."""
    global _pool
    with _pool_lock:
        if _pool is None and start:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
        return _pool


def shutdown() -> None:
    """End the reader process (the daemon at stop; atexit for everything else)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def prepare_many(jobs: list[Job]) -> Iterator[Prepared]:
    """Prepare files, in order. A large pass reads and parses in the reader process while
    the caller writes what came back, with a bounded number of chunks in flight."""
    two_cores = (os.cpu_count() or 1) >= 2
    pool = _worker(start=two_cores and len(jobs) >= PARALLEL_MIN_FILES)
    if pool is None or len(jobs) < WARM_MIN_FILES:
        yield from (prepare(*job) for job in jobs)
        return
    chunks = [jobs[i:i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    pending: deque[tuple[int, Future[list[Prepared]]]] = deque()
    next_chunk = 0
    while next_chunk < len(chunks) or pending:
        while next_chunk < len(chunks) and len(pending) < _WINDOW:
            try:
                pending.append((next_chunk, pool.submit(_prepare_chunk, chunks[next_chunk])))
            except (BrokenProcessPool, RuntimeError):  # the worker died, or is shut down
                break
            next_chunk += 1
        if not pending:  # no worker to hand chunks to: read the rest here
            _discard(pool)
            for chunk in chunks[next_chunk:]:
                yield from _prepare_chunk(chunk)
            return
        index, future = pending.popleft()
        try:
            result = future.result()
        except BrokenProcessPool:  # killed (OOM, a signal): read this chunk here instead
            _discard(pool)
            result = _prepare_chunk(chunks[index])
        yield from result


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken reader process, so that the next large pass starts a new one."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)

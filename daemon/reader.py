"""Reading files: stat, read, hash and parse, outside any transaction and any database.

This module imports only what parsing needs (no SQLAlchemy, no logging set-up): a large
pass reads in a worker process, and that process's memory and start-up are what this
module pulls in. The worker is started once, on the first large pass, and kept for the
next ones (the daemon's bursts and reconciles); `shutdown()` ends it, and so does exit.
"""

from __future__ import annotations

import atexit
import collections
import hashlib
import itertools
import os
import pickle
import queue
import signal
import stat as stat_mode
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.changes import Version
from daemon.document import Rejection, parse_document
from daemon.files import stored_path

# A pass this large starts the worker; once started, any pass of WARM_MIN_FILES uses it.
PARALLEL_MIN_FILES = 300
WARM_MIN_FILES = 2 * 64
_CHUNK = 64
_WINDOW = 8  # chunks in flight: more than a batch, so the writer rarely waits; bounds memory

Job = tuple[str, int, "str | None"]  # path, max_bytes, the stored sha256 if known
_END = object()  # the reader thread's last answer: every chunk sent was answered


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
    """Stat, read, hash and parse one file (pure of the database; safe in a worker). The
    result carries the path as stored (`stored_path`): a file whose name is not UTF-8 is
    rejected under its printable form, unread."""
    started = time.monotonic()
    name = stored_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Prepared(name, None, started=started)
    except OSError as exc:
        return Prepared(name, None, started=started, rejection=Rejection(
            "unreadable", f"cannot stat: {exc.strerror}"))
    if not stat_mode.S_ISREG(st.st_mode):  # a folder, a FIFO, a device, a socket
        return Prepared(name, None, started=started)
    stat = (st.st_size, st.st_mtime_ns, st.st_ino)
    if name != path:
        return Prepared(name, stat, started=started, rejection=_bad_name(path))
    if st.st_size > max_bytes:
        return Prepared(path, stat, started=started, rejection=Rejection(
            "too_large", f"file is {st.st_size:,} bytes, over the limit of {max_bytes:,} "
            "(watch.max_file_bytes)"))
    try:
        with open(path, "rb", opener=_open_nonblocking) as fh:
            st = os.fstat(fh.fileno())  # what is read; taken before the read, so that a
            if not stat_mode.S_ISREG(st.st_mode):  # write after it shows in the next stat
                return Prepared(path, None, started=started)  # replaced since the stat
            stat = (st.st_size, st.st_mtime_ns, st.st_ino)
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


def _open_nonblocking(path: str, flags: int) -> int:
    """Open without waiting: a FIFO named like a statement would block a plain open until
    some program writes to it (a device or a terminal may block a read); opened this way
    it returns at once, and the fstat after it tells it is no regular file."""
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def _bad_name(path: str) -> Rejection:
    """A file whose path is not UTF-8: no database can store it, nor a person type it."""
    base = os.path.basename(path)
    what = "file" if stored_path(base) != base else "folder"
    where = "the file name" if what == "file" else "a folder name on the file's path"
    return Rejection("bad_file_name", f"{where} is not valid UTF-8 (each byte that is not "
                     f"is shown as \\xNN in the path): rename the {what} to a UTF-8 name")


def _prepare_chunk(jobs: list[Job]) -> list[Prepared]:
    return [prepare(*job) for job in jobs]


class _Worker:
    """The reader process: `python -c` running `serve()`, which answers each chunk of jobs
    pickled on its stdin with the prepared files pickled on its stdout, in order.

    A plain child with two pipes, not a multiprocessing pool: no resource-tracker process,
    no multiprocessing start-up, and it exits by itself when its stdin closes (the parent
    ended or died). A thread reads its answers as they come, so it keeps reading ahead
    while the caller writes to the database."""

    def __init__(self) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                            if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from daemon.reader import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.busy = threading.Lock()  # one pass at a time

    def run(self, chunks: Iterator[list[Job]]) -> Generator[list[Prepared], None, None]:
        """Each chunk's prepared files, in order. `chunks` may still be growing (the
        daemon's live stream): a thread sends them as they come, at most _WINDOW ahead of
        the caller. If the process dies, the chunks it did not answer, and the rest, are
        prepared here; an error raised by `chunks` itself reaches the caller."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        slots = threading.Semaphore(_WINDOW)
        inflight: collections.deque[list[Job]] = collections.deque()  # sent, not answered
        sent: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True per chunk sent; False: end
        answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        failure: list[BaseException] = []
        stop = threading.Event()
        broken = threading.Event()  # a chunk could not be sent: the process is gone

        def feed() -> None:
            try:
                for chunk in chunks:
                    slots.acquire()
                    inflight.append(chunk)  # before it is sent: the answer may come at once
                    if stop.is_set():
                        return
                    pickle.dump(chunk, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    stdin.flush()
                    sent.put(True)
            except (OSError, ValueError):  # the process died: the reading side says so
                broken.set()
            except BaseException as exc:  # noqa: BLE001 - raised by `chunks`: for the caller
                failure.append(exc)
            finally:
                sent.put(False)

        def read() -> None:
            try:
                while sent.get():
                    answers.put(pickle.load(stdout))
                # every chunk sent was answered; if one could not be sent, it and the
                # rest are the caller's to read
                answers.put(None if broken.is_set() else _END)
            except Exception:  # noqa: BLE001 - whatever broke, the caller must not wait
                answers.put(None)  # forever: it reads the rest itself

        threads = [threading.Thread(target=f, name=f"redline-reader-{f.__name__}",
                                    daemon=True) for f in (feed, read)]
        for t in threads:
            t.start()
        finished = False
        try:
            while True:
                try:
                    answer = answers.get_nowait()
                except queue.Empty:
                    yield []  # nothing answered yet: the caller may use the wait
                    answer = answers.get()
                if answer is _END:
                    break
                if answer is None:  # the process died (OOM, a signal): read the rest here
                    stop.set()
                    slots.release()
                    self.kill()  # if it was alive but out of step, it must not be reused
                    threads[0].join()
                    for chunk in itertools.chain(list(inflight), chunks):
                        yield _prepare_chunk(chunk)
                        yield []  # the next chunk may wait for a stream: commit meanwhile
                    break
                inflight.popleft()
                yield answer
                slots.release()
            finished = True
            if failure:
                raise failure[0]
        finally:
            if not finished:  # the caller stopped early: answers still on their way
                stop.set()    # would be out of step with the next pass
                slots.release()
                self.kill()
            for t in threads:
                if t is not threading.current_thread():  # closed by a collection there
                    t.join(timeout=5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def kill(self) -> None:
        self.proc.kill()
        self.close()


def serve() -> None:
    """The reader process's loop (see _Worker). Ctrl-C is the parent's to handle: the
    process ends when the parent closes its stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            jobs = pickle.load(stdin)
        except (EOFError, pickle.UnpicklingError):  # closed, or cut short by a killed parent
            return
        try:
            pickle.dump(_prepare_chunk(jobs), stdout, protocol=pickle.HIGHEST_PROTOCOL)
            stdout.flush()
        except BrokenPipeError:
            # the parent is gone (kill -9, the OOM killer): nobody to answer and nothing to
            # report; a traceback here only landed in the service's journal. _exit: the
            # interpreter's own flush of stdout at exit would fail the same way
            os._exit(0)


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _take_worker(start: bool) -> _Worker | None:
    """The running reader process (a new one when `start` is set), reserved for one pass;
    None when there is none, or another pass is using it."""
    global _worker
    with _worker_lock:
        if _worker is not None and not _worker.alive():
            _worker = None
        if _worker is None and start:
            _worker = _Worker()
        if _worker is None or not _worker.busy.acquire(blocking=False):
            return None
        return _worker


def start() -> None:
    """Start the reader process now, when there are two cores to share (the daemon does,
    so that the first burst does not wait for it); prepare_many uses it from then on."""
    if (os.cpu_count() or 1) >= 2:
        worker = _take_worker(start=True)
        if worker is not None:
            worker.busy.release()


def shutdown() -> None:
    """End the reader process (the daemon at stop; atexit for everything else)."""
    global _worker
    with _worker_lock:
        worker, _worker = _worker, None
    if worker is not None:
        try:
            worker.close()
        except KeyboardInterrupt:  # Ctrl-C while it ends (at exit, after the summary):
            worker.proc.kill()     # end it now, without a traceback under the summary
            worker.proc.wait()


atexit.register(shutdown)


def prepare_many(jobs: Sequence[Job] | Iterable[Job | None],
                 stream_size: int | None = None) -> Generator[Prepared | None, None, None]:
    """Prepare files, in order. A large pass reads and parses in the reader process while
    the caller writes what came back, with a bounded number of chunks read ahead. `jobs`
    may instead be a stream that keeps producing jobs while earlier ones are written (the
    daemon's live batches); `stream_size` says how many it has so far, and a stream uses
    the reader process whenever that one is running. A stream gives None where it may
    wait for more jobs; prepare_many then yields None whenever the next file is not ready
    yet: a moment for the caller to commit what it has rather than hold it meanwhile."""
    two_cores = (os.cpu_count() or 1) >= 2
    size = len(jobs) if stream_size is None else stream_size  # type: ignore[arg-type]
    worker = None
    if stream_size is not None or size >= WARM_MIN_FILES:
        worker = _take_worker(start=two_cores and size >= PARALLEL_MIN_FILES)
    if worker is None:
        for job in jobs:
            if job is not None:
                yield prepare(*job)
            elif stream_size is not None:
                yield None
        return
    answers = worker.run(_chunked(iter(jobs)))
    try:
        for answer in answers:
            if answer:
                yield from answer
            elif stream_size is not None:
                yield None
    finally:
        answers.close()  # a pass left early ends the process: its answers are out of step
        worker.busy.release()


def _chunked(jobs: Iterator[Job | None]) -> Iterator[list[Job]]:
    """Chunks of up to _CHUNK jobs, a shorter one where the stream may wait (None); should
    `jobs` raise, the jobs before it still go out first."""
    chunk: list[Job] = []
    try:
        for job in jobs:
            if job is not None:
                chunk.append(job)
            if len(chunk) == _CHUNK or (job is None and chunk):
                yield chunk
                chunk = []
    except Exception:
        if chunk:
            yield chunk
        raise
    if chunk:
        yield chunk

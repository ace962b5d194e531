"""Tests for daemon.reader: the reader process gives what reading in-process gives, is kept
for the next pass, and losing it (killed, or a pass left early) loses no file."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import reader
from daemon.reader import prepare, prepare_many


@pytest.fixture
def files(sample: Path, tmp_path: Path) -> list[str]:
    """Real statements copied until a pass is longer than the worker may read ahead, plus a
    broken file and a missing one."""
    originals = sorted((sample / "current").rglob("*.md"))
    out = []
    for i in range(3 * reader._WINDOW * reader._CHUNK):
        dest = tmp_path / f"f{i:04d}.md"
        shutil.copyfile(originals[i % len(originals)], dest)
        out.append(str(dest))
    (tmp_path / "broken.md").write_bytes(b"---\ntitle: [unclosed\n---\nbody\n")
    out.insert(100, str(tmp_path / "broken.md"))
    out.insert(200, str(tmp_path / "gone.md"))
    return out


@pytest.fixture(autouse=True)
def fresh_worker() -> Iterator[None]:
    reader.shutdown()
    _read_here.clear()
    yield
    reader.shutdown()


def jobs(paths: list[str]) -> list[tuple[str, int, str | None]]:
    return [(p, 5_000_000, None) for p in paths]


_read_here: dict[str, tuple[object, ...]] = {}


def expected(paths: list[str]) -> list[tuple[object, ...]]:
    """What reading each file in this process gives (each file read here once)."""
    for job in jobs(paths):
        if job[0] not in _read_here:
            _read_here[job[0]] = _key(prepare(*job))
    return [_read_here[p] for p in paths]


def _key(p: reader.Prepared) -> tuple[object, ...]:
    return (p.path, p.stat, p.sha256, p.version, p.rejection)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_worker_reads_like_in_process_and_is_kept_for_the_next_pass(files: list[str]) -> None:
    got = [_key(p) for p in prepare_many(jobs(files))]
    assert got == expected(files)
    worker = reader._worker
    assert worker is not None and worker.alive(), "a large pass starts the reader process"
    assert [_key(p) for p in prepare_many(jobs(files[:reader.WARM_MIN_FILES]))] == \
        expected(files[:reader.WARM_MIN_FILES])
    assert reader._worker is worker, "the next pass reuses it"
    reader.shutdown()
    assert worker.proc.wait(timeout=5) == 0, "closing its stdin ends it cleanly"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_killed_worker_mid_pass_loses_no_file(files: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    here: list[int] = []
    real_chunk = reader._prepare_chunk

    def counted(chunk: list[tuple[str, int, str | None]]) -> list[reader.Prepared]:
        here.append(len(chunk))
        return real_chunk(chunk)

    monkeypatch.setattr(reader, "_prepare_chunk", counted)  # this process only
    got = []
    for i, p in enumerate(prepare_many(jobs(files))):
        got.append(_key(p))
        if i == 70:  # the worker cannot have read more than _WINDOW chunks ahead
            worker = reader._worker
            assert worker is not None
            os.kill(worker.proc.pid, signal.SIGKILL)
    assert got == expected(files)
    assert not worker.alive() and sum(here) >= len(files) - (reader._WINDOW + 2) * reader._CHUNK
    assert [_key(p) for p in prepare_many(jobs(files))] == expected(files)
    assert reader._worker is not None and reader._worker is not worker, "a new one started"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_a_pass_left_early_does_not_leak_answers_into_the_next(files: list[str]) -> None:
    first = prepare_many(jobs(files))
    assert [_key(next(first)) for _ in range(10)] == expected(files[:10])
    worker = reader._worker
    first.close()  # e.g. the writer raised
    assert worker is not None and not worker.alive()
    again = list(reversed(files))
    assert [_key(p) for p in prepare_many(jobs(again))] == expected(again)
    assert reader._worker is not None and reader._worker is not worker


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_two_passes_at_once_share_nothing(files: list[str]) -> None:
    results: dict[str, list[tuple[object, ...]]] = {}
    order = {"forward": files, "backward": list(reversed(files))}

    def run(name: str) -> None:
        results[name] = [_key(p) for p in prepare_many(jobs(order[name]))]

    threads = [threading.Thread(target=run, args=(n,)) for n in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {name: expected(paths) for name, paths in order.items()}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_started_ahead_the_worker_takes_a_small_pass(files: list[str]) -> None:
    """The daemon starts the reader at start-up: a pass too small to start one uses it."""
    reader.start()
    worker = reader._worker
    assert worker is not None and worker.alive()
    reader.start()
    assert reader._worker is worker, "starting again keeps the running one"
    small = files[:reader.WARM_MIN_FILES]
    assert len(small) < reader.PARALLEL_MIN_FILES
    seen: list[int] = []
    real_run = reader._Worker.run

    def run(self: reader._Worker, chunks: Iterator[list[tuple[str, int, str | None]]]):  # type: ignore[no-untyped-def]
        def counted() -> Iterator[list[tuple[str, int, str | None]]]:
            for chunk in chunks:
                seen.append(len(chunk))
                yield chunk
        return real_run(self, counted())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader._Worker, "run", run)
        assert [_key(p) for p in prepare_many(jobs(small))] == expected(small)
    assert sum(seen) == len(small)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_a_stream_that_grows_while_it_is_read(files: list[str]) -> None:
    """The daemon's live stream: jobs keep coming (asked for on the reader's feeding
    thread) while earlier answers are written; all come back, in order, through the
    running reader process."""
    reader.start()
    worker = reader._worker
    parts = [files[i:i + 37] for i in range(0, len(files), 37)]  # uneven: chunks mix parts
    asked: list[str] = []

    def stream() -> Iterator[tuple[str, int, str | None]]:
        for part in parts:
            asked.append(threading.current_thread().name)
            yield from jobs(part)

    got = [_key(p) for p in prepare_many(stream(), stream_size=len(parts[0])) if p]
    assert got == expected(files)
    assert set(asked) == {"redline-reader-feed"}, "the reader process was used"
    assert reader._worker is worker and worker is not None and worker.alive()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_an_error_in_a_stream_reaches_the_caller_after_what_came_before(
        files: list[str]) -> None:
    """A stream that raises (its database query failed, say): the files before it are
    given, then the error is raised in the caller's thread, and the reader stays usable."""
    reader.start()

    def stream() -> Iterator[tuple[str, int, str | None]]:
        yield from jobs(files[:100])
        raise RuntimeError("lookup failed")

    got = []
    with pytest.raises(RuntimeError, match="lookup failed"):
        for p in prepare_many(stream(), stream_size=100):
            if p is not None:
                got.append(_key(p))
    assert got == expected(files[:100])
    assert [_key(p) for p in prepare_many(jobs(files[:200]))] == expected(files[:200])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_killed_worker_mid_stream_loses_no_file(files: list[str]) -> None:
    """The reader process dies while a stream is still growing: what it had not answered,
    and what the stream gives after, are read in-process, in order."""
    reader.start()
    worker = reader._worker
    assert worker is not None

    def stream() -> Iterator[tuple[str, int, str | None]]:
        yield from jobs(files[:300])
        yield from jobs(files[300:])

    got = []
    marks_after_kill = 0
    for p in prepare_many(stream(), stream_size=300):
        if p is None:
            marks_after_kill += not worker.alive()
            continue
        got.append(_key(p))
        if len(got) == 70:
            os.kill(worker.proc.pid, signal.SIGKILL)
    assert got == expected(files)
    assert not worker.alive()
    assert marks_after_kill >= 3, "read in-process, it still offers a commit between chunks"


@pytest.mark.parametrize("started", [True, False], ids=["reader-process", "in-process"])
def test_a_stream_that_may_wait_gives_what_it_has_first(files: list[str],
                                                          started: bool) -> None:
    """Where a stream may wait for more (None), the files before it reach the caller
    first, followed by None (a moment to commit them): a live edit is never held back
    behind the next one."""
    if started:
        reader.start()
    release = threading.Event()

    def stream() -> Iterator[tuple[str, int, str | None] | None]:
        yield from jobs(files[:3])
        yield None
        if not release.wait(10):
            raise AssertionError("the files before the wait were held back")
        yield from jobs(files[3:5])

    got: list[object] = []
    for p in prepare_many(stream(), stream_size=3):
        if p is None:
            if len(got) == 3:
                got.append(None)
                release.set()
            continue
        got.append(_key(p))
    assert got == [*expected(files[:3]), None, *expected(files[3:5])]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_a_reader_that_ends_between_chunks_loses_no_file(files: list[str]) -> None:
    """The reader process ends right after answering every chunk sent to it, and the next
    chunk cannot be sent: that chunk and the rest are read in-process, none is dropped."""
    reader.start()
    worker = reader._worker
    assert worker is not None and worker.proc.stdin is not None

    def stream() -> Iterator[tuple[str, int, str | None]]:
        yield from jobs(files[:reader._CHUNK])  # exactly one chunk, sent and answered
        worker.proc.stdin.close()  # type: ignore[union-attr]  # the process ends after it
        yield from jobs(files[reader._CHUNK:200])

    got = [_key(p) for p in prepare_many(stream(), stream_size=reader._CHUNK) if p]
    assert got == expected(files[:200])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: everything is read in-process")
def test_an_answer_that_cannot_be_read_ends_the_process(files: list[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer this process cannot read leaves the reader process alive but out of
    step: it is ended (never reused), and the rest is read in-process."""
    import pickle as real_pickle
    import types

    calls = []

    def load(stream: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise real_pickle.UnpicklingError("garbled")
        return real_pickle.load(stream)  # type: ignore[arg-type]

    monkeypatch.setattr(reader, "pickle", types.SimpleNamespace(
        load=load, dump=real_pickle.dump, HIGHEST_PROTOCOL=real_pickle.HIGHEST_PROTOCOL))
    got = [_key(p) for p in prepare_many(jobs(files))]
    assert got == expected(files)
    worker = reader._worker
    assert worker is not None and worker.proc.wait(timeout=5) is not None
    monkeypatch.undo()
    assert [_key(p) for p in prepare_many(jobs(files))] == expected(files)
    assert reader._worker is not worker, "a new reader process took the next pass"


@pytest.mark.parametrize("cut", ["answer", "chunk"])
def test_a_reader_whose_parent_was_killed_exits_without_a_traceback(
        files: list[str], cut: str) -> None:
    """The parent killed (kill -9, the OOM killer) while the reader process works: its
    answer meets a closed pipe, or the chunk it was reading ends half-way. It used to print
    a BrokenPipeError (or UnpicklingError) traceback into the service's journal after
    every such kill; it ends quietly."""
    import pickle
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from daemon.reader import serve; serve()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    chunk = pickle.dumps(jobs(files[:reader._CHUNK]), protocol=pickle.HIGHEST_PROTOCOL)
    if cut == "answer":
        proc.stdout.close()  # the answer has nowhere to go
        proc.stdin.write(chunk)
    else:
        proc.stdin.write(chunk[:len(chunk) // 2])  # the sender died in the middle
    proc.stdin.close()
    assert proc.wait(timeout=60) is not None
    assert proc.stderr.read().decode() == ""


def test_ctrl_c_while_the_reader_process_ends_is_no_traceback(tmp_path: Path) -> None:
    """`redline ingest` ends its reader process at exit (atexit): it closes the pipe and
    waits for the process to end, a fifth of a second after the summary line. A Ctrl-C in
    that wait printed "Exception ignored in atexit callback" and a KeyboardInterrupt
    traceback under the summary, and left the reader process to end by itself. Here the
    reader process is stopped (SIGSTOP), so the SIGINT surely lands in that wait; it is
    ended instead, quietly."""
    import subprocess
    import sys

    script = """
import os, signal, threading
from daemon import reader
reader._take_worker(start=True).busy.release()
pid = reader._worker.proc.pid
print(pid, flush=True)
os.kill(pid, signal.SIGSTOP)  # it cannot end before the SIGINT comes
timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
timer.daemon = True  # the exit does not wait for it: atexit runs meanwhile
timer.start()
"""
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=stdout, stderr=stderr)
        proc.wait(timeout=60)
    pid = int(out.read_text().split()[0])
    try:
        assert err.read_text() == ""
        with pytest.raises(ProcessLookupError):  # ended and reaped by its parent
            os.kill(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

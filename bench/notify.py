"""Notification benchmark (issue 4): commit-to-received latency and sustained delivery rate.

Everything is real except the network distance: the Ingestor commits real events from real
statement files into a real database (SQLite file by default; --pg for a fresh PostgreSQL
database on 127.0.0.1), the Dispatcher delivers them to a webhook receiver on 127.0.0.1
(stdlib ThreadingHTTPServer, keep-alive), and the receiver stamps each arrival.

  latency   --events times: edit one word of a real statement, ingest it (one transaction,
            its outbox row included), the Ingestor's on_commit wakes the Dispatcher; the
            latency is from the commit returning to the receiver having read the whole
            request. Edits are --gap ms apart. Targets: median <= 300 ms, p99 <= 1 s.
            Baseline in the same run: a bare httpx POST of the same bodies to the same
            receiver (the floor no dispatcher can beat).
  rate      --burst real statements (copies with distinct source_url) are ingested with
            the dispatcher stopped, so --burst deliveries are pending; then the dispatcher
            starts and the time until the receiver has them all and every row is
            `delivered` gives the sustained rate. Target: >= 200 deliveries/s. Baseline in
            the same run: the same number of bare httpx POSTs of the same bodies.

  burst     --edits real statements (default 300) are stored, then all edited at once (a
            word changed in every paragraph) and
            ingested in one pass (a `cp` of many files, a git checkout), the commits
            waking the dispatcher; from the last commit to the last POST received, with
            one webhook channel and with --channels (default 4), and how many event
            bodies and word diffs were computed (one per event is the least).

    .venv/bin/python bench/notify.py [--events 200] [--gap 50] [--burst 1000] [--edits 300]
                                     [--channels 4] [--pg]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.config import load_config  # noqa: E402
from daemon.ingest import Ingestor  # noqa: E402
from daemon.logs import configure_logging  # noqa: E402
from daemon.notify.dispatch import Dispatcher  # noqa: E402
from daemon.notify.outbox import DeliveryOutbox  # noqa: E402
from daemon.notify.payload import event_bodies  # noqa: E402
from daemon.notify.webhook import encode_body  # noqa: E402
from daemon.store import migrate  # noqa: E402
from daemon.store.engine import make_engine  # noqa: E402

SOURCES = [REPO.parent / "shared" / "corpus" / "current",
           REPO / "tests" / "fixtures" / "corpus" / "current"]
URL_RE = re.compile(rb"^(source_url: )(\S+?)/?$", re.M)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET_MEDIAN_MS, TARGET_P99_MS, TARGET_RATE = 300.0, 1000.0, 200.0


class ReceiverServer:
    """The webhook receiver, run in its own process (`--serve-receiver`) so that it does not
    share redline's interpreter lock: POSTs are stamped with time.monotonic() (one clock for
    every process on Linux) once the body has been read; GET /stats reports them."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.monotonic()
                if self.path == "/reset":
                    with receiver.lock:
                        receiver.arrivals.clear()
                        receiver.count = 0
                        receiver.last = 0.0
                else:
                    event_id = json.loads(body).get("event_id", -1)
                    with receiver.lock:
                        receiver.arrivals.setdefault(event_id, now)
                        receiver.count += 1
                        receiver.last = now
                self._reply(204, b"")

            def do_GET(self) -> None:  # noqa: N802
                with receiver.lock:
                    data = json.dumps({"count": receiver.count, "last": receiver.last,
                                       "arrivals": receiver.arrivals}).encode()
                self._reply(200, data)

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True


class Receiver:
    """The benchmark's handle on the receiver process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-receiver"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/hook"
        self.client = httpx.Client(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self.client.get(f"{self.base}/stats").json()  # type: ignore[no-any-return]

    @property
    def count(self) -> int:
        return int(self.stats()["count"])

    @property
    def arrivals(self) -> dict[int, float]:
        return {int(k): v for k, v in self.stats()["arrivals"].items()}

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)  # polling another process (a benchmark, not a test)
        return True

    def reset(self) -> None:
        self.client.post(f"{self.base}/reset", content=b"{}")

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


def serve_receiver() -> None:
    server = ReceiverServer().server
    print(server.server_address[1], flush=True)
    server.serve_forever()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def source_files() -> list[Path]:
    source = next(s for s in SOURCES if s.is_dir())
    return sorted(source.rglob("*.md"))


def build_copies(dest: Path, n: int) -> list[Path]:
    """`n` real statements with distinct source_url (one file per statement of the source,
    copied with a suffix on the URL until there are `n`)."""
    originals: list[tuple[Path, bytes]] = []
    seen: set[bytes] = set()
    for src in source_files():
        raw = src.read_bytes()
        m = URL_RE.search(raw)
        if m and m.group(2) not in seen:
            seen.add(m.group(2))
            originals.append((src, raw))
    out: list[Path] = []
    copy = 0
    while len(out) < n:
        for src, raw in originals[:n - len(out)]:
            suffix = f"/copy-{copy}/".encode()
            data = URL_RE.sub(lambda m, s=suffix: m.group(1) + m.group(2) + s, raw, count=1)
            path = dest / f"copy{copy:03d}" / Path(*src.parts[-3:])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            out.append(path)
        copy += 1
    return out


def setup(workdir: Path, db_url: str, hook_url: str, channels: int = 1
          ) -> tuple[Any, sa.Engine]:
    """A config with `channels` webhook channels (hook, hook1, …), all to the receiver."""
    watched = workdir / "statements"
    watched.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    cfg.write_text(f'[watch]\npaths = ["{watched}"]\n\n[database]\nurl = "{db_url}"\n\n'
                   + "".join(f'[[channels]]\nname = "hook{n or ""}"\ntype = "webhook"\n'
                             f'url = "{hook_url}?channel={n}"\nsecret_env = "BENCH_SECRET"\n\n'
                             for n in range(channels)))
    config = load_config(cfg, {"BENCH_SECRET": "bench"})
    engine = make_engine(config.database.url)
    migrate.upgrade(engine)
    return config, engine


def real_bodies(engine: sa.Engine) -> list[bytes]:
    """The exact bytes the webhook sent for every event."""
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM events ORDER BY id"))]
        return [encode_body(b) for b in event_bodies(conn, ids).values()]


def bare_posts(url: str, bodies: list[bytes]) -> list[float]:
    """The floor: POST each body on one kept-alive connection; per-request seconds."""
    times = []
    with httpx.Client(timeout=10) as client:
        for raw in bodies:
            t0 = time.perf_counter()
            client.post(url, content=raw, headers={"Content-Type": "application/json"})
            times.append(time.perf_counter() - t0)
    return times


def bench_latency(workdir: Path, db_url: str, events: int, gap_ms: float) -> dict[str, float]:
    rx = Receiver()
    config, engine = setup(workdir, db_url, rx.url)
    target = workdir / "statements" / "probe.md"
    original = source_files()[0].read_text(encoding="utf-8")
    word = re.search(r"\n\n[^\n]*?\b([A-Za-z]{6,})\b", original.split("\n---", 1)[1])
    assert word, "no word to edit"
    old = word.group(1)
    commits: dict[int, float] = {}
    dispatcher = Dispatcher(engine, config, instance_id="bench:latency")

    def on_commit(event_ids: list[int]) -> None:
        now = time.monotonic()
        for eid in event_ids:
            commits[eid] = now
        dispatcher.wake()

    ing = Ingestor(engine, config.watch, DeliveryOutbox(config.channels), on_commit=on_commit)
    target.write_text(original, encoding="utf-8")
    ing.process_paths([str(target)])                      # event 1: added
    dispatcher.dispatch_due(wait=30)
    rx.wait_count(1, 30)
    rx.reset()
    commits.clear()
    for n in range(events):
        target.write_text(original.replace(old, f"probe{n}x", 1), encoding="utf-8")
        ing.process_paths([str(target)])
        time.sleep(gap_ms / 1000)  # the pace of edits (a benchmark, not a test)
    ok = rx.wait_count(events, 60)
    dispatcher.close()
    arrivals = rx.arrivals
    lat = [(arrivals[e] - commits[e]) * 1000 for e in commits if e in arrivals]
    floor = bare_posts(rx.url, real_bodies(engine)[-50:])
    rx.close()
    engine.dispose()
    return {"received": len(lat), "expected": events, "complete": ok,
            "median_ms": statistics.median(lat), "p99_ms": pct(lat, 99), "max_ms": max(lat),
            "floor_median_ms": statistics.median(floor) * 1000}


def bench_rate(workdir: Path, db_url: str, burst: int) -> dict[str, float]:
    rx = Receiver()
    config, engine = setup(workdir, db_url, rx.url)
    build_copies(workdir / "statements", burst)
    ing = Ingestor(engine, config.watch, DeliveryOutbox(config.channels))
    t0 = time.perf_counter()
    counts = ing.scan()
    ingest_s = time.perf_counter() - t0
    with engine.connect() as conn:
        pending = conn.execute(sa.text(
            "SELECT count(*) FROM delivery_status WHERE status = 'pending'")).scalar_one()
    dispatcher = Dispatcher(engine, config, instance_id="bench:rate")
    t0 = time.perf_counter()
    dispatcher.dispatch_due()
    ok = rx.wait_count(pending, 300)
    dispatcher.wait_idle(60)
    elapsed = time.perf_counter() - t0
    dispatcher.close()
    with engine.connect() as conn:
        delivered = conn.execute(sa.text(
            "SELECT count(*) FROM delivery_status WHERE status = 'delivered'")).scalar_one()
    bodies = real_bodies(engine)
    rx.reset()
    t1 = time.perf_counter()
    bare_posts(rx.url, bodies)
    bare_s = time.perf_counter() - t1
    rx.close()
    engine.dispose()
    return {"events": counts.added, "pending": pending, "delivered": delivered,
            "complete": ok, "seconds": elapsed, "rate": delivered / elapsed,
            "ingest_seconds": ingest_s, "bare_rate": len(bodies) / bare_s,
            "mean_body_kb": sum(map(len, bodies)) / len(bodies) / 1024}


def bench_edits(workdir: Path, db_url: str, n: int, channels: int) -> dict[str, float]:
    """A burst of `n` edited statements (a checkout of many files) with `channels` webhook
    channels: every file is edited, one pass ingests them all, its commits wake the
    dispatcher (as in `redline run`); from the last commit to the last POST received. The
    bodies built are counted: one per event is the least (the word diff is most of it)."""
    from daemon import diffs
    from daemon.notify import dispatch as dispatch_module

    rx = Receiver()
    config, engine = setup(workdir, db_url, rx.url, channels)
    paths = build_copies(workdir / "statements", n)
    Ingestor(engine, config.watch, DeliveryOutbox(config.channels)).scan()
    dispatcher = Dispatcher(engine, config, instance_id="bench:edits")
    dispatcher.dispatch_due()
    ok = rx.wait_count(n * channels, 300)  # the `added` deliveries, out of the way
    dispatcher.wait_idle(60)
    rx.reset()
    built: list[int] = []
    real_event_bodies = dispatch_module.event_bodies

    def counting(conn: Any, event_ids: Any, *args: Any) -> Any:
        ids = list(event_ids)
        built.extend(ids)
        return real_event_bodies(conn, ids, *args)

    dispatch_module.event_bodies = counting  # type: ignore[assignment]
    diffed: list[int] = []
    diffs.clear_memo()  # the other part of the run edited the same texts the same way
    real_compute = diffs._compute_word_diff

    def counting_diffs(*args: Any) -> Any:
        diffed.append(1)
        return real_compute(*args)

    diffs._compute_word_diff = counting_diffs  # type: ignore[assignment]
    last_commit = 0.0

    def on_commit(event_ids: list[int]) -> None:
        nonlocal last_commit
        last_commit = time.monotonic()
        dispatcher.wake()

    try:
        for path in paths:
            text = path.read_text(encoding="utf-8")
            head, sep, body = text.partition("\n---\n")
            # a word changed in every paragraph (a house-style change across a site)
            body = re.sub(r"(?m)^(.*?\bthe) ", r"\1 very ", body)
            path.write_text(head + sep + body, encoding="utf-8")
        ing = Ingestor(engine, config.watch, DeliveryOutbox(config.channels),
                       on_commit=on_commit)
        t0 = time.monotonic()
        counts = ing.scan()
        ok = rx.wait_count(counts.revised * channels, 300) and ok
        dispatcher.wait_idle(60)
    finally:
        dispatch_module.event_bodies = real_event_bodies  # type: ignore[assignment]
        diffs._compute_word_diff = real_compute  # type: ignore[assignment]
        dispatcher.close()
    last = float(rx.stats()["last"])
    rx.close()
    engine.dispose()
    return {"revised": counts.revised, "deliveries": counts.revised * channels, "complete": ok,
            "ingest_seconds": last_commit - t0, "after_last_commit": last - last_commit,
            "bodies_built": len(built), "word_diffs": len(diffed)}


def fresh_pg() -> tuple[str, sa.Engine, str]:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"redline_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    return url, admin, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--gap", type=float, default=50.0, help="ms between edits")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=300,
                        help="statements edited at once in the burst part")
    parser.add_argument("--channels", type=int, default=4,
                        help="webhook channels in the burst part (compared with one)")
    parser.add_argument("--pg", action="store_true", help="a fresh PostgreSQL database")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver()
        return
    configure_logging("warning", "console", sys.stderr)
    results: dict[str, dict[str, float]] = {}
    for part in ("latency", "rate", "edits-1", f"edits-{args.channels}"):
        work = Path(tempfile.mkdtemp(prefix=f"redline-bench-notify-{part}-"))
        cleanup = None
        try:
            if args.pg:
                db_url, admin, name = fresh_pg()
                cleanup = (admin, name)
            else:
                db_url = f"sqlite:///{work / 'redline.db'}"
            if part == "latency":
                results[part] = bench_latency(work, db_url, args.events, args.gap)
            elif part == "rate":
                results[part] = bench_rate(work, db_url, args.burst)
            else:
                results[part] = bench_edits(work, db_url, args.edits,
                                            int(part.split("-")[1]))
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if cleanup:
                admin, name = cleanup
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()
    db = "PostgreSQL" if args.pg else "SQLite"
    lat, rate = results["latency"], results["rate"]
    print(f"redline notify benchmark ({db}, webhook receiver on 127.0.0.1)")
    print(f"latency: {lat['received']}/{lat['expected']} revised events, one every "
          f"{args.gap:g} ms, commit -> received")
    print(f"  median {lat['median_ms']:.1f} ms  (target <= {TARGET_MEDIAN_MS:g} ms: "
          f"{lat['median_ms'] / TARGET_MEDIAN_MS:.3f} of target)")
    print(f"  p99    {lat['p99_ms']:.1f} ms  (target <= {TARGET_P99_MS:g} ms: "
          f"{lat['p99_ms'] / TARGET_P99_MS:.3f} of target)   max {lat['max_ms']:.1f} ms")
    print(f"  baseline: a bare POST to the same receiver takes {lat['floor_median_ms']:.2f} ms"
          f" (median); redline's median is {lat['median_ms'] / lat['floor_median_ms']:.1f}x")
    print(f"rate: {rate['delivered']}/{rate['pending']} pending deliveries of real statements "
          f"(mean body {rate['mean_body_kb']:.1f} KiB) in {rate['seconds']:.2f} s")
    print(f"  {rate['rate']:.0f} deliveries/s  (target >= {TARGET_RATE:g}/s: "
          f"{rate['rate'] / TARGET_RATE:.2f}x target)")
    print(f"  baseline: bare POSTs of the same bodies {rate['bare_rate']:.0f}/s; redline "
          f"delivers at {rate['rate'] / rate['bare_rate']:.2f} of that")
    one, many = results["edits-1"], results[f"edits-{args.channels}"]
    for label, e in (("1 channel", one), (f"{args.channels} channels", many)):
        print(f"burst: {e['revised']} statements edited at once, {label}: ingested in "
              f"{e['ingest_seconds']:.2f} s, last commit -> last of {e['deliveries']} POSTs "
              f"{e['after_last_commit']:.2f} s; bodies built: {e['bodies_built']} "
              f"({e['bodies_built'] / max(1, e['revised']):.2f} per event), word diffs "
              f"computed (recording and sending): {e['word_diffs'] / max(1, e['revised']):.2f} "
              "per event")
    print(f"  {args.channels} channels after the last commit take "
          f"{many['after_last_commit'] / one['after_last_commit']:.2f}x one channel")
    if not (lat["complete"] and rate["complete"] and rate["delivered"] == rate["pending"]
            and one["complete"] and many["complete"]):
        print("INCOMPLETE: some deliveries did not arrive", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

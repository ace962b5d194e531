"""Web benchmark (issue 7): `redline serve` under 50 concurrent clients on loopback.

Builds (or reuses) a SQLite database of >= 13,000 statements: the real revision chains of
../shared/corpus/revisions replayed at their capture times (so diffs are real edits), then
copies of ../shared/corpus/current with distinct source_url (tests/fixtures/corpus when the
shared corpus is absent). Starts `redline serve` as its own process (uvicorn, one worker),
then measures requests/s and p50/p99 latency with `wrk` (Debian package; an asyncio httpx
load generator bounded in count and time when wrk is absent) for:
  baseline  /static/redline.css: the same server and guard, no database, no template
  changes   /                     the recent-changes page (50 newest changes)
  diff      /statements/ID/diff   a real revised statement's inline word diff
  feed      /feed.atom            (extra) the Atom feed
  api       /api/events           (extra) the JSON change log
then the changes page again while a writer commits one change a second (every cached page
goes stale each second), and, with the server's render cache off (every request renders:
what a page costs the first time after a change), the changes and diff pages again. Prints
each as a rate, a ratio to the baseline measured in the same run, and against the target
p99 <= 100 ms.
Absolute numbers depend on the machine; the ratios travel better.

    .venv/bin/python bench/web.py [--statements 13000] [--duration 10] [--connections 50]
                                  [--db bench/out/web.db] [--rebuild]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpus"
FIXTURES = REPO / "tests" / "fixtures" / "corpus"
URL_RE = re.compile(rb"^(source_url: )(\S+?)/?$", re.M)
TARGET_P99_MS = 100.0


def corpus_dir() -> Path:
    env = os.environ.get("REDLINE_CORPUS")
    for c in ([Path(env)] if env else []) + [SHARED, FIXTURES]:
        if (c / "current").is_dir() and (c / "revisions" / "INDEX.tsv").is_file():
            return c
    return FIXTURES


def build_database(db: Path, n_statements: int) -> None:
    """Replay the real chains, then bulk-ingest copies of current/ until n statements."""
    from daemon.config import WatchConfig
    from daemon.ingest import Ingestor
    from daemon.logs import configure_logging
    from daemon.store import migrate
    from daemon.store.engine import make_engine

    configure_logging("warning", "console", sys.stderr)
    corpus = corpus_dir()
    db.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    now = [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)]
    with tempfile.TemporaryDirectory(prefix="redline-bench-web-") as tmp:
        root = Path(tmp)
        chains_root = root / "chains"
        ingestor = Ingestor(engine, WatchConfig(paths=(root,)), clock=lambda: now[0])
        index = list(csv.DictReader((corpus / "revisions" / "INDEX.tsv").open(
            encoding="utf-8"), delimiter="\t"))
        t0 = time.perf_counter()
        for row in sorted(index, key=lambda r: (r["commit_time_utc"], r["orig_path"],
                                                 int(r["version"]))):
            target = chains_root / row["orig_path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus / "revisions" / row["version_file"], target)
            now[0] = dt.datetime.fromisoformat(row["commit_time_utc"].replace("Z", "+00:00"))
            ingestor.process_paths([str(target)])
        print(f"  replayed {len(index)} real revisions in {time.perf_counter() - t0:.1f} s",
              flush=True)
        originals = sorted((corpus / "current").rglob("*.md"))
        bulk = root / "bulk"
        bulk.mkdir()
        now[0] = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        bulk_ingestor = Ingestor(engine, WatchConfig(paths=(bulk,)), clock=lambda: now[0])
        t0 = time.perf_counter()
        copy = written = 0
        while (have := _count(engine)) < n_statements:
            # several files of the corpus share a URL: write a little more than is missing
            for i in range(int((n_statements - have) * 1.03) + 1):
                src = originals[(written + i) % len(originals)]
                copy = (written + i) // len(originals)
                data = URL_RE.sub(lambda m, c=copy: m.group(1) + m.group(2)
                                  + f"/copy-{c}/".encode(), src.read_bytes(), count=1)
                out = bulk / f"copy{copy:02d}" / src.relative_to(corpus / "current")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
            written += int((n_statements - have) * 1.03) + 1
            counts = bulk_ingestor.scan()
            assert counts.rejected == 0 and not counts.folder_errors, counts
        print(f"  ingested {written} copies in {time.perf_counter() - t0:.1f} s", flush=True)
    engine.dispose()


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM statements")).scalar_one())


def statement_count(db: Path) -> int:
    if not db.is_file():
        return 0
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM statements")).scalar_one())
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def pick_diff(db: Path) -> tuple[str, int]:
    """A revised statement of median length: its diff page URL and its length in chars."""
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("""
            SELECT c.statement_id, c.from_revision, c.to_revision, length(r.body_text) AS n
            FROM change_log c JOIN statement_revisions r
              ON r.statement_id = c.statement_id AND r.revision_number = c.to_revision
            WHERE c.kind = 'revised' AND c.from_revision IS NOT NULL
              AND c.source_url NOT LIKE '%/churn/%'  -- the churn writer's statement
            ORDER BY n, c.event_id""")).all()
    engine.dispose()
    sid, frm, to, n = rows[len(rows) // 2]
    return f"/statements/{sid}/diff?from={frm}&to={to}", int(n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_uncached(db: str, port: int) -> None:
    """The same app with its render cache off (every request renders), for the cold rows."""
    import uvicorn

    from daemon.web import create_app
    from daemon.web.server import read_only_engine

    app = create_app(read_only_engine(f"sqlite:///{db}"), cache=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                server_header=False, lifespan="off")


def write_changes(db: str, seconds: float) -> None:
    """A writer for the churn row: one new revision of one statement every second, so the
    record (and every cached page) changes while the pages are under load."""
    from daemon.config import WatchConfig
    from daemon.ingest import Ingestor
    from daemon.logs import configure_logging
    from daemon.store.engine import make_engine

    configure_logging("warning", "console", sys.stderr)
    source = sorted((corpus_dir() / "current").rglob("*.md"))[0].read_bytes()
    engine = make_engine(f"sqlite:///{db}")
    with tempfile.TemporaryDirectory(prefix="redline-bench-writer-") as tmp:
        target = Path(tmp) / "churn.md"
        ingestor = Ingestor(engine, WatchConfig(paths=(Path(tmp),)))
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            n += 1
            body = URL_RE.sub(lambda m: m.group(1) + m.group(2) + b"/churn/", source, count=1)
            target.write_bytes(body + f"\n\nChurn paragraph number {time.time_ns()}.\n".encode())
            ingestor.process_paths([str(target)])
            time.sleep(max(0.0, started + n - time.monotonic()))  # a rate, not a wait
    engine.dispose()
    print(f"wrote {n} changes", file=sys.stderr)


def start_uncached(db: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-uncached", str(db), str(port)],
                            stdout=(workdir / "uncached.log").open("wb"),
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # each attempt blocks on a real connection
        if proc.poll() is not None:
            sys.exit("uncached server exited:\n" + (workdir / "uncached.log").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, base
        except OSError:
            proc_wait(proc, 0.1)
    proc.kill()
    sys.exit("uncached server did not start")


def proc_wait(proc: subprocess.Popen[bytes], seconds: float) -> None:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def start_server(db: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`redline serve` on a free loopback port; returns once it has sent READY=1."""
    port = free_port()
    cfg = workdir / "config.toml"
    (workdir / "seeds").mkdir(exist_ok=True)
    cfg.write_text(f'[watch]\npaths = ["seeds"]\n[database]\nurl = "sqlite:///{db}"\n'
                   f'[log]\nlevel = "warning"\n')
    sock_path = workdir / "notify.sock"
    sock_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(sock_path))
    notify.settimeout(60)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(cfg), "serve",
                             "--port", str(port)], cwd=workdir,
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path)},
                            stdout=(workdir / "serve.log").open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        message = notify.recv(4096).decode()
    except TimeoutError:
        proc.kill()
        sys.exit("redline serve did not start:\n" + (workdir / "serve.log").read_text())
    finally:
        notify.close()
    assert message.startswith("READY=1"), message
    return proc, f"http://127.0.0.1:{port}"


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s",
                          "--latency", "--timeout", "5s", url],
                         capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * _WRK_UNITS[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(g) for g in errors.groups())
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"), "requests": total,
            "failed": failed}


def run_httpx(url: str, connections: int, duration: float, max_requests: int = 200_000
              ) -> dict[str, float]:
    """A closed-loop load generator: `connections` clients, each sending its next request
    when the previous answer arrives; bounded by time and by count."""
    import httpx

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        failed = 0
        deadline = time.perf_counter() + duration
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=5) as client:
            async def worker() -> None:
                nonlocal failed
                while time.perf_counter() < deadline and len(latencies) < max_requests:
                    t0 = time.perf_counter()
                    try:
                        r = await client.get(url)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append((time.perf_counter() - t0) * 1000)
                    failed += not ok

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100)
        return {"rps": len(latencies) / elapsed, "p50": cuts[49], "p99": cuts[98],
                "requests": len(latencies), "failed": failed}

    return asyncio.run(main())


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=13_000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--db", type=Path, default=REPO / "bench" / "out" / "web.db")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--httpx", action="store_true", help="use the httpx load generator "
                        "even when wrk is installed")
    parser.add_argument("--serve-uncached", nargs=2, metavar=("DB", "PORT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--write-changes", nargs=2, metavar=("DB", "SECONDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_uncached:
        serve_uncached(args.serve_uncached[0], int(args.serve_uncached[1]))
        return
    if args.write_changes:
        write_changes(args.write_changes[0], float(args.write_changes[1]))
        return

    have = statement_count(args.db)
    if args.rebuild or have < args.statements:
        print(f"building {args.db} with >= {args.statements} statements from "
              f"{corpus_dir()} ...", flush=True)
        build_database(args.db, args.statements)
        have = statement_count(args.db)
    diff_path, diff_chars = pick_diff(args.db)
    engine = sa.create_engine(f"sqlite:///{args.db}")
    with engine.connect() as conn:
        n_events = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
        n_revs = conn.execute(sa.text("SELECT count(*) FROM revisions")).scalar_one()
    engine.dispose()
    use_wrk = shutil.which("wrk") is not None and not args.httpx
    tool = "wrk -t2" if use_wrk else "asyncio httpx"
    http = "httptools" if _importable("httptools") else "h11"
    loop = "uvloop" if _importable("uvloop") else "asyncio"
    print(f"database: {have} statements, {n_revs} revisions, {n_events} events "
          f"({args.db})")
    print(f"load: {tool}, {args.connections} concurrent clients, {args.duration:.0f} s per "
          f"endpoint, loopback; cpus: {os.cpu_count()}; python {sys.version.split()[0]}")
    print(f"server: redline serve, one uvicorn worker ({http}, {loop})")

    load = run_wrk if use_wrk else run_httpx
    endpoints = [("baseline", "/static/redline.css"), ("changes", "/"), ("diff", diff_path),
                 ("feed", "/feed.atom"), ("api", "/api/events")]
    churn = [("changes, 1 chg/s", "/")]
    cold = [("changes, uncached", "/"), ("diff, uncached", diff_path)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="redline-bench-serve-") as tmp:
        for start, batch in ((start_server, endpoints), (start_server, churn),
                             (start_uncached, cold)):
            proc, base = start(args.db.resolve(), Path(tmp))
            try:
                for name, path in batch:
                    load(base + path, args.connections, min(2.0, args.duration))  # warm-up
                    writer = None
                    if batch is churn:
                        writer = subprocess.Popen([sys.executable, __file__, "--write-changes",
                                                   str(args.db.resolve()), str(args.duration)])
                    results[name] = load(base + path, args.connections, args.duration)
                    if writer is not None:
                        writer.wait(timeout=args.duration + 60)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)

    base_rps = results["baseline"]["rps"]
    print(f"\ndiff page: {diff_path} ({diff_chars} characters of text)\n")
    print(f"{'endpoint':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs baseline':>13}"
          f"{'failed':>8}  p99 <= {TARGET_P99_MS:.0f} ms")
    for name, _path in endpoints + churn + cold:
        r = results[name]
        verdict = "yes" if r["p99"] <= TARGET_P99_MS else "NO"
        print(f"{name:<18}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
              f"{r['rps'] / base_rps:>12.2f}x{int(r['failed']):>8}  {verdict}")


if __name__ == "__main__":
    main()

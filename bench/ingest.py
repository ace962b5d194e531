"""Ingest benchmark (issue 2): a raw floor versus `redline ingest`, measured in one run.

Builds a corpus of >= 13,000 files from ../shared/corpus/current (copies with distinct
source_url; tests/fixtures/corpus/current when the shared corpus is absent), then measures:
  floor     read + sha256 + PyYAML CSafeLoader + one sqlite executemany transaction
  cold      `redline ingest` into an empty SQLite database (subprocess; its peak RSS)
  no-change a second `redline ingest` over the same files
  FTS5      indexing the same titles and texts in an FTS5 table alone (a part of ingest)
  writes    the rows and search entries the cold ingest committed, inserted alone by one
            connection into an empty database: what one SQLite writer cannot beat
and prints each as a rate and as a ratio to the floor. The floor and the cold ingest
alternate, three times each by default, and their medians are compared. Absolute times are
not comparable across runs on a noisy machine; the ratios are.

    .venv/bin/python bench/ingest.py [--files 13000] [--keep DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO.parent / "shared" / "corpus" / "current", REPO / "tests" / "fixtures" / "corpus"
           / "current"]
URL_RE = re.compile(rb"^(source_url: )(\S+?)/?$", re.M)


def build_corpus(dest: Path, n_files: int) -> int:
    source = next(s for s in SOURCES if s.is_dir())
    originals = sorted(source.rglob("*.md"))
    count = 0
    copy = 0
    while count < n_files:
        for src in originals:
            if count >= n_files:
                break
            data = src.read_bytes()
            if copy:
                suffix = f"/copy-{copy}/".encode()
                data = URL_RE.sub(lambda m, s=suffix: m.group(1) + m.group(2) + s, data, count=1)
            out = dest / f"copy{copy:02d}" / src.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            count += 1
        copy += 1
    return count


def floor(root: Path, db: Path) -> float:
    """The raw floor: read, hash, parse the front matter, one executemany transaction."""
    t0 = time.perf_counter()
    rows = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as fh:
                data = fh.read()
            sha = hashlib.sha256(data).hexdigest()
            text = data.decode("utf-8")
            front, body = text[4:].split("\n---\n", 1)
            meta = yaml.load(front, Loader=yaml.CSafeLoader)
            rows.append((p, sha, meta["source_url"], str(meta["title"]), body))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE docs (path TEXT PRIMARY KEY, sha TEXT, url TEXT, title TEXT, "
                 "body TEXT)")
    with conn:
        conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()
    return time.perf_counter() - t0


def fts5_alone(root: Path, db: Path) -> float:
    """One part of what an ingest must do, timed alone: index every statement's title and
    text in an FTS5 table like redline's (same tokenizer, 400 per transaction). The text
    is rendered first, untimed."""
    sys.path.insert(0, str(REPO))
    from daemon.document import Document, parse_document
    from daemon.text import markdown_to_text

    rows = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            doc = parse_document(Path(dirpath, name).read_bytes(), 5_000_000)
            if isinstance(doc, Document):
                rows.append((len(rows) + 1, doc.title, markdown_to_text(doc.body)))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # external content, as redline's (migration 0003): inserts do not read the view
    conn.execute("CREATE VIRTUAL TABLE s USING fts5(title, body_text, "
                 "tokenize = 'unicode61 remove_diacritics 2', content = 'current_statements', "
                 "content_rowid = 'statement_id')")
    for key, value in (("hashsize", 8 * 1024 * 1024), ("automerge", 8)):  # as migration 0004
        conn.execute(f"INSERT INTO s(s, rank) VALUES ('{key}', {value})")
    t0 = time.perf_counter()
    for i in range(0, len(rows), 400):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO s(rowid, title, body_text) VALUES (?, ?, ?)",
                         rows[i:i + 400])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


WRITTEN_TABLES = ("statements", "statement_urls", "revisions", "events", "files")


def writes_alone(ingested: Path, config: Path, db: Path) -> float:
    """The SQLite writes of a cold ingest, timed alone: every row the ingest committed
    (ingested: its database) and the search index entries, inserted into an empty database
    at the same schema (`redline db upgrade`) by one connection with nothing else to do, in
    transactions of 400 files as the ingest's. One SQLite writer commits these at best this
    fast, whatever the rest of the ingest costs: it bounds the ratio to the floor."""
    src = sqlite3.connect(f"file:{ingested}?mode=ro", uri=True)
    rows = {t: src.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()  # noqa: S608
            for t in WRITTEN_TABLES}
    search = src.execute("SELECT s.id, r.title, r.body_text FROM statements s JOIN revisions r "
                         "ON r.statement_id = s.id AND r.number = s.head_revision "
                         "ORDER BY s.id").fetchall()
    src.close()
    subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "db", "upgrade"],
                   check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "REDLINE_DATABASE_URL": f"sqlite:///{db}"})
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")  # as redline's engine (WAL from the upgrade)
    n = len(rows["files"])
    t0 = time.perf_counter()
    for i in range(0, n, 400):
        # the i-th share of each table: 400 files, their statements, revisions and events
        conn.execute("BEGIN IMMEDIATE")
        for table in WRITTEN_TABLES:
            part = rows[table][len(rows[table]) * i // n:len(rows[table]) * (i + 400) // n]
            if part:
                conn.executemany(f"INSERT INTO {table} VALUES "  # noqa: S608
                                 f"({', '.join('?' * len(part[0]))})", part)
        part = search[len(search) * i // n:len(search) * (i + 400) // n]
        conn.executemany("INSERT INTO statement_search(rowid, title, body_text) "
                         "VALUES (?, ?, ?)", part)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def runs_text(seconds: list[float]) -> str:
    """Every run's time, printed beside a median."""
    return f"(runs {', '.join(f'{x:.2f}' for x in seconds)} s)" if len(seconds) > 1 else ""


def run_ingest(config: Path) -> tuple[float, dict[str, int], int]:
    """Run `redline ingest --json` as a subprocess; return seconds, counts, peak RSS (KiB)."""
    import psutil

    t0 = time.perf_counter()
    out_file = tempfile.TemporaryFile()
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(config), "ingest",
                             "--json"], stdout=out_file, stderr=err_file)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:  # the ingest process and its reader worker, added up
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in
                                             ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    out_file.seek(0)
    err_file.seek(0)
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}): {err_file.read().decode()[-2000:]}")
    return elapsed, json.loads(out_file.read()), peak // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=13000)
    ap.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the floor, the cold and the no-change ingest (medians)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="redline-bench-"))
    corpus = work / "corpus"
    if not corpus.is_dir():
        n = build_corpus(corpus, args.files)
    else:
        n = sum(1 for _ in corpus.rglob("*.md"))
    print(f"corpus: {n} files under {corpus}")
    for f in ("fts5.db", "fts5.db-wal", "fts5.db-shm", "writes.db", "writes.db-wal",
              "writes.db-shm"):
        (work / f).unlink(missing_ok=True)
    config = work / "config.toml"
    config.write_text(f'[watch]\npaths = ["{corpus}"]\n[database]\nurl = '
                      f'"sqlite:///{work / "redline.db"}"\n[log]\nlevel = "warning"\n')
    # floor and cold ingest alternate, --repeat times each, and their medians are compared:
    # on a shared machine one run of either can be off by half
    floors, colds, peaks = [], [], []
    for _ in range(args.repeat):
        for f in ("floor.db", "redline.db", "redline.db-wal", "redline.db-shm"):
            (work / f).unlink(missing_ok=True)
        floors.append(floor(corpus, work / "floor.db"))
        t_cold, counts, peak = run_ingest(config)
        assert counts["files"] == n and counts["rejected"] == 0, counts
        colds.append(t_cold)
        peaks.append(peak)
    agains = []
    for _ in range(args.repeat):
        t_again, counts2, _ = run_ingest(config)
        assert counts2["unchanged"] == n, counts2
        agains.append(t_again)
    t_fts = fts5_alone(corpus, work / "fts5.db")
    writes = []
    for _ in range(args.repeat):
        for f in ("writes.db", "writes.db-wal", "writes.db-shm"):
            (work / f).unlink(missing_ok=True)
        writes.append(writes_alone(work / "redline.db", config, work / "writes.db"))
    t_floor, t_cold, t_again, t_writes = (statistics.median(x)
                                          for x in (floors, colds, agains, writes))
    print(f"floor       {t_floor:7.2f} s  {n / t_floor:8.0f} files/s  {runs_text(floors)}")
    print(f"cold ingest {t_cold:7.2f} s  {n / t_cold:8.0f} files/s  {runs_text(colds)}")
    print(f"  ratio to floor {t_floor / t_cold:.2f} (target >= 0.5; medians)  peak RSS "
          f"{max(peaks) / 1024:.0f} MB (target <= 150 MB; process + worker, sampled every "
          "50 ms, the largest of the runs)")
    print(f"no-change   {t_again:7.2f} s  {runs_text(agains)} (target <= 1 s for 13,000 files; "
          "includes interpreter start-up)")
    print(f"FTS5 alone  {t_fts:7.2f} s  = {t_fts / t_floor:.2f} x the floor: indexing the "
          "same texts for search, one required part of an ingest, timed by itself")
    print(f"SQLite writes alone {t_writes:.2f} s  {runs_text(writes)} = "
          f"{t_writes / t_floor:.2f} x the floor: the rows and search entries the cold ingest "
          "committed, inserted by one connection doing nothing else; with one SQLite writer "
          f"the ratio to the floor cannot pass {t_floor / t_writes:.2f}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

"""PostgreSQL scale benchmark (issue 6), measured in one run on the same corpus:

  1. cold `redline ingest` into SQLite and into PostgreSQL: the PostgreSQL rate as a ratio
     to the SQLite rate (target >= 0.7);
     Also the server's time to compute those statements' search vectors alone (a part of
     what a PostgreSQL ingest must do), as a ratio to the whole SQLite ingest;
  2. one instance ingesting half of the corpus into PostgreSQL, then two instances at once
     ingesting two disjoint halves into one fresh database: the combined rate as a ratio
     to the one instance (target >= 1.4 on a 2-core machine that also runs the server).

Each measure runs three times by default (--repeat), in turn, and their medians are compared.

    .venv/bin/python bench/postgres.py [--files 13000] [--repeat 3] [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import build_corpus, runs_text  # noqa: E402


def fresh_pg(admin_url: str) -> str:
    name = f"redline_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg(admin_url: str, url: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" '
                             "WITH (FORCE)")
    admin.dispose()


def vectors_alone(url: str) -> float:
    """Seconds the server takes to compute every current statement's weighted tsvector (what
    the writer stores in statement_search.tsv), with nothing else to do."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        t0 = time.perf_counter()
        conn.exec_driver_sql(
            "SELECT sum(length(setweight(to_tsvector('english', title), 'A') || "
            "setweight(to_tsvector('english', body_text), 'B'))) FROM current_statements"
        ).scalar()
        elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


def config(work: Path, name: str, folder: Path, url: str) -> Path:
    cfg = work / f"{name}.toml"
    cfg.write_text(f'[watch]\npaths = ["{folder}"]\n[database]\nurl = "{url}"\n'
                   '[log]\nlevel = "warning"\n')
    return cfg


def start(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(cfg), "ingest",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed: {err.decode()[-2000:]}")
    return json.loads(out)


def timed(*cfgs: Path) -> float:
    """Run one ingest per config at the same time; seconds until the last one finishes."""
    t0 = time.perf_counter()
    procs = [start(c) for c in cfgs]
    for p in procs:
        counts = finish(p)
        assert counts["rejected"] == 0, counts
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=13000)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measure (medians)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="redline-pgbench-"))
    try:
        corpus = work / "corpus"
        n = build_corpus(corpus, args.files)
        halves = [work / "half-a", work / "half-b"]
        for h in halves:
            h.mkdir()
        for i, f in enumerate(sorted(corpus.rglob("*.md"))):
            dest = halves[i % 2] / f.relative_to(corpus)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), str(dest))
        n_half = [sum(1 for _ in h.rglob("*.md")) for h in halves]
        print(f"corpus: {n} files ({n_half[0]} + {n_half[1]} in two disjoint halves)")

        # Each measure runs --repeat times, the three kinds in turn, and medians are
        # compared: on a shared 2-core machine one run of any of them can be off by a third.
        sqlite_runs, pg_runs, two_runs, vector_runs = [], [], [], []
        for i in range(args.repeat):
            # 1. SQLite vs PostgreSQL on the same half
            db = work / f"a{i}.db"
            sqlite_runs.append(timed(config(work, "sqlite", halves[0], f"sqlite:///{db}")))
            pg1 = fresh_pg(args.pg)
            pg_runs.append(timed(config(work, "pg1", halves[0], pg1)))
            vector_runs.append(vectors_alone(pg1))
            drop_pg(args.pg, pg1)
            # 2. two instances, disjoint folders, one database
            pg2 = fresh_pg(args.pg)
            two_runs.append(timed(config(work, "two-a", halves[0], pg2),
                                  config(work, "two-b", halves[1], pg2)))
            drop_pg(args.pg, pg2)
        t_sqlite, t_pg, t_two, t_vectors = (statistics.median(x) for x in (
            sqlite_runs, pg_runs, two_runs, vector_runs))

        r_sqlite, r_pg = n_half[0] / t_sqlite, n_half[0] / t_pg
        print(f"SQLite      {r_sqlite:7.0f} files/s   {runs_text(sqlite_runs)}")
        print(f"PostgreSQL  {r_pg:7.0f} files/s   {runs_text(pg_runs)}")
        print(f"  ratio to SQLite {r_pg / r_sqlite:.2f} (target >= 0.7; medians)")
        print(f"tsvectors alone {t_vectors:5.2f} s = {t_vectors / t_sqlite:.2f} x the whole "
              "SQLite ingest: the server computing the same statements' search vectors, "
              "one required part of a PostgreSQL ingest, timed by itself")
        r_two = (n_half[0] + n_half[1]) / t_two
        print(f"two instances {r_two:5.0f} files/s combined   {runs_text(two_runs)}")
        print(f"  ratio to one instance {r_two / r_pg:.2f} (target >= 1.4; medians)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

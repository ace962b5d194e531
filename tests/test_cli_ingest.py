"""Tests for `redline ingest` as a user runs it: output, exit codes, and a kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import search_index_drift, unprivileged, write_config

from daemon.cli import cli
from daemon.config import load_config, parse_config
from daemon.ingest import Ingestor
from daemon.store import SCHEMA_HEAD
from daemon.store.engine import make_engine
from daemon.survey import quick_unchanged


def run(cfg: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(cfg), "ingest", *args])
    return result.exit_code, result.output


def test_ingest_json_counts_and_second_run(db_url: str, sample: Path, tmp_path: Path) -> None:
    """--json prints the SPEC §6 counts; a second run reports everything unchanged."""
    folder = tmp_path / "statements"
    shutil.copytree(sample / "current", folder)
    cfg = write_config(tmp_path, db_url, [folder])
    code, out = run(cfg, "--json")
    assert code == 0, out
    counts = json.loads(out)
    n = len(list(folder.rglob("*.md")))
    assert list(counts) == ["files", "added", "revised", "metadata", "formatting", "deleted",
                            "restored", "unchanged", "rejected"]
    assert counts["files"] == n and counts["rejected"] == 0
    assert counts["added"] + counts["revised"] + counts["metadata"] + counts["formatting"] == n
    code, out = run(cfg, "--json")
    assert json.loads(out) == {"files": n, "added": 0, "revised": 0, "metadata": 0,
                               "formatting": 0, "deleted": 0, "restored": 0, "unchanged": n,
                               "rejected": 0}


def test_ingest_summary_line_and_exit_3_on_rejection(db_url: str, sample: Path,
                                                     tmp_path: Path) -> None:
    """A rejected file: exit 3, the summary line, and a pointer to `redline errors`."""
    folder = tmp_path / "statements"
    folder.mkdir()
    shutil.copy(sorted((sample / "current").rglob("*.md"))[0], folder / "good.md")
    (folder / "bad.md").write_text("no front matter\n")
    cfg = write_config(tmp_path, db_url, [folder])
    code, out = run(cfg)
    assert code == 3
    lines = out.splitlines()
    assert re.fullmatch(r"2 files in \d+\.\d s: 1 added; 0 unchanged, 1 rejected", lines[0])
    assert lines[1] == "1 file(s) rejected: see `redline errors`"


def test_ingest_single_file_path_argument(db_url: str, sample: Path, tmp_path: Path) -> None:
    """`redline ingest FILE` looks at just that file."""
    folder = tmp_path / "statements"
    folder.mkdir()
    src = sorted((sample / "current").rglob("*.md"))
    shutil.copy(src[0], folder / "a.md")
    shutil.copy(src[1], folder / "b.md")
    cfg = write_config(tmp_path, db_url, [folder])
    code, out = run(cfg, "--json", str(folder / "a.md"))
    assert code == 0 and json.loads(out)["added"] == 1


def test_a_fifo_given_as_a_path_is_one_line_not_a_hang(sample: Path, tmp_path: Path) -> None:
    """`redline ingest x.md` where x.md is a named pipe waited for ever in open(); it says
    what the path is, exits 1 and reads nothing (the bound only keeps a hang from
    stopping the suite)."""
    folder = tmp_path / "statements"
    folder.mkdir()
    os.mkfifo(folder / "x.md")
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", [folder])
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(cfg), "ingest",
                             str(folder / "x.md")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("redline ingest of a FIFO did not return") from None
    assert proc.returncode == 1, (out, err)
    assert err == f"redline: error: {folder / 'x.md'}: a named pipe (FIFO), not a regular " \
                  "file: only files are statements\n"


def test_auto_migrate_false_refuses_an_unmigrated_database_until_db_upgrade(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """SPEC §4: `redline ingest` upgrades the schema itself unless `[database] auto_migrate
    = false`; then it refuses (exit 1, one line naming `redline db upgrade`) and creates
    no table (on SQLite, no file), until `redline db upgrade` has run."""
    folder = tmp_path / "statements"
    folder.mkdir()
    shutil.copy(sorted((sample / "current").rglob("*.md"))[0], folder / "a.md")
    cfg = write_config(tmp_path, db_url, [folder])
    cfg.write_text(cfg.read_text().replace("[database]\n", "[database]\nauto_migrate = false\n"))
    assert load_config(cfg, {}).database.auto_migrate is False
    sqlite_file = tmp_path / "redline.db" if db_url.startswith("sqlite") else None
    if sqlite_file:
        assert db_url == f"sqlite:///{sqlite_file}"
        # not even an empty file is left behind, by ingest nor by the daemon
        refused = (f"redline: error: database {sqlite_file} does not exist yet: run "
                   f"`redline db upgrade` first\n")
        daemon = CliRunner().invoke(cli, ["--config", str(cfg), "run"])
        assert (daemon.exit_code, daemon.stderr) == (1, refused)
        assert not sqlite_file.exists()
    else:
        refused = (f"redline: error: database schema is at nothing, this redline needs "
                   f"{SCHEMA_HEAD}: run `redline db upgrade`\n")
    code, out = run(cfg, "--json")
    assert (code, out) == (1, refused)
    assert not (sqlite_file and sqlite_file.exists())
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("statements")
    engine.dispose()
    upgrade = CliRunner().invoke(cli, ["--config", str(cfg), "db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    code, out = run(cfg, "--json")
    assert code == 0 and json.loads(out)["added"] == 1


def test_missing_folder_exits_1_and_deletes_nothing(sample: Path, tmp_path: Path) -> None:
    """A watched folder that disappears is an error (exit 1), not a mass deletion."""
    folder = tmp_path / "statements"
    shutil.copytree(sample / "current", folder)
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", [folder])
    assert run(cfg)[0] == 0
    shutil.rmtree(folder)
    code, out = run(cfg, "--json")
    assert code == 1
    assert json.loads(out.split("\nredline: error")[0])["deleted"] == 0
    assert "watched folder is missing" in out


def test_a_folder_that_cannot_be_read_is_an_error_not_a_deletion(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """A folder below a watched one that cannot be listed (chmod 000, a wrong owner after
    a deploy) is reported (exit 1) and the statements under it are kept: not `deleted`
    now, and not `restored` once it can be read again."""
    folder = tmp_path / "statements"
    (folder / "sub").mkdir(parents=True)
    src = sorted((sample / "current").rglob("*.md"))
    shutil.copy(src[0], folder / "a.md")
    shutil.copy(src[1], folder / "sub" / "b.md")
    shutil.copy(src[2], folder / "sub" / "c.md")
    cfg = write_config(tmp_path, db_url, [folder])
    prefix = unprivileged()

    def ingest() -> tuple[int, dict[str, int], str]:
        proc = subprocess.run([*prefix, sys.executable, "-m", "daemon", "--config", str(cfg),
                               "ingest", "--json"], capture_output=True, text=True,
                              timeout=120)
        return proc.returncode, json.loads(proc.stdout), proc.stderr

    assert ingest()[:2] == (0, {"files": 3, "added": 3, "revised": 0, "metadata": 0,
                                "formatting": 0, "deleted": 0, "restored": 0, "unchanged": 0,
                                "rejected": 0})
    (folder / "sub").chmod(0)
    try:
        code, counts, err = ingest()
    finally:
        (folder / "sub").chmod(0o755)
    assert (code, counts["deleted"], counts["unchanged"]) == (1, 0, 1)
    assert err == (f"redline: error: {folder / 'sub'}: folder cannot be read (Permission "
                   "denied); its 2 known files are kept, not deleted\n")
    code, counts, err = ingest()
    assert (code, counts["restored"], counts["unchanged"], err) == (0, 0, 3, "")


def test_a_file_unreadable_then_mended_is_ingested_by_the_next_pass(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """A file the ingest may not read is rejected (`unreadable`, exit 3); once its
    permissions are mended — which changes neither its size, its mtime nor its inode —
    the next pass reads it again and ingests it (SPEC §2: a fixed file is ingested)."""
    folder = tmp_path / "statements"
    folder.mkdir()
    src = sorted((sample / "current").rglob("*.md"))
    shutil.copy(src[0], folder / "a.md")
    shutil.copy(src[1], folder / "b.md")
    (folder / "b.md").chmod(0)
    cfg = write_config(tmp_path, db_url, [folder])
    prefix = unprivileged()

    def ingest() -> tuple[int, dict[str, int]]:
        proc = subprocess.run([*prefix, sys.executable, "-m", "daemon", "--config", str(cfg),
                               "ingest", "--json"], capture_output=True, text=True,
                              timeout=120)
        return proc.returncode, json.loads(proc.stdout)

    code, counts = ingest()
    assert (code, counts["added"], counts["rejected"]) == (3, 1, 1)
    assert run_errors(cfg) == [(str(folder / "b.md"), "unreadable")]
    (folder / "b.md").chmod(0o644)
    code, counts = ingest()
    assert (code, counts["added"], counts["unchanged"], counts["rejected"]) == (0, 1, 1, 0)
    assert run_errors(cfg) == []


def run_errors(cfg: Path) -> list[tuple[str, str]]:
    result = CliRunner().invoke(cli, ["--config", str(cfg), "errors", "--json"])
    return [(e["path"], e["reason"]) for e in json.loads(result.output)]


def test_files_that_pass_their_statements_along_are_no_change(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """Between two passes, files swap their statements (a.md and b.md exchange names), or
    each takes the next one's (a scraper's 1.md, 2.md, 3.md shifted by one): no statement
    is deleted and restored, and only the one really new is added."""
    folder = tmp_path / "statements"
    folder.mkdir()
    src = sorted((sample / "current").rglob("*.md"))[:4]
    for name, f in zip(("a", "b", "1", "2"), src, strict=True):
        shutil.copy(f, folder / f"{name}.md")
    cfg = write_config(tmp_path, db_url, [folder])
    assert json.loads(run(cfg, "--json")[1])["added"] == 4
    os.rename(folder / "a.md", folder / "t.md")
    os.rename(folder / "b.md", folder / "a.md")
    os.rename(folder / "t.md", folder / "b.md")
    os.rename(folder / "2.md", folder / "3.md")  # 3 <- 2 <- 1 <- new
    os.rename(folder / "1.md", folder / "2.md")
    shutil.copy(sorted((sample / "current").rglob("*.md"))[4], folder / "1.md")
    code, out = run(cfg, "--json")
    assert code == 0
    counts = json.loads(out)
    assert (counts["added"], counts["deleted"], counts["restored"]) == (1, 0, 0)


def test_the_last_file_of_a_folder_is_withdrawn_with_confirm_empty(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """Removing the last files of a watched folder looks like an unmount: exit 1, nothing
    deleted. `--confirm-empty` records them deleted; afterwards the empty folder is no
    error. A missing folder stays an error even then."""
    folder, other = tmp_path / "withdrawn", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    first, second = sorted((sample / "current").rglob("*.md"))[:2]
    shutil.copy(first, folder / "last.md")
    shutil.copy(second, other / "o.md")
    cfg = write_config(tmp_path, db_url, [folder, other])
    assert run(cfg, "--json")[0] == 0
    (folder / "last.md").unlink()
    code, out = run(cfg, "--json")
    assert code == 1 and json.loads(out.split("\nredline: error")[0])["deleted"] == 0
    assert "suddenly empty" in out
    code, out = run(cfg, "--json", "--confirm-empty")
    assert code == 0 and json.loads(out)["deleted"] == 1
    code, out = run(cfg, "--json")  # the empty folder is no error any more
    assert code == 0 and json.loads(out)["unchanged"] == 1 and json.loads(out)["deleted"] == 0
    shutil.rmtree(other)
    code, out = run(cfg, "--json", "--confirm-empty")
    assert code == 1 and "watched folder is missing" in out
    assert json.loads(out.split("\nredline: error")[0])["deleted"] == 0


def _ingest_process(cfg: Path, *args: str) -> tuple[int, str, str, set[str]]:
    """`redline ingest` as a user runs it: exit status, stdout, stderr, and the names of
    the modules it imported (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "daemon", "--config",
                           str(cfg), "ingest", *args], capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines
                if line.startswith("import time:")}
    stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    return proc.returncode, proc.stdout, stderr, imported


def test_a_no_change_ingest_answers_from_the_files_stat_alone(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """A second `redline ingest` over an unchanged tree (one file still rejected) gives the
    counts, summary line and exit status of a full pass; on SQLite it answers without
    loading SQLAlchemy or the parsers (their imports were most of a no-change pass). Any
    change makes it a full pass again."""
    folder = tmp_path / "statements"
    shutil.copytree(sample / "current", folder)
    (folder / "bad.md").write_text("no front matter\n")
    cfg = write_config(tmp_path, db_url, [folder])
    n = len(list(folder.rglob("*.md")))
    assert _ingest_process(cfg, "--json")[0] == 3
    quick = db_url.startswith("sqlite")

    code, out, err, imported = _ingest_process(cfg, "--json")
    assert (code, json.loads(out), err) == (3, {
        "files": n, "added": 0, "revised": 0, "metadata": 0, "formatting": 0, "deleted": 0,
        "restored": 0, "unchanged": n - 1, "rejected": 1}, "")
    assert {"sqlalchemy" in imported, "yaml" in imported, "structlog" in imported} == {
        not quick}
    code, out, err, imported = _ingest_process(cfg)
    assert code == 3 and ("sqlalchemy" in imported) != quick
    assert re.fullmatch(rf"{n} files in \d+\.\d s: no changes; {n - 1} unchanged, "
                        r"1 rejected\n", out)
    assert err == "1 file(s) rejected: see `redline errors`"

    edited = sorted(p for p in folder.rglob("*.md") if p.name != "bad.md")[0]
    edited.write_text(edited.read_text() + "\nOne more sentence.\n")
    code, out, err, imported = _ingest_process(cfg, "--json")
    assert code == 3 and "sqlalchemy" in imported, err
    assert {k: v for k, v in json.loads(out).items() if v} == {
        "files": n, "revised": 1, "unchanged": n - 2, "rejected": 1}
    (folder / "bad.md").unlink()  # its rejection is stale: the full pass removes it
    code, out, err, imported = _ingest_process(cfg, "--json")
    assert code == 0 and "sqlalchemy" in imported, err
    assert {k: v for k, v in json.loads(out).items() if v} == {
        "files": n - 1, "unchanged": n - 1}
    code, out, err, imported = _ingest_process(cfg, "--json")
    assert code == 0 and ("sqlalchemy" in imported) != quick
    assert {k: v for k, v in json.loads(out).items() if v} == {
        "files": n - 1, "unchanged": n - 1}


def test_a_file_name_that_is_not_utf8_is_a_rejection_not_a_crash(
        db_url: str, sample: Path, tmp_path: Path) -> None:
    """A file whose name is not UTF-8 (any bytes are allowed on Linux) beside a good one:
    the good one is ingested, the other is listed by `redline errors` under its name with
    the bytes as \\xNN, and the ingest exits 3 without a traceback; so does the next one
    (the quick answer on SQLite). Renamed, it is ingested and the rejection is gone."""
    folder = tmp_path / "statements"
    folder.mkdir()
    good, other = sorted((sample / "current").rglob("*.md"))[:2]
    shutil.copy(good, folder / "good.md")
    bad = folder / os.fsdecode(b"bad\xff.md")
    shutil.copy(other, bad)
    cfg = write_config(tmp_path, db_url, [folder])
    for counts, quick in (({"files": 2, "added": 1, "rejected": 1}, False),
                          ({"files": 2, "unchanged": 1, "rejected": 1},
                           db_url.startswith("sqlite"))):
        code, out, err, imported = _ingest_process(cfg, "--json")
        assert (code, err) == (3, ""), err
        assert ("sqlalchemy" in imported) != quick
        assert {k: v for k, v in json.loads(out).items() if v} == counts
        errors = CliRunner().invoke(cli, ["--config", str(cfg), "errors"])
        assert errors.exit_code == 0, errors.output
        assert [line.split()[:2] for line in errors.output.splitlines()[1:]] == [
            [f"{folder}/bad\\xff.md", "bad_file_name"]]
        assert "not valid UTF-8" in errors.output and "rename the file" in errors.output
    bad.rename(folder / "renamed.md")
    code, out, err, _imported = _ingest_process(cfg, "--json")
    assert (code, err) == (0, ""), err
    assert {k: v for k, v in json.loads(out).items() if v} == {
        "files": 2, "added": 1, "unchanged": 1}
    errors = CliRunner().invoke(cli, ["--config", str(cfg), "errors"])
    assert errors.output == "no rejected files\n"


def test_the_quick_answer_equals_the_full_pass_or_leaves_it_the_work(
        sample: Path, tmp_path: Path) -> None:
    """quick_unchanged gives exactly the full pass's counts when nothing changed, and None
    (the full pass runs and says what is wrong) for no database yet, a schema not at head,
    a watched folder gone, or a database other than a SQLite file."""
    folder = tmp_path / "statements"
    shutil.copytree(sample / "current", folder)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    cfg = write_config(tmp_path, url, [folder])
    config = load_config(cfg, {})
    assert quick_unchanged(config) is None
    assert run(cfg)[0] == 0
    engine = make_engine(url)
    quick = quick_unchanged(config)
    assert quick is not None and quick.unchanged == quick.files > 10
    assert quick == Ingestor(engine, config.watch).scan()
    assert quick_unchanged(config, [str(folder / "briefings-statements")]) == Ingestor(
        engine, config.watch).scan([str(folder / "briefings-statements")])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))
    assert quick_unchanged(config) is None
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"),
                     {"v": SCHEMA_HEAD})
    assert quick_unchanged(config) == quick
    folder.rename(tmp_path / "elsewhere")
    assert quick_unchanged(config) is None
    engine.dispose()
    pg = parse_config({"watch": {"paths": [str(tmp_path / "elsewhere")]}}, tmp_path,
                      {"REDLINE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1/x"})
    assert quick_unchanged(pg) is None


def _snapshot(url: str) -> list[tuple]:
    engine = make_engine(url)
    with engine.connect() as conn:
        revs = conn.execute(sa.text(
            "SELECT source_url, revision_number, kind, content_sha256, path "
            "FROM statement_revisions ORDER BY source_url, revision_number")).all()
        evs = conn.execute(sa.text(
            "SELECT source_url, to_revision, kind, words_added, words_removed, summary "
            "FROM change_log ORDER BY source_url, to_revision")).all()
        files = conn.execute(sa.text("SELECT path, file_sha256 FROM files ORDER BY path")).all()
    engine.dispose()
    return [tuple(r) for r in revs] + [tuple(e) for e in evs] + [tuple(f) for f in files]


def _big_folder(sample: Path, dest: Path, copies: int) -> None:
    for i in range(copies):
        for src in (sample / "current").rglob("*.md"):
            data = src.read_bytes()
            suffix = f"/c{i}/".encode()
            data = re.sub(rb"^(source_url: \S+?)/?$", lambda m, s=suffix: m.group(1) + s,
                          data, count=1, flags=re.M)
            out = dest / f"c{i}" / src.relative_to(sample / "current")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
def test_kill_9_mid_ingest_then_ingest_again_equals_an_uninterrupted_run(
        db_url: str, sample: Path, tmp_path: Path, how: str) -> None:
    """SIGKILL (or Ctrl-C: SIGINT to the process group, which stops after the current
    transaction with status 1, SPEC §6) during a large ingest, then another ingest: exactly the
    database an uninterrupted run builds (no duplicate revisions, no missing events), and
    the reader process does not outlive the ingest."""
    import psutil

    folder = tmp_path / "statements"
    _big_folder(sample, folder, 100)  # ~3,000 files: several commit batches, and time left
    cfg = write_config(tmp_path, db_url, [folder])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C reaches a program only where SIGINT is not ignored; a test runner started in
    # the background ignores it, and its children inherit that: restore it for this one.
    launcher = ["-c", "import runpy, signal, sys; "
                "signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv[0] = 'redline'; runpy.run_module('daemon', run_name='__main__')"]
    proc = subprocess.Popen([sys.executable, *launcher, "--config", str(cfg), "ingest"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    engine = make_engine(db_url)
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with engine.connect() as conn:
                seen = conn.execute(sa.text("SELECT count(*) FROM statements")).scalar() or 0
        except sa.exc.DBAPIError:
            seen = 0  # schema not created yet
        if seen > 0:
            break
        time.sleep(0.02)
    engine.dispose()
    children = psutil.Process(proc.pid).children()
    assert proc.poll() is None, "the ingest finished before it could be killed"
    if how == "kill-9":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=30)
    stderr = proc.stderr.read()
    assert code == (-signal.SIGKILL if how == "kill-9" else 1), stderr.decode()[-2000:]
    assert seen > 0 and children, "a pass this large is read by a reader process"
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "the reader process ends with the ingest"
    if how == "ctrl-c":
        assert b"Traceback" not in stderr and b"interrupted after a whole transaction" in stderr
    code, out = run(cfg, "--json")
    assert code == 0, out
    interrupted = _snapshot(db_url)
    # the reference: an uninterrupted run over the same files into a fresh database
    ref_url = f"sqlite:///{tmp_path / 'reference.db'}"
    (tmp_path / "ref").mkdir()
    ref_cfg = write_config(tmp_path / "ref", ref_url, [folder])
    assert run(ref_cfg, "--json")[0] == 0
    assert interrupted == _snapshot(ref_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:  # the search index too: exactly the current words
        assert search_index_drift(conn) == []
    engine.dispose()


def test_ctrl_c_first_asks_to_stop_second_aborts() -> None:
    """The first SIGINT only sets the stop flag (it cannot be lost in a GC callback); a
    second raises KeyboardInterrupt; the previous handler is back afterwards."""
    from daemon.cli.ingest import _CtrlC

    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        previous = signal.getsignal(signal.SIGINT)
        with _CtrlC() as ctrl_c:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs between bytecodes of this thread
            assert ctrl_c.pressed.is_set()
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is previous
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_summary_line_counts_one_file_in_the_singular() -> None:
    """'1 file in …', not '1 files'."""
    from daemon.cli.ingest import _summary
    from daemon.survey import IngestCounts

    assert _summary(IngestCounts(files=1, added=1), 0.04) == (
        "1 file in 0.0 s: 1 added; 0 unchanged, 0 rejected")
    assert _summary(IngestCounts(files=2, unchanged=2), 1.26).startswith("2 files in 1.3 s")


def test_a_server_that_refuses_the_writes_is_one_line_not_a_traceback(
        pg_url: str, sample: Path, tmp_path: Path) -> None:
    """A read-only PostgreSQL (a standby, default_transaction_read_only) or a role without
    write privileges refuses the ingest's writes with a ProgrammingError or an
    InternalError, not an OperationalError: `redline ingest` printed the whole traceback.
    It is one line with the server's words, exit 1, like an unreachable database."""
    folder = tmp_path / "statements"
    cfg = write_config(tmp_path, pg_url, [folder])
    shutil.copy(sorted((sample / "current").rglob("*.md"))[0], folder / "a.md")
    assert CliRunner().invoke(cli, ["--config", str(cfg), "db", "upgrade"]).exit_code == 0
    engine = make_engine(pg_url)
    database = engine.url.database
    with engine.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{database}" SET default_transaction_read_only '
                             "= on"))
        conn.commit()
    engine.dispose()
    result = CliRunner().invoke(cli, ["--config", str(cfg), "ingest"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("redline: error: database: cannot execute ")
    assert lines[0].endswith(" in a read-only transaction")

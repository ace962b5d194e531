"""Tests for `redline status|history|diff|search|events|errors` through the real CLI entry
point, on the replayed record in a real SQLite file and a real PostgreSQL database. Output
is compared line for line; every error is one line on stderr with its exit code."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import REPO, file_state, leave_heartbeat_in_wal, write_config
from test_migrations import VIEW_COLUMNS
from test_query import (
    MEXICAN_WAR,
    START,
    WORKERS_NEW,
    WORKERS_OLD,
    Record,
    RecordTemplates,
    StepClock,
    as_list,
    open_record,
    record_templates_in,
)

from daemon.cli import cli
from daemon.cli.app import run_cli
from daemon.config import WatchConfig
from daemon.ingest import Ingestor


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def redline(cfg: Path, *args: str) -> Result:
    """Run the CLI as `redline --config cfg ARGS` does (RedlineError -> one line + code)."""
    runner = CliRunner()
    with runner.isolation() as streams:
        code = run_cli(cli, ["--config", str(cfg), *args])
    out, err = streams[0].getvalue().decode(), streams[1].getvalue().decode()
    return Result(code, out, err)


@pytest.fixture(scope="module")
def record_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordTemplates]:
    with record_templates_in(tmp_path_factory.mktemp("record")) as templates:
        yield templates


@pytest.fixture
def record(db_url: str, record_templates: RecordTemplates) -> Iterator[Record]:
    """The sample's real revision chains replayed into the test's database."""
    with open_record(db_url, record_templates) as rec:
        yield rec


@pytest.fixture
def cfg(record: Record, tmp_path: Path) -> Path:
    return write_config(tmp_path, record.url)


def ok(result: Result) -> Result:
    assert (result.code, result.err) == (0, ""), result.err
    return result


def test_status_prints_the_counts_and_json_agrees_with_sql(cfg: Path, record: Record) -> None:
    """`status` prints one line per fact; `status --json` holds the same counts as SQL."""
    assert ok(redline(cfg, "status")).lines == [
        "statements: 35 (35 live, 0 deleted)",
        "revisions: 87 (35 added, 33 revised, 14 metadata, 5 formatting)",
        "last change: 2026-03-01T14:53:00Z metadata of statement 35: "
        "Partnership for Workers’\u00a0Rights",
        "rejected files: 0",
        "deliveries: 0 pending, 0 failed, 0 dead, 0 delivered",
        "watcher: not running",
    ]
    st = json.loads(ok(redline(cfg, "status", "--json")).out)
    with record.reader.connect() as conn:
        def one(q: str) -> int:
            return int(conn.execute(sa.text(q)).scalar_one())
        assert st["statements"]["total"] == one("SELECT count(*) FROM current_statements")
        assert st["revisions"]["total"] == one("SELECT count(*) FROM statement_revisions")
        for kind, n in st["revisions"]["by_kind"].items():
            assert n == one(f"SELECT count(*) FROM statement_revisions WHERE kind = '{kind}'")
        assert st["rejected_files"] == one("SELECT count(*) FROM ingest_errors")
        assert sum(st["deliveries"].values()) == one("SELECT count(*) FROM delivery_status")
        assert st["last_change"]["event_id"] == one("SELECT max(event_id) FROM change_log")


def test_status_shows_a_running_watcher(cfg: Path, record: Record) -> None:
    """A fresh heartbeat row makes the watcher line say where and how it runs."""
    seen = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
    with record.writer.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO heartbeats (instance, hostname, pid, started_at, seen_at, watching, "
            "status) VALUES ('a', 'news-1', 4242, :t, :t, :w, 'watching 2 folders')"),
            {"t": seen.replace(tzinfo=None), "w": True})
    stamp = seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ok(redline(cfg, "status")).lines[-1] == (
        f"watcher: running on news-1 (pid 4242), watching, seen {stamp}: watching 2 folders")


def test_history_by_old_url_lists_every_revision(cfg: Path) -> None:
    """`history` finds a statement by a URL it no longer has and lists its revisions."""
    expected = [
        f"statement 35: {WORKERS_NEW}",
        "title: Partnership for Workers’\u00a0Rights",
        "rev  kind      changed               observed              summary",
        "1    added     -                     2026-03-01T14:49:00Z  new statement: 419 words",
        "2    revised   title, modified_time  2026-03-01T14:51:00Z  title changed: +0 words, "
        "-1 word; fields changed: modified_time",
        "3    metadata  source_url            2026-03-01T14:53:00Z  fields changed: source_url",
    ]
    assert ok(redline(cfg, "history", WORKERS_OLD)).lines == expected
    assert ok(redline(cfg, "history", "35")).lines == expected
    data = json.loads(ok(redline(cfg, "history", WORKERS_NEW, "--json")).out)
    assert data["statement"]["urls"] == sorted([WORKERS_OLD, WORKERS_NEW])
    assert [(r["revision_number"], r["kind"], r["changed_fields"]) for r in
            data["revisions"]] == [(1, "added", []), (2, "revised", ["title", "modified_time"]),
                                   (3, "metadata", ["source_url"])]


def _paragraph(record: Record, needle: str) -> str:
    with record.reader.connect() as conn:
        text = conn.execute(sa.text(
            "SELECT body_text FROM current_statements WHERE source_url = :u"),
            {"u": MEXICAN_WAR}).scalar_one()
    [para] = [p for p in text.split("\n\n") if needle in p]
    return str(para)


HEADER = [
    f"statement 10: {MEXICAN_WAR}",
    "title: America 250: Presidential Message on the Anniversary of Our Victory in the "
    "Mexican-American War",
    "from: r1 added 2026-03-01T12:49:00Z",
    "to:   r2 revised 2026-03-01T12:51:00Z",
    "changed: body, modified_time",
    "  modified_time: 2026-02-02T23:53:56Z -> 2026-02-03T16:20:06Z",
    "words: +1 -1 in 1 paragraph",
    "",
]


def test_diff_words_marks_the_real_edit_inline(cfg: Path, record: Record) -> None:
    """`diff --format words` (piped) lists the changed field, then only the changed
    paragraph with `[-1856,-]{+1846,+}`, and … for the paragraphs left out."""
    para = _paragraph(record, "spring of 1846")
    marked = para.replace("1846, ", "[-1856,-]{+1846,+} ")
    assert ok(redline(cfg, "diff", MEXICAN_WAR, "--format", "words")).lines == [
        *HEADER, "…", "", marked, "", "…"]


def test_diff_unified_is_the_default(cfg: Path, record: Record) -> None:
    """The default format is a unified diff of paragraphs after the same header."""
    new = _paragraph(record, "spring of 1846")
    before = _paragraph(record, "178th anniversary")
    after = _paragraph(record, "Manifest Destiny")
    assert ok(redline(cfg, "diff", "10")).lines == [
        *HEADER, "--- r1", "+++ r2", "@@ -2,3 +2,3 @@", f" {before}",
        f"-{new.replace('1846, they', '1856, they')}", f"+{new}", f" {after}"]


def test_diff_json_and_revision_choice(cfg: Path) -> None:
    """`diff --format json` (or --json) carries the metadata changes and the word ops;
    --from/--to pick the revisions."""
    d = json.loads(ok(redline(cfg, "diff", MEXICAN_WAR, "--format", "json")).out)
    assert d == json.loads(ok(redline(cfg, "diff", MEXICAN_WAR, "--json")).out)
    assert d == json.loads(ok(redline(cfg, "diff", MEXICAN_WAR, "--json", "--format",
                                      "JSON")).out)
    # two formats asked for: one line, exit 2, rather than silently one of them
    both = redline(cfg, "diff", MEXICAN_WAR, "--json", "--format", "html")
    assert (both.code, both.out, both.err) == (
        2, "", "redline: error: --json and --format html ask for two formats: give one\n")
    assert d["metadata_changes"] == [{"field": "modified_time", "old": "2026-02-02T23:53:56Z",
                                      "new": "2026-02-03T16:20:06Z"}]
    assert [w for w in d["words"] if w["op"] != "equal"] == [
        {"op": "delete", "text": "1856,"}, {"op": "insert", "text": "1846,"}]
    span = json.loads(ok(redline(cfg, "diff", WORKERS_OLD, "--from", "1", "--to", "3",
                                 "--json")).out)
    assert (span["from"]["revision_number"], span["to"]["revision_number"]) == (1, 3)
    assert span["changed_fields"] == ["title", "modified_time", "source_url"]
    assert ok(redline(cfg, "diff", "35", "--format", "words")).lines[-3:] == [
        "words: +0 -0 in 0 paragraphs", "", "(no text change)"]


def test_diff_json_words_hold_no_empty_run(cfg: Path, record: Record) -> None:
    """The title's "# " marker is stripped from the first word run; where the title's first
    word itself changed (revision 2 of the workers' statement) or the first revision is
    compared with nothing, that left `{"op": "equal", "text": ""}` at the head of `words`,
    a run the notification body of the same event leaves out (SPEC §7, §10)."""
    first = json.loads(ok(redline(cfg, "diff", WORKERS_OLD, "--to", "1", "--json")).out)
    assert [w["op"] for w in first["words"]] == ["insert"]
    assert first["words"][0]["text"].startswith("U.S.-Brazil Partnership for Workers")
    for frm, to in (("1", "2"), ("2", "3"), ("1", "3")):
        d = json.loads(ok(redline(cfg, "diff", WORKERS_OLD, "--from", frm, "--to", to,
                                  "--json")).out)
        assert d["words"] and all(w["text"] for w in d["words"]), (frm, to, d["words"][:2])


def test_diff_output_to_a_file_that_cannot_be_written_is_one_line(cfg: Path,
                                                                   tmp_path: Path) -> None:
    """`diff -o FILE` into a folder that does not exist (a typo) printed a traceback; a
    wrong path is a bad argument (exit 2), a failing device a failure (exit 1): one line."""
    missing = tmp_path / "no-such-folder" / "diff.html"
    res = redline(cfg, "diff", MEXICAN_WAR, "--format", "html", "-o", str(missing))
    assert (res.code, res.out, res.err) == (
        2, "", f"redline: error: -o {missing}: cannot write it: No such file or directory\n")
    under_a_file = tmp_path / "config.toml" / "diff.html"
    res = redline(cfg, "diff", MEXICAN_WAR, "-o", str(under_a_file))
    assert (res.code, res.err) == (
        2, f"redline: error: -o {under_a_file}: cannot write it: Not a directory\n")
    if Path("/dev/full").exists():
        res = redline(cfg, "diff", MEXICAN_WAR, "-o", "/dev/full")
        assert (res.code, res.err) == (
            1, "redline: error: -o /dev/full: cannot write it: No space left on device\n")


def test_a_diff_without_a_text_change_says_so_in_every_format(cfg: Path) -> None:
    """Revision 3 of the workers' statement only moved its URL. The unified diff (the
    default) was a lone newline: a blank line piped, `"unified": "\\n"` in JSON, where the
    words format and the notification payload say there is no text change."""
    unified = ok(redline(cfg, "diff", WORKERS_NEW))
    assert unified.lines[-3:] == ["words: +0 -0 in 0 paragraphs", "", "(no text change)"]
    assert json.loads(ok(redline(cfg, "diff", WORKERS_NEW, "--json")).out)["unified"] == ""


def test_diff_html_is_a_standalone_escaped_page(cfg: Path, record: Record,
                                                tmp_path: Path) -> None:
    """`diff --format html` writes a whole page: metadata of both revisions, the changed
    fields, and the text with <del>/<ins>; statement text is escaped, never live HTML."""
    page = ok(redline(cfg, "diff", MEXICAN_WAR, "--format", "html")).out
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">") and page.endswith("</html>\n")
    assert "<del>1856,</del><ins>1846,</ins> they voted" in page
    assert "<li><b>modified_time</b>: <del>2026-02-02T23:53:56Z</del> &rarr; " \
           "<ins>2026-02-03T16:20:06Z</ins></li>" in page
    assert "<tr><th>kind</th><td>added</td><td>revised</td></tr>" in page
    assert page.index("<h2>Changed fields</h2>") < page.index('<div class="text">')
    # hostile text in a statement stays text
    root = tmp_path / "hostile"
    root.mkdir()
    f = root / "x.md"
    ing = Ingestor(record.writer, WatchConfig(paths=(root,)), clock=StepClock(START))
    front = "---\nsource_url: https://example.org/x\ntitle: 'Fish & <b>Chips</b>'\n" \
            "date: '2026-01-01'\n---\n"
    f.write_text(front + "Say \\<script>alert(1)\\</script> & more.\n")
    ing.process_paths([str(f)])
    f.write_text(front + "Say \\<script>alert(2)\\</script> & more.\n")
    ing.process_paths([str(f)])
    out = tmp_path / "diff.html"
    res = ok(redline(cfg, "diff", "https://example.org/x", "--format", "html", "-o", str(out)))
    assert res.out == ""
    page = out.read_text()
    assert "<script" not in page and "<b>Chips" not in page
    assert "<h1>Fish &amp; &lt;b&gt;Chips&lt;/b&gt;</h1>" in page
    assert "Say <del>&lt;script&gt;alert(1)&lt;/script&gt;</del><ins>&lt;script&gt;alert(2)" \
           "&lt;/script&gt;</ins> &amp; more.</div>" in page


def test_search_ranks_and_marks(cfg: Path, record: Record) -> None:
    """`search` prints the best match first with its id, title and a marked snippet."""
    title = ("America 250: Presidential Message on the Anniversary of Our Victory in the "
             "Mexican-American War")
    lines = ok(redline(cfg, "search", "Guadalupe")).lines
    snippet = {
        "sqlite": "…paving the way to the Treaty of ⟦Guadalupe⟧ Hidalgo on February 2, 1848, "
                  "formally ceding 525…",
        "postgresql": lines[1].split("  ")[-1],
    }[record.writer.dialect.name]
    assert "⟦Guadalupe⟧ Hidalgo" in snippet
    assert lines == [f"id  {'title'.ljust(len(title))}  snippet", f"10  {title}  {snippet}"]
    ranked = ok(redline(cfg, "search", "sovereignty")).lines
    assert [ln.split()[0] for ln in ranked] == ["id", "10", "7"]
    hits = json.loads(ok(redline(cfg, "search", "sovereignty", "--json")).out)
    assert [h["statement_id"] for h in hits] == [10, 7]
    assert hits[0]["rank"] > hits[1]["rank"]


def test_events_filter_by_since_and_kind(cfg: Path) -> None:
    """`events --since` keeps changes at or after the time; `--kind` keeps one kind."""
    assert ok(redline(cfg, "events", "--since", "2026-03-01T14:40:00Z", "--kind",
                      "metadata")).lines == [
        "event  occurred              kind      statement  rev   summary                        "
        "title",
        "87     2026-03-01T14:53:00Z  metadata  35         2->3  fields changed: source_url     "
        "Partnership for Workers’\u00a0Rights",
        "84     2026-03-01T14:47:00Z  metadata  34         1->2  fields changed: modified_time  "
        "First Lady Jill\u00a0Biden Unveils New Installation of The Military Children’s Corner "
        "in Celebration of Month of the Military\u00a0Child",
        "82     2026-03-01T14:43:00Z  metadata  33         1->2  fields changed: modified_time"
        "  Readout of Latest Supply Chain Disruptions Task Force\u00a0Meeting",
    ]
    assert ok(redline(cfg, "events", "--kind", "formatting", "--limit", "2")).lines == [
        "event  occurred              kind        statement  rev   summary                 title",
        "74     2026-03-01T14:27:00Z  formatting  29         1->2  formatting only: title  "
        "Remarks by Vice President Harris at the Worker Task Force Employers’\u00a0Roundtable",
        "54     2026-03-01T13:47:00Z  formatting  21         1->2  formatting only: title  "
        "Press Release: Notice on the Continuation of the National Emergency with Respect to "
        "Transnational Criminal Organizations",
    ]
    rows = json.loads(ok(redline(cfg, "events", "--since", "2026-03-01T14:49:00Z",
                                 "--json")).out)
    assert [(r["event_id"], r["kind"], r["occurred_at"]) for r in rows] == [
        (87, "metadata", "2026-03-01T14:53:00Z"), (86, "revised", "2026-03-01T14:51:00Z"),
        (85, "added", "2026-03-01T14:49:00Z")]


def test_errors_lists_rejected_files(cfg: Path, record: Record, tmp_path: Path) -> None:
    """`errors` says `no rejected files`, then lists a rejected file with its reason."""
    assert ok(redline(cfg, "errors")).lines == ["no rejected files"]
    assert json.loads(ok(redline(cfg, "errors", "--json")).out) == []
    bad = tmp_path / "statements" / "bad.md"
    bad.write_bytes(b"# no front matter\n")
    Ingestor(record.writer, WatchConfig(paths=(bad.parent,)),
             clock=StepClock(START)).process_paths([str(bad)])
    lines = ok(redline(cfg, "errors")).lines
    assert lines[0].split() == ["path", "reason", "detail", "last", "seen"]
    assert len(lines) == 2 and lines[1].startswith(f"{bad}  no_front_matter  ")
    assert lines[1].endswith("  2026-03-01T12:01:00Z")
    [row] = json.loads(ok(redline(cfg, "errors", "--json")).out)
    assert (row["path"], row["reason"]) == (str(bad), "no_front_matter")


def test_json_rows_carry_the_spec_view_columns_by_name(cfg: Path, record: Record,
                                                       tmp_path: Path) -> None:
    """`events --json` prints change_log rows (plus the revision's tags) and `errors --json`
    ingest_errors rows under the SPEC §4 column names, with the views' values (times as
    ISO 8601 with Z, JSON arrays as lists); `status --json` has the README's keys."""
    events = json.loads(ok(redline(cfg, "events", "--limit", "10000", "--json")).out)
    with record.reader.connect() as conn:
        view = conn.execute(sa.text("SELECT * FROM change_log ORDER BY event_id DESC")).all()
    assert len(events) == len(view) == 87
    for row, want in zip(events, view, strict=True):
        assert list(row) == [*VIEW_COLUMNS["change_log"], "tags"]
        assert row["occurred_at"].endswith("Z") and isinstance(row["tags"], list)
        got = {k: v for k, v in row.items() if k not in ("occurred_at", "tags")}
        assert got == {k: (as_list(v) if k == "changed_fields" else v)
                       for k, v in want._asdict().items() if k != "occurred_at"}
    bad = tmp_path / "statements" / "bad.md"  # the folder cfg watches
    bad.write_bytes(b"---\ntitle: no URL\n---\n")
    Ingestor(record.writer, WatchConfig(paths=(bad.parent,)),
             clock=StepClock(START)).process_paths([str(bad)])
    [error] = json.loads(ok(redline(cfg, "errors", "--json")).out)
    assert list(error) == VIEW_COLUMNS["ingest_errors"]
    assert (error["path"], error["reason"], error["first_seen_at"], error["last_seen_at"]) == (
        str(bad), "missing_field", "2026-03-01T12:01:00Z", "2026-03-01T12:01:00Z")
    status = json.loads(ok(redline(cfg, "status", "--json")).out)
    assert {k: list(v) if isinstance(v, dict) else None for k, v in status.items()} == {
        "statements": ["total", "live", "deleted"], "revisions": ["total", "by_kind"],
        "last_change": [*VIEW_COLUMNS["change_log"], "tags"], "rejected_files": None,
        "deliveries": ["pending", "delivered", "failed", "dead"],
        "waiting_by_channel": [],  # channel names, and this record has no deliveries
        "watcher": ["running", "watching", "instances"]}
    assert list(status["revisions"]["by_kind"]) == [
        "added", "revised", "metadata", "formatting", "deleted", "restored"]
    assert (status["statements"]["live"], status["rejected_files"]) == (35, 1)


ERRORS = [
    (["history", "https://example.org/nope"], 1,
     "no statement has the URL https://example.org/nope (see `redline search`)"),
    (["history", "999"], 1, "no statement with id 999"),
    (["search", "zzyzx"], 1, "no statement matches 'zzyzx'"),
    (["search", "-zzyzx"], 2, "search needs at least one word to look for"),
    (["search", "war", "--limit", "0"], 2,
     "limit must be a whole number from 1 to 10000, not '0'"),
    (["events", "--since", "2027-01-01"], 1, "no events match since 2027-01-01"),
    (["events", "--since", "yesterday"], 2, "since 'yesterday' is not a time: use e.g. "
                                            "2026-02-03, 2026-02-03T16:44:17Z or 7d, 12h, 30m"),
    (["events", "--kind", "edited"], 2, "kind must be one of added, revised, metadata, "
                                        "formatting, deleted, restored, not 'edited'"),
    (["diff", MEXICAN_WAR, "--from", "x"], 2,
     "from must be a revision number (1, 2, ...), not 'x'"),
    (["diff", MEXICAN_WAR, "--to", "9"], 1, "statement 10 has no revision 9 (it has 1 to 2)"),
    (["diff", MEXICAN_WAR, "--from", "2", "--to", "1"], 2,
     "from (2) must be an earlier revision than to (1)"),
    (["diff", MEXICAN_WAR, "--format", "pdf"], 2,
     "--format must be one of unified, words, json, html, not 'pdf'"),
]


def test_every_error_is_one_line_with_its_exit_code(cfg: Path) -> None:
    """Unknown statements, empty results and bad arguments: the SPEC exit code, nothing on
    stdout, exactly one line on stderr, no traceback."""
    for args, code, message in ERRORS:
        res = redline(cfg, *args)
        assert (res.code, res.out, res.err) == (code, "", f"redline: error: {message}\n"), args


ODD_INPUTS = [
    (["history", "99999999999999999999999999"], 1,
     "no statement with id 99999999999999999999999999"),
    (["history", str(2**63)], 1, f"no statement with id {2**63}"),
    (["diff", "99999999999999999999999999"], 1,
     "no statement with id 99999999999999999999999999"),
    (["events", "--since", "9999999d"], 2,
     "since '9999999d' is out of range: a time must fall in the years 1 to 9999 (UTC)"),
    (["events", "--since", "99999999999999999999w"], 2, "since '99999999999999999999w' is out "
                                                       "of range: a time must fall in the "
                                                       "years 1 to 9999 (UTC)"),
    (["events", "--since", "0001-01-01T00:00:00+14:00"], 2, "since '0001-01-01T00:00:00+14:00'"
     " is out of range: a time must fall in the years 1 to 9999 (UTC)"),
    (["events", "--limit", "²"], 2, "limit must be a whole number from 1 to 10000, not '²'"),
    (["diff", MEXICAN_WAR, "--to", "²"], 2, "to must be a revision number (1, 2, ...), not '²'"),
]


def test_odd_numbers_and_times_are_one_line_not_a_traceback(cfg: Path) -> None:
    """Ids beyond 64 bits are unknown statements (exit 1); ages and times outside the years
    1-9999 and digits `int` refuses are bad arguments (exit 2): one line, no traceback."""
    for args, code, message in ODD_INPUTS:
        res = redline(cfg, *args)
        assert (res.code, res.out, res.err) == (code, "", f"redline: error: {message}\n"), args


def test_a_very_long_statement_name_is_not_echoed_in_full(cfg: Path) -> None:
    """A 100,000-character URL (a pasted page, a runaway script) was repeated whole in the
    error line; it is cut at 300 characters with the length said. Still exit 1, one line."""
    url = "https://www.whitehouse.gov/" + "a" * 100_000
    for name in (url, "9" * 100_000):
        res = redline(cfg, "history", name)
        assert (res.code, res.out) == (1, "")
        assert res.err.endswith(f"{name[:300]}… ({len(name)} characters)"
                                + (" (see `redline search`)\n" if "://" in name else "\n"))
        assert len(res.err.splitlines()) == 1 and len(res.err) < 400
    digits = "9" * 100_000  # int() refuses over 4,300 digits: it was a ValueError traceback
    for args, code in ((["diff", MEXICAN_WAR, "--to", digits], 1),
                       (["events", "--limit", digits], 2), (["search", "x", "--limit", digits], 2),
                       (["events", "--since", digits + "d"], 2),
                       (["events", "--kind", digits], 2),
                       (["diff", MEXICAN_WAR, "--format", digits], 2)):
        res = redline(cfg, *args)
        assert (res.code, res.out, len(res.err.splitlines())) == (code, "", 1), args
        assert len(res.err) < 500 and f"{digits[:250]}" in res.err and "… (" in res.err, args
    # what finds nothing is quoted back cut too: a 1,999-character search (within the
    # bound of 2,000) and a long --tag were repeated whole in "no … matches"
    for args in (["search", "a" * 1999], ["events", "--tag", "t" * 5000]):
        res = redline(cfg, *args)
        assert (res.code, res.out, len(res.err.splitlines())) == (1, "", 1), args[0]
        assert len(res.err) < 400 and "characters)" in res.err, res.err[:100]


def test_an_error_quoting_what_was_typed_is_one_line_and_obeys_no_escape(cfg: Path) -> None:
    """`redline history` with a name holding a newline and an escape sequence (a paste, a
    script's variable) printed them as they were: the error took two lines and the
    terminal cleared its screen. Every error line writes such characters as \\xNN."""
    res = redline(cfg, "history", "https://example.org/a\nb\x1b[2J\u2028c")
    assert (res.code, res.out) == (1, "")
    assert res.err == ("redline: error: no statement has the URL "
                       "https://example.org/a\\x0ab\\x1b[2J\\u2028c (see `redline search`)\n")
    res = redline(cfg, "diff", MEXICAN_WAR, "--format", "x\ty")  # repr() escaped it before
    assert (res.code, len(res.err.splitlines())) == (2, 1) and "\x1b" not in res.err


def test_an_empty_search_or_events_is_exit_1_with_json_too(cfg: Path) -> None:
    """README: an empty result of search or events exits 1, like grep finding nothing; with
    --json it did print `[]` but exited 0. It now prints `[]` (valid JSON for a pipe) and
    exits 1 with the one line on stderr."""
    for args, message in ((["search", "zzyzx"], "no statement matches 'zzyzx'"),
                          (["events", "--since", "2027-01-01"],
                           "no events match since 2027-01-01")):
        plain = redline(cfg, *args)
        assert (plain.code, plain.out, plain.err) == (1, "", f"redline: error: {message}\n")
        res = redline(cfg, *args, "--json")
        assert (res.code, json.loads(res.out), res.err) == (1, [], f"redline: error: "
                                                                   f"{message}\n"), args
    found = redline(cfg, "search", "Guadalupe", "--json")
    assert found.code == 0 and len(json.loads(found.out)) == 1


def test_an_unmigrated_database_is_one_line(tmp_path: Path, db_url: str) -> None:
    """The read commands never create the schema: an empty database is exit 1 and one line
    telling to run `redline db upgrade`."""
    cfg = write_config(tmp_path, db_url)
    for args in (["status"], ["events"], ["search", "x"]):
        res = redline(cfg, *args)
        assert res.code == 1 and res.out == "", args
        assert re.fullmatch(r"redline: error: (database schema is at nothing, this redline "
                            r"needs \w+: run `redline db upgrade`|database \S+ does not exist "
                            r"yet: run `redline ingest` or `redline db upgrade` first)\n",
                            res.err), res.err


def test_the_read_commands_never_write_to_the_sqlite_file(record_templates: RecordTemplates,
                                                          tmp_path: Path) -> None:
    """The read commands open a SQLite file read-only (`mode=ro`), as the README says: the
    file, its bytes and mtime, and its WAL stay as the writer left them. Opened read-write,
    the command's connection, the last to close, checkpointed the WAL into the file and
    deleted it — a write, by a command that only reads, perhaps run by another user. They
    still see what is only in the WAL."""
    db = tmp_path / "redline.db"
    url = f"sqlite:///{db}"
    record_templates.clone(url)
    cfg = write_config(tmp_path, url)
    wal = Path(f"{db}-wal")
    before = leave_heartbeat_in_wal(db, "news-9")
    for args in (["status", "--json"], ["history", WORKERS_NEW], ["diff", WORKERS_NEW],
                 ["search", "Mexican"], ["events", "--limit", "3"], ["errors"],
                 ["deliveries"], ["db", "current"]):
        res = redline(cfg, *args)
        assert res.code in (0, 1) and "Traceback" not in res.err, (args, res.err)
        assert (file_state(db), file_state(wal)) == before, args
    status = json.loads(ok(redline(cfg, "status", "--json")).out)
    assert [i["instance"] for i in status["watcher"]["instances"]] == ["gone"]


def test_a_text_only_split_into_paragraphs_says_so_in_the_word_view(tmp_path: Path,
                                                                    db_url: str) -> None:
    """The real pair in seeds/ (one URL, two files: the later one splits the text into six
    paragraphs, words unchanged, and changes its times): the word view's header counts 6
    changed paragraphs and +0 -0 words; under it "(no text change)" contradicted that. It
    now says only paragraph breaks moved, and where to see them."""
    folder = tmp_path / "pair"
    folder.mkdir()
    for src in sorted((REPO / "seeds" / "presidential-actions" / "2025-05").glob(
            "*vcitory-day*.md")):
        (folder / src.name).write_bytes(src.read_bytes())
        os.utime(folder / src.name, ns=(0, int(src.name[:10].replace("-", "")) * 10**9))
    cfg = write_config(tmp_path, db_url, watch=[folder])
    assert redline(cfg, "ingest").code == 0
    url = ("https://www.whitehouse.gov/presidential-actions/2025/05/"
           "vcitory-day-for-world-war-ii-2025/")
    words = ok(redline(cfg, "diff", url, "--format", "words")).lines
    assert "changed: date, published_time, modified_time" in words
    assert "words: +0 -0 in 6 paragraphs" in words
    assert words[-1] == ("(no word changed: only paragraph breaks moved; --format unified "
                         "shows where)")
    unified = ok(redline(cfg, "diff", url)).out
    assert "\n-Today, our Nation" in unified and unified.count("\n+") >= 6


def test_on_a_terminal_words_are_coloured(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the word diff is coloured instead of bracketed."""
    monkeypatch.setattr("daemon.cli.read._terminal", lambda: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = ok(redline(cfg, "diff", MEXICAN_WAR, "--format", "words")).out
    assert "[-" not in out and "{+" not in out
    assert re.search(r"\x1b\[[0-9;]*m1856,\x1b\[0m", out)
    assert re.search(r"\x1b\[[0-9;]*m1846,\x1b\[0m", out)


def test_a_reader_that_stops_reading_is_not_a_failure(cfg: Path) -> None:
    """`redline events | head -1`: the reader closes the pipe. click turned the broken pipe
    into exit 1 (the "not found" status) in spite of run_cli's own `BrokenPipeError: 0`, so
    `set -o pipefail` scripts failed. Exit 0, and no traceback on stderr."""
    import subprocess
    import sys

    for args in (["events", "--limit", "500"], ["history", MEXICAN_WAR], ["status"]):
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(cfg), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the first write: that write meets a closed pipe
        err = proc.stderr.read()
        assert (proc.wait(timeout=60), err) == (0, b""), args


def test_statement_text_is_never_rich_markup_on_a_terminal(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the tables are rich tables, and rich reads a plain string as markup: a
    title with `[/]` made `events`, `search` and `status` die with a MarkupError traceback,
    and `[red]...[/red]` coloured the terminal from a statement's words. The same for a
    rejected file's detail in `errors`. Cells are now plain text, shown as written."""
    title = "Statement on [/] tariffs [red]and[/red] duties"
    folder = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url)
    (folder / "a.md").write_text(
        f'---\nsource_url: https://example.org/a/\ntitle: "{title}"\ndate: 2025-01-01\n'
        "published_time: 2025-01-01 10:00:00-05:00\n---\nTariffs and duties, [/b] in text.\n")
    (folder / "b.md").write_text("[/] notes, not a statement\n")
    assert redline(cfg, "ingest").code == 3
    monkeypatch.setattr("daemon.cli.read._terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "400")
    for args, shown in ((["events"], title), (["search", "tariffs"], title),
                        (["status"], title), (["errors"], "(found '[/] notes, not a")):
        res = ok(redline(cfg, *args))
        assert shown in re.sub(r"\x1b\[[0-9;]*m", "", res.out), (args, res.out)


def test_piped_rows_stay_one_line_whatever_the_title_holds(db_url: str, tmp_path: Path
                                                           ) -> None:
    """README: piped, the read commands print plain columns, one row a line, separated by
    two spaces. A YAML block title (`title: |`) keeps its newline and tab, and the row
    broke in two; a double space read as a column break. White space runs are one space."""
    folder = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url)
    (folder / "a.md").write_text(
        "---\nsource_url: https://example.org/a/\ntitle: |\n  First line\n  second\tline"
        "  here\ndate: 2025-01-01\npublished_time: 2025-01-01 10:00:00-05:00\n---\n"
        "Tariffs and duties.\n")
    assert ok(redline(cfg, "ingest")).code == 0
    for args in (["events"], ["search", "tariffs"], ["status"], ["history", "1"]):
        out = ok(redline(cfg, *args)).out
        assert "First line second line here" in out, (args, out)
    rows = ok(redline(cfg, "events")).lines
    assert len(rows) == 2 and rows[1].endswith("  First line second line here")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_control_characters_of_a_statement_are_printed_not_obeyed(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """A title `"Esc \\e]0;PWNED\\a"` and a body holding `ESC [2J` reached the terminal as
    they were: `redline events` set the window title, `search` cleared the screen, and a
    file name can hold them too. Every read command now writes each control character as
    `\\x1b`; --json escapes them as JSON does."""
    monkeypatch.setattr("daemon.cli.read._terminal", lambda: terminal)
    monkeypatch.setenv("COLUMNS", "400")  # rich: no cell cut short
    folder = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [folder])
    doc = folder / "esc.md"
    for n, body in enumerate(("Body \x1b[2J cleared \x1b]8;;http://evil/\x1b\\link\x1b]8;;"
                              "\x1b\\ here.", "Body \x1b[2J cleared, \x08\x08\x08safe.")):
        doc.write_text('---\nsource_url: https://example.org/esc\ntitle: "Esc \\e]0;PWNED\\a'
                       f'\\x9b31m{n}"\ndate: \'2025-01-01\'\n---\n{body}\n', encoding="utf-8")
        assert redline(cfg, "ingest").code == 0
    (folder / "bad\x1b[31m.md").write_text("no front matter\n", encoding="utf-8")
    assert redline(cfg, "ingest").code == 3
    engine = sa.create_engine(db_url)  # a receiver's answer, kept as the last error
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO deliveries (event_id, channel, mode, status,
                                attempts, created_at, last_error)
                                VALUES (1, 'hook', 'immediate', 'failed', 1, :t, :e)"""),
                     {"t": dt.datetime(2026, 1, 1), "e": "HTTP 500: \x1b]0;x\x07gone"})
    engine.dispose()
    outputs = {args: redline(cfg, *args) for args in [
        ("status",), ("history", "https://example.org/esc"), ("events",), ("errors",),
        ("search", "cleared"), ("diff", "https://example.org/esc", "--format", "words"),
        ("diff", "https://example.org/esc"), ("diff", "https://example.org/esc", "--format",
                                               "html"), ("deliveries",)]}
    for args, result in outputs.items():
        assert result.code == 0, (args, result.err)
        assert not re.search("[\x07\x08\x1b\x9b]", result.out), (args, result.out)
    assert "Esc \\x1b]0;PWNED\\x07\\x9b31m1" in outputs[("events",)].out
    assert "bad\\x1b[31m.md" in outputs[("errors",)].out
    assert "last error: HTTP 500: \\x1b]0;x\\x07gone" in outputs[("deliveries",)].out
    assert "\\x08\\x08\\x08safe" in outputs[("diff", "https://example.org/esc", "--format",
                                             "words")].out
    data = json.loads(ok(redline(cfg, "events", "--json")).out)
    assert data[0]["title"] == "Esc \x1b]0;PWNED\x07\x9b31m1"


def test_a_time_moved_by_less_than_a_second_shows_what_changed(tmp_path: Path,
                                                                db_url: str) -> None:
    """`modified_time: …10:00:00.5Z` edited to `…10:00:00.7Z` is a metadata revision; its
    diff read `modified_time: 2025-01-02T10:00:00Z -> 2025-01-02T10:00:00Z` (times are
    shown in whole seconds), a change no one could see. Such a change shows microseconds."""
    folder = tmp_path / "statements"
    cfg = write_config(tmp_path, db_url, [folder])
    for stamp in ("10:00:00.5Z", "10:00:00.7Z", "10:00:01.7Z"):
        (folder / "t.md").write_text(
            "---\nsource_url: https://example.org/t\ntitle: T\ndate: '2025-01-01'\n"
            f"modified_time: 2025-01-02T{stamp}\n---\nText.\n", encoding="utf-8")
        assert redline(cfg, "ingest").code == 0
    out = ok(redline(cfg, "diff", "https://example.org/t", "--from", "1", "--to", "2",
                     "--format", "words")).out
    assert "  modified_time: 2025-01-02T10:00:00.500000Z -> 2025-01-02T10:00:00.700000Z\n" \
        in out
    d = json.loads(ok(redline(cfg, "diff", "https://example.org/t", "--json")).out)
    assert d["metadata_changes"] == [{"field": "modified_time", "old": "2025-01-02T10:00:00Z",
                                      "new": "2025-01-02T10:00:01Z"}]  # seconds tell it

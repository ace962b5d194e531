"""Tests for daemon.notify.payload and daemon.notify.render: the SPEC §7 body and its
renderings, built from events that real files produce in a real database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa
from notify_support import FakeClock, config_for, copy_statements, edit_one_word, ingestor, rows

from daemon.notify import render
from daemon.notify.channels import Message
from daemon.notify.payload import build_body, event_bodies, event_diff

SPEC_KEYS = {"event_id", "kind", "occurred_at", "statement", "revision", "previous_revision",
             "changed_fields", "summary", "diff"}


def _bodies(engine: sa.Engine, **kw: int) -> dict[int, dict]:
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM events ORDER BY id"))]
        return event_bodies(conn, ids, **kw)


def test_revised_body_has_the_spec_fields_and_the_changed_word(
        engine: sa.Engine, db_url: str, sample: Path, tmp_path: Path) -> None:
    """A one-word edit of a real statement gives a `revised` body with every SPEC §7 key, a
    unified diff and a word diff deleting the old word and inserting the new one."""
    config = config_for(tmp_path, db_url, "")
    clock = FakeClock()
    (path,) = copy_statements(sample, tmp_path / "statements", 1)
    ing = ingestor(engine, config, clock)
    ing.process_paths([str(path)])
    old_word = edit_one_word(path, "Zanzibar")
    clock.advance(60)
    ing.process_paths([str(path)])
    added, revised = _bodies(engine).values()
    assert SPEC_KEYS <= set(revised) and revised["kind"] == "revised"
    assert revised["revision"] == 2 and revised["previous_revision"] == 1
    assert revised["changed_fields"] == ["body"]
    assert revised["occurred_at"] == "2026-03-02T09:31:00Z"
    url = rows(engine, "SELECT source_url FROM current_statements")[0][0]
    st = revised["statement"]
    assert st["source_url"] == url and st["title"] and isinstance(st["tags"], list)
    assert st["date"] and st["published_time"].endswith("Z")
    changes = [w for w in revised["diff"]["words"] if w["op"] != "equal"]
    assert [w["op"] for w in changes] == ["delete", "insert"]
    assert changes[0]["text"].strip() == old_word and changes[1]["text"].strip() == "Zanzibar"
    assert revised["diff"]["unified"].startswith("--- r1\n+++ r2\n")
    assert "+" in revised["diff"]["unified"] and "Zanzibar" in revised["diff"]["unified"]
    assert revised["diff"]["truncated"] is False and "note" not in revised["diff"]
    assert revised["summary"] == "1 paragraph changed: +1 word, -1 word"
    # an added statement: its whole text, inserted
    assert added["kind"] == "added" and added["previous_revision"] is None
    assert [w["op"] for w in added["diff"]["words"]] == ["insert"]
    assert added["diff"]["unified"].startswith("--- /dev/null\n+++ r1\n")
    json.dumps(revised)  # JSON-ready as it is


def test_long_diffs_are_cut_with_a_note(engine: sa.Engine, db_url: str, sample: Path,
                                        tmp_path: Path) -> None:
    """A diff over the limit is cut to the limit and the body says so, with the command
    that shows all of it."""
    config = config_for(tmp_path, db_url, "")
    (path,) = copy_statements(sample, tmp_path / "statements", 1)
    ingestor(engine, config, FakeClock()).process_paths([str(path)])
    (body,) = _bodies(engine, limit=500).values()
    diff = body["diff"]
    assert diff["truncated"] is True
    assert sum(len(w["text"]) for w in diff["words"]) == 500
    assert len(diff["unified"]) <= 500 and diff["unified"].endswith("\n")
    assert "cut at 500 characters" in diff["note"]
    assert body["statement"]["source_url"] in diff["note"]


def test_no_word_change_means_an_empty_diff() -> None:
    """A metadata or deleted event carries no diff text (nothing a reader sees changed)."""
    rev = {"number": 2, "title": "T", "body_text": "Same words.", "source_url": "u"}
    prev = {**rev, "number": 1}
    for kind in ("metadata", "deleted"):
        diff = event_diff(kind, rev, prev)
        assert diff == {"unified": "", "words": [], "truncated": False}


def _event(kind: str = "revised") -> dict:
    return {"id": 7, "statement_id": 3, "kind": kind,
            "occurred_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "from_revision": 1, "to_revision": 2, "changed_fields": ["body"],
            "summary": "1 paragraph changed: +1 word, -1 word", "words_added": 1,
            "words_removed": 1}


def test_html_escapes_statement_text_and_marks_the_word_diff() -> None:
    """The HTML rendering escapes everything from the statement and marks deletions with
    <del> and insertions with <ins>; long unchanged text is shortened to its context."""
    prev = {"number": 1, "title": "<b>Title</b>", "body_text": "x " * 400 + "old <script>",
            "source_url": "javascript:alert(1)", "date": None, "published_time": None,
            "modified_time": None, "tags": ["a"]}
    cur = {**prev, "number": 2, "body_text": "x " * 400 + "new <script>"}
    body = build_body(_event(), cur, prev)
    html = render.html(Message("revised", "d-1", body))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;Title&lt;/b&gt;" in html and "<b>Title" not in html
    assert 'href="javascript' not in html
    assert "<del" in html and ">old</del>" in html.replace(" </del>", "</del>")
    assert "<ins" in html and "new" in html
    assert " … " in html and html.count("x x") < 200
    text = render.text(Message("revised", "d-1", body))
    assert "new <script>" in text and text.startswith("revised: <b>Title</b> [revision 2")


def test_subject_names_kind_and_title() -> None:
    """The subject line says what happened to which statement; a test message says TEST."""
    cur = {"number": 2, "title": "A  title", "body_text": "b", "source_url": "https://e.org/",
           "date": None, "published_time": None, "modified_time": None, "tags": []}
    body = build_body(_event(), cur, {**cur, "number": 1})
    assert render.subject(Message("revised", "x", body)) == "[redline] revised: A title"
    test = Message("test", "x", {"channel": "desk", "message": "hi"})
    assert render.subject(test) == "[redline] TEST notification for channel desk"


def test_times_are_whole_seconds_in_utc_as_spec_shows_them() -> None:
    """occurred_at and the statement's times are `YYYY-MM-DDTHH:MM:SSZ` (SPEC §7's form,
    the CLI's and the API's), whatever fraction of a second the database kept."""
    from daemon.notify.payload import build_body

    rev = {"number": 2, "title": "T", "body_text": "New words.", "source_url": "u",
           "date": dt.date(2026, 1, 2),
           "published_time": dt.datetime(2026, 1, 2, 3, 4, 5, 999_999,
                                         tzinfo=dt.timezone(dt.timedelta(hours=-5))),
           "modified_time": None, "tags": ["a"]}
    event = {**_event(), "occurred_at": dt.datetime(2026, 1, 2, 3, 4, 5, 123_456,
                                                    tzinfo=dt.UTC)}
    body = build_body(event, rev, {**rev, "number": 1, "body_text": "Old words."})
    assert body["occurred_at"] == "2026-01-02T03:04:05Z"
    assert body["statement"]["published_time"] == "2026-01-02T08:04:05Z"
    assert body["statement"]["date"] == "2026-01-02"

"""Tests for daemon.query on a record built from the real revision chains of the sample, on
a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import FIXTURES, PG_ADMIN_URL, search_index_drift

from daemon import query
from daemon.config import WatchConfig
from daemon.errors import NotFound, UsageError
from daemon.ingest import Ingestor
from daemon.store import migrate
from daemon.store.engine import make_engine
from daemon.text import fold_words, paragraphs, title_text

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
MEXICAN_WAR = ("https://www.whitehouse.gov/briefings-statements/2026/02/america-250-presidential-"
               "message-on-the-anniversary-of-our-victory-in-the-mexican-american-war/")
WORKERS_OLD = ("https://www.whitehouse.gov/briefing-room/statements-releases/2024/11/19/"
               "u-s-brazil-partnership-for-workers-rights/")
WORKERS_NEW = WORKERS_OLD.replace("https://www.whitehouse.gov/",
                                  "https://bidenwhitehouse.archives.gov/")
# Single-word editorial changes people read off revisions/EXPECTED.tsv: (URL part, old, new)
EDITS = [
    ("mexican-american-war", "1856", "1846"),
    ("visit-of-president-joao", "tenants", "tenets"),
    ("bill-signing-h-r-8351", "Larsen", "Larson"),
    ("vcitory-day-for-world-war-ii", "Vcitory", "Victory"),
    ("gas-prices-plunge", "plumet", "plummet"),
]


class StepClock:
    """A clock that moves one minute each time it is read: every change has its own time."""

    def __init__(self, start: dt.datetime = START) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(minutes=1)
        return self.now


def build_record(engine: sa.Engine, sample: Path, tmp_path: Path) -> Path:
    """Replay every real chain of the sample over one path per statement, ingesting after
    each version (as tests/test_ingest.py does), with a stepping clock; return the root."""
    index = list(csv.DictReader((sample / "revisions" / "INDEX.tsv").open(), delimiter="\t"))
    chains: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in index:
        chains[row["orig_path"]].append(row)
    root = tmp_path / "watched"
    root.mkdir(parents=True, exist_ok=True)
    ingestor = Ingestor(engine, WatchConfig(paths=(root,)), clock=StepClock())
    for orig, rows in chains.items():
        target = root / orig
        target.parent.mkdir(parents=True, exist_ok=True)
        for row in sorted(rows, key=lambda r: int(r["version"])):
            shutil.copyfile(sample / "revisions" / row["version_file"], target)
            assert ingestor.process_paths([str(target)]).rejected == 0
    return root


class RecordTemplates:
    """One replayed record per database kind and module, cloned for each test (a file copy
    on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL): replaying the chains once
    instead of in every test keeps the suite fast."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.built: dict[str, str] = {}
        self.pg_templates: list[str] = []
        self.root = workdir / "sqlite"

    def url(self, kind: str) -> str:
        if kind not in self.built:
            if kind == "sqlite":
                self.root.mkdir()
                url = f"sqlite:///{self.root / 'template.db'}"
            else:
                name = f"redline_tpl_{uuid.uuid4().hex[:12]}"
                with _admin() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                self.pg_templates.append(name)
                url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(
                    hide_password=False)
            writer = make_engine(url)
            migrate.upgrade(writer)
            build_record(writer, FIXTURES / "corpus", self.workdir / kind)
            writer.dispose()
            self.built[kind] = url
        return self.built[kind]

    def clone(self, db_url: str) -> None:
        kind = sa.engine.make_url(db_url).get_backend_name()
        source = self.url(kind)
        if kind == "sqlite":
            src = sqlite3.connect(sa.engine.make_url(source).database)
            dst = sqlite3.connect(sa.engine.make_url(db_url).database)
            src.backup(dst)
            src.close()
            dst.close()
            return
        name = sa.engine.make_url(db_url).database
        template = sa.engine.make_url(source).database
        with _admin() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def drop(self) -> None:
        if self.pg_templates:
            with _admin() as conn:
                for name in self.pg_templates:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _admin() -> Iterator[sa.Connection]:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


@contextmanager
def record_templates_in(workdir: Path) -> Iterator[RecordTemplates]:
    templates = RecordTemplates(workdir)
    try:
        yield templates
    finally:
        templates.drop()


@dataclass
class Record:
    """The replayed sample in the test's own database: a read-only engine (as the CLI and
    the web view use), a writer, and the database URL."""

    reader: sa.Engine
    writer: sa.Engine
    url: str


@contextmanager
def open_record(db_url: str, templates: RecordTemplates) -> Iterator[Record]:
    """Clone the replayed record into the test's database (from `db_url`)."""
    templates.clone(db_url)
    rec = Record(make_engine(db_url, readonly=True), make_engine(db_url), db_url)
    try:
        yield rec
    finally:
        rec.reader.dispose()
        rec.writer.dispose()


@pytest.fixture(scope="module")
def record_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordTemplates]:
    with record_templates_in(tmp_path_factory.mktemp("record")) as templates:
        yield templates


@pytest.fixture
def record(db_url: str, record_templates: RecordTemplates) -> Iterator[Record]:
    with open_record(db_url, record_templates) as rec:
        yield rec


def sql(engine: sa.Engine, text: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(text), params))


def as_list(value: object) -> list[str]:
    return json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]


def url_like(engine: sa.Engine, part: str) -> str:
    rows = sql(engine, "SELECT source_url FROM current_statements WHERE source_url LIKE :p",
               p=f"%{part}%")
    assert len(rows) == 1, part
    return str(rows[0][0])


def test_statements_are_found_by_url_old_url_and_id(record: Record) -> None:
    """A statement is named by its URL (with or without the trailing slash), by an old URL
    it had, or by its id; anything else is a one-line NotFound."""
    with record.reader.connect() as conn:
        sid = query.resolve_statement(conn, MEXICAN_WAR)
        assert query.resolve_statement(conn, MEXICAN_WAR.rstrip("/")) == sid
        assert query.resolve_statement(conn, f" {sid} ") == sid
        moved = query.resolve_statement(conn, WORKERS_NEW)
        assert query.resolve_statement(conn, WORKERS_OLD) == moved != sid
        assert query.statement_summary(conn, moved)["urls"] == sorted([WORKERS_OLD,
                                                                       WORKERS_NEW])
        with pytest.raises(NotFound, match=r"^no statement has the URL https://x\.org/a "):
            query.resolve_statement(conn, "https://x.org/a")
        with pytest.raises(NotFound, match="^no statement with id 9999$"):
            query.resolve_statement(conn, "9999")
        with pytest.raises(UsageError):
            query.resolve_statement(conn, "  ")


def test_a_url_is_found_however_a_browser_spells_it(engine: sa.Engine, tmp_path: Path
                                                    ) -> None:
    """A real source_url with a percent-encoded U+2060 (`biden-%e2%81%a0harris`): a
    browser copies it as `%E2%81%A0` or shows the character itself, and people type
    hosts in any case or paste a `#fragment`. Each named no statement; each is the same
    page, so each finds it. A different path is still not found."""
    name = ("2024-07-31-fact-sheet-biden-%e2%81%a0harris-administration-announces-new-actions-"
            "to-counter-the-scourge-of-fentanyl-and-other-synthetic-drugs.md")
    root = tmp_path / "watched"
    root.mkdir()
    shutil.copyfile(FIXTURES / "corpus" / "current" / "statements-releases" / "2024-07" / name,
                    root / "a.md")
    assert Ingestor(engine, WatchConfig(paths=(root,))).scan().added == 1
    url = ("https://bidenwhitehouse.archives.gov/briefing-room/statements-releases/2024/07/31/"
           "fact-sheet-biden-%e2%81%a0harris-administration-announces-new-actions-to-counter-"
           "the-scourge-of-fentanyl-and-other-synthetic-drugs/")
    with engine.connect() as conn:
        sid = query.resolve_statement(conn, url)
        for spelling in (url.replace("%e2%81%a0", "%E2%81%A0"),
                         url.replace("%e2%81%a0", "\u2060").rstrip("/"),
                         url.replace("https://bidenwhitehouse", "HTTPS://BidenWhiteHouse"),
                         url + "#main"):
            assert query.resolve_statement(conn, spelling) == sid, spelling
        with pytest.raises(NotFound):
            query.resolve_statement(conn, url.replace("fentanyl", "Fentanyl"))


def test_a_nul_character_is_a_bad_argument_on_both_databases(record: Record) -> None:
    """PostgreSQL refuses NUL in any text value: a URL, search text or tag holding one
    (`/api/search?q=a%00b`) was a psycopg DataError, a 500 with a traceback in the web
    view. No statement holds one, so it is a bad argument (400, exit 2) on both."""
    with record.reader.connect() as conn:
        for call in (lambda: query.resolve_statement(conn, MEXICAN_WAR + "\x00"),
                     lambda: query.search(conn, "Guadalupe\x00Hidalgo"),
                     lambda: query.events(conn, tag="fact-sheets\x00")):
            with pytest.raises(UsageError, match=r"contains a NUL character"):
                call()


def test_history_matches_the_statement_revisions_view(record: Record) -> None:
    """For every statement, history() lists exactly the rows of statement_revisions, in
    order, with the change_log summary and word counts of each revision's event."""
    ids = [r[0] for r in sql(record.reader, "SELECT statement_id FROM current_statements")]
    assert len(ids) > 20
    with record.reader.connect() as conn:
        for sid in ids:
            got = query.history(conn, sid)
            view = sql(record.reader, """
                SELECT r.revision_number, r.kind, r.changed_fields, r.title, r.source_url,
                       c.summary, c.words_added, c.words_removed
                FROM statement_revisions r JOIN change_log c
                  ON c.statement_id = r.statement_id AND c.to_revision = r.revision_number
                WHERE r.statement_id = :s ORDER BY r.revision_number""", s=sid)
            assert [(h["revision_number"], h["kind"], h["changed_fields"], h["title"],
                     h["source_url"], h["summary"], h["words_added"], h["words_removed"])
                    for h in got] == \
                [(v[0], v[1], as_list(v[2]), *v[3:]) for v in view]
            assert all(h["observed_at"].endswith("Z") for h in got)
    with record.reader.connect() as conn:
        hist = query.history(conn, query.resolve_statement(conn, MEXICAN_WAR))
    assert [(h["revision_number"], h["kind"], h["observed_at"]) for h in hist] == [
        (1, "added", hist[0]["observed_at"]), (2, "revised", hist[1]["observed_at"])]
    assert hist[1]["changed_fields"] == ["body", "modified_time"]
    assert hist[1]["summary"] == ("1 paragraph changed: +1 word, -1 word; fields changed: "
                                  "modified_time")


def test_every_real_diff_rebuilds_both_texts_paragraph_by_paragraph(record: Record) -> None:
    """For every revision of the real chains (the first compared with nothing), `words`
    rebuilds the new text from its `equal` and `insert` runs and the old one from `equal`
    and `delete`, paragraph for paragraph: no empty paragraph where one was inserted or
    deleted whole, no run without text (equal runs are written as in the new text, so the
    old paragraphs are compared folded)."""
    heads = sql(record.reader, "SELECT statement_id, revision_count FROM current_statements")
    texts = {(r[0], r[1]): "\n\n".join([title_text(r[2]), *paragraphs(r[3])])
             for r in sql(record.reader, "SELECT statement_id, revision_number, title, "
                                         "body_text FROM statement_revisions")}

    def folded(t: str) -> list[str]:
        return [" ".join(fold_words(p).split()) for p in t.split("\n\n")] if t else []

    with record.reader.connect() as conn:
        for sid, count in heads:
            for to in range(1, count + 1):
                words = query.diff(conn, sid, to - 1 if to > 1 else None, to)["words"]
                assert all(w["text"] for w in words), (sid, to)
                assert "".join(w["text"] for w in words if w["op"] != "delete") == \
                    texts[sid, to], (sid, to)
                old = "".join(w["text"] for w in words if w["op"] != "insert")
                assert folded(old) == folded(texts.get((sid, to - 1), "")), (sid, to)


def test_diff_shows_the_real_edits(record: Record) -> None:
    """The default diff (the last two revisions) of each real single-word editorial change
    deletes the old word and inserts the new one, in the word diff and the unified diff."""
    for part, old, new in EDITS:
        with record.reader.connect() as conn:
            d = query.diff(conn, query.resolve_statement(conn, url_like(record.reader, part)))
        changed = [(w["op"], w["text"].strip(" ,.")) for w in d["words"] if w["op"] != "equal"]
        assert changed == [("delete", old), ("insert", new)], part
        assert d["stats"]["words_added"] == d["stats"]["words_removed"] == 1
        assert d["to"]["revision_number"] == d["from"]["revision_number"] + 1
        lines = d["unified"].splitlines()
        minus = [ln for ln in lines if ln.startswith("-") and not ln.startswith("---")]
        plus = [ln for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
        assert len(minus) == len(plus) == 1, part
        assert old in minus[0] and new in plus[0]
        assert minus[0].replace(old, new, 1)[1:] == plus[0][1:], part


def test_diff_metadata_changes_and_revision_choice(record: Record) -> None:
    """Changed fields come with old and new values; --from/--to pick any two revisions
    (fields then decided by classify_change); a first revision diffs against nothing; bad
    numbers are UsageError or NotFound."""
    with record.reader.connect() as conn:
        sid = query.resolve_statement(conn, WORKERS_NEW)
        last = query.diff(conn, sid)
        span = query.diff(conn, sid, "1", 3)
        first = query.diff(conn, sid, None, "r1")
        assert (last["from"]["revision_number"], last["to"]["revision_number"]) == (2, 3)
        assert last["changed_fields"] == ["source_url"]
        assert last["metadata_changes"] == [
            {"field": "source_url", "old": WORKERS_OLD, "new": WORKERS_NEW}]
        assert last["words"] == [{"op": "equal", "text": last["words"][0]["text"]}]
        assert span["changed_fields"] == ["title", "modified_time", "source_url"]
        title = span["metadata_changes"][0]
        assert title["field"] == "title" and title["old"].startswith("U.S.-Brazil ")
        assert first["from"] is None and first["changed_fields"] == []
        assert first["unified"].startswith("--- /dev/null\n+++ r1\n@@ -0,0 +1,")
        assert first["stats"]["words_removed"] == 0 and first["stats"]["words_added"] > 50
        with pytest.raises(NotFound, match=rf"^statement {sid} has no revision 4 "
                                           r"\(it has 1 to 3\)$"):
            query.diff(conn, sid, None, 4)
        with pytest.raises(UsageError, match=r"^from must be a revision number"):
            query.diff(conn, sid, "0", None)
        with pytest.raises(UsageError, match=r"^from \(3\) must be an earlier revision"):
            query.diff(conn, sid, 3, 2)
        with pytest.raises(NotFound):
            query.diff(conn, 9999)


def test_search_ranks_the_statement_with_a_distinctive_word_first(record: Record) -> None:
    """A distinctive word finds its statement first, with the word marked in the snippet;
    search covers current text only (the corrected-away word is gone)."""
    with record.reader.connect() as conn:
        sid = query.resolve_statement(conn, MEXICAN_WAR)
        hits = query.search(conn, "Guadalupe Hidalgo")
        assert [h["statement_id"] for h in hits] == [sid]
        assert f"{query.MARK_START}Guadalupe{query.MARK_END}" in hits[0]["snippet"]
        assert hits[0]["source_url"] == MEXICAN_WAR and hits[0]["rank"] > 0
        ranked = query.search(conn, "Mexico")
        assert ranked[0]["statement_id"] == sid and len(ranked) > 1
        assert [h["rank"] for h in ranked] == sorted((h["rank"] for h in ranked),
                                                     reverse=True)
        assert [h["statement_id"] for h in query.search(conn, "1846 Polk")] == [sid]
        assert sid not in [h["statement_id"] for h in query.search(conn, "1856 Polk")]
        assert sid not in [h["statement_id"] for h in query.search(conn, "Mexican -Guadalupe")]
        assert len(query.search(conn, "Mexican", limit=1)) == 1
        assert query.search(conn, "zzyzx-nowhere") == []


def test_the_search_index_holds_exactly_the_current_words(record: Record) -> None:
    """After the real revision chains, the index equals one built afresh from the current
    statements: each revision replaced its statement's words, none left stale."""
    with record.reader.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM current_statements")).scalar() > 10
        assert search_index_drift(conn) == []


def test_search_follows_revisions_deletions_and_restorations(engine: sa.Engine,
                                                             tmp_path: Path) -> None:
    """The index follows every way a statement's words change, also two revisions of one
    statement in one small pass (two files carrying its URL; one batch, so the index is
    written once for both): a deleted statement stays findable by its last words, a
    restored one by its new words only."""
    originals = sorted((FIXTURES / "corpus" / "current").rglob("*.md"))[:3]
    root = tmp_path / "watched"
    root.mkdir()
    a, b1, b2, c = (root / n for n in ("a.md", "b1.md", "b2.md", "c.md"))

    def write(path: Path, original: Path, words: str) -> None:
        path.write_bytes(original.read_bytes() + f"\n\n{words}\n".encode())

    def found(text: str) -> set[str]:
        with engine.connect() as conn:
            return {h["source_url"] for h in query.search(conn, text, limit=50)}

    def scan_and_check() -> None:
        assert ingestor.scan().rejected == 0
        with engine.connect() as conn:
            assert search_index_drift(conn) == []

    ingestor = Ingestor(engine, WatchConfig(paths=(root,)), clock=StepClock())
    write(a, originals[0], "quokkafirst")
    write(b1, originals[1], "wombatfirst")
    shutil.copyfile(b1, b2)
    write(c, originals[2], "numbatfirst")
    scan_and_check()
    url_a, url_b, url_c = (found(w) for w in ("quokkafirst", "wombatfirst", "numbatfirst"))
    assert all(len(u) == 1 for u in (url_a, url_b, url_c)) and len(url_a | url_b | url_c) == 3

    write(a, originals[0], "quokkasecond")
    write(b1, originals[1], "wombatsecond")
    os.utime(b1, ns=(1, 1))  # older: b2 is read after it, so both revise the statement
    write(b2, originals[1], "wombatthird")
    c.unlink()
    scan_and_check()
    with engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(sa.text(
            "SELECT kind FROM change_log ORDER BY event_id")).all()]
    assert kinds[3:] == ["revised", "revised", "revised", "deleted"]
    assert found("quokkafirst") == found("wombatfirst") == found("wombatsecond") == set()
    assert found("quokkasecond") == url_a and found("wombatthird") == url_b
    assert found("numbatfirst") == url_c  # deleted: findable by its last words

    write(c, originals[2], "numbatsecond")
    write(a, originals[0], "quokkafirst")
    scan_and_check()
    with engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(sa.text(
            "SELECT kind FROM change_log ORDER BY event_id")).all()]
    assert sorted(kinds[7:]) == ["restored", "revised"]
    assert found("numbatsecond") == url_c and found("numbatfirst") == set()
    assert found("quokkafirst") == url_a and found("quokkasecond") == set()


def test_search_syntax_is_never_a_database_error(engine: sa.Engine) -> None:
    """Whatever a person types, search returns results or raises a one-line UsageError."""
    with engine.connect() as conn:
        for text in ['"unbalanced', "NEAR(a b", "title:x", "a AND", "OR", "(", "*", "^x",
                     "a + b", "don't", "-", "'", "a*b", "\\", "col:"]:
            try:
                assert isinstance(query.search(conn, text), list)
            except UsageError as exc:
                assert "\n" not in str(exc), text


def test_a_term_without_a_word_is_ignored_on_both_databases(record: Record) -> None:
    """A lone `-` (or `--`, `*`, `"-"`) is only text without a word: it is left out, as
    PostgreSQL's parser leaves it out, instead of an empty FTS5 phrase matching nothing."""
    with record.reader.connect() as conn:
        plain = query.search(conn, "Mexican", limit=50)
        assert plain
        for text in ("Mexican -", "Mexican - -- *", 'Mexican "-"', "Mexican -*",
                     '- Mexican "-"'):
            assert query.search(conn, text, limit=50) == plain, text
        with pytest.raises(UsageError, match="^search needs at least one word"):
            query.search(conn, '- -- "-" *')
    assert query.fts5_query("ceasefire -") == '"ceasefire"'


def test_search_is_bounded_in_words_and_prefixes(record: Record) -> None:
    """At most MAX_SEARCH_TERMS words or phrases and MAX_PREFIX_TERMS prefixes: beyond, a
    one-line UsageError before any database work (2,000 `a*` terms once kept a CPU busy for
    minutes); repeated terms are asked once, so `the` x 32 costs what `the` costs."""
    words = [f"zq{i}x" for i in range(query.MAX_SEARCH_TERMS)]
    prefixes = [f"{c}*" for c in "abcdefghijk"[:query.MAX_PREFIX_TERMS]]
    with record.reader.connect() as conn:
        assert query.search(conn, " OR ".join(words)) == []
        with pytest.raises(UsageError, match=r"^search takes at most 32 words or \"phrases\" "
                                             r"\(OR alternatives and -words included\); 33 "
                                             r"were given$"):
            query.search(conn, " ".join([*words, "Mexican"]))
        with pytest.raises(UsageError, match="^search takes at most 32 words"):
            query.search(conn, "Mexican " + " ".join(f"-{w}" for w in words))
        assert query.search(conn, " OR ".join(prefixes), limit=1)
        with pytest.raises(UsageError, match=r"^search takes at most 8 prefix\* words"):
            query.search(conn, " ".join([*prefixes, "z*"]))
        with pytest.raises(UsageError, match="^search takes at most"):
            query.search(conn, " OR ".join(["a*"] * 2000))
        with pytest.raises(UsageError, match="^search text is 2001 characters long"):
            query.search(conn, '"' + "x" * 2000)
        assert query.search(conn, " ".join(["Mexican"] * 32)) == query.search(conn, "Mexican")
    assert query.fts5_query("a* A* á* a* -x -X war") == '"a" * AND "war" NOT "x"'
    assert query.fts5_query("a OR b b OR a c") == '("a" OR "b") AND "c"'


def test_prefixes_phrases_or_and_minus_work_alike_on_both_databases(record: Record) -> None:
    """README: `word*` searches a prefix on both databases (PostgreSQL's websearch_to_tsquery
    has no prefix operator: `Guadal*` found nothing there), with the rest of the syntax kept
    (all words required, "phrase", OR, -word); tsquery syntax typed by a person is only
    text there too."""
    with record.reader.connect() as conn:
        def ids(text: str) -> list[int]:
            return sorted(h["statement_id"] for h in query.search(conn, text, limit=100))

        sid = query.resolve_statement(conn, MEXICAN_WAR)
        assert ids("Guadal*") == ids("Guadalupe") == [sid]
        assert ids("guadal* HIDAL*") == [sid]
        assert ids("Guadal* OR zzyzxq*") == [sid]
        assert ids("zzyzxq* OR Guadal*") == [sid]
        assert ids("Guadal* zzyzxq*") == []
        assert sid in ids("Mexic*") and sid not in ids("Mexic* -Guadal*")
        assert sid not in ids("Mexic* -guadalupe") and ids("Mexic* -zzyzxq") == ids("Mexic*")
        assert ids('"Treaty of Guadalupe Hidalgo"') == [sid]
        assert ids('"Hidalgo Guadalupe"') == []
        assert ids('"Treaty of Guadal"*') == ids("Treaty of Guadal") == []
        for text in ["Guadalupe & !Hidalgo", "Guadalupe:*", "Guadal'*", "Guadalupe | !Hidalgo",
                     "Guadalupe <-> Hidalgo", "Guadal\\*", "(Guadalupe", "'Guadalupe'",
                     "Guadalupe\\'", "Guadal'':* | !'Hidalgo'*", "Guadal')*", "Guadal\\'*"]:
            assert ids(text) == [sid], text
        assert ids("zzyzxq:* | Guadalupe") == []


def test_a_prefix_that_is_a_stop_word_finds_the_words_it_begins(record: Record) -> None:
    """`am*`, `in*`, `off*` are English stop words: PostgreSQL's to_tsquery('english')
    dropped them, so `am*` found nothing there (not even America), where FTS5 finds every
    word they begin. They are a prefix on both databases."""
    with record.reader.connect() as conn:
        def ids(text: str) -> list[int]:
            return sorted(h["statement_id"] for h in query.search(conn, text, limit=100))

        sid = query.resolve_statement(conn, MEXICAN_WAR)
        for prefix in ["am*", "Am*", "in*", "off*"]:
            assert sid in ids(prefix), prefix
            assert ids(f"{prefix} Guadal*") == [sid], prefix
            assert ids(f"Guadal* -{prefix}") == [], prefix
            assert ids(f"zzyzxq OR {prefix}") == ids(prefix), prefix
        assert ids("ambu*") == ids("ambush")
        hits = query.search(conn, "Guadalupe am*")
        assert [h["statement_id"] for h in hits] == [sid] and "⟦" in hits[0]["snippet"]


def test_fts5_query_quotes_every_word() -> None:
    """The FTS5 query keeps words and phrases as text and supports OR, -word and prefix*."""
    assert query.fts5_query('steel "executive order" OR tariff -china war*') == \
        '"steel" AND ("executive order" OR "tariff") AND "war" * NOT "china"'
    assert query.fts5_query('say "hi') == '"say" AND "hi"'
    with pytest.raises(UsageError, match="^search needs at least one word"):
        query.fts5_query(" -x \"\" ")


def test_events_filter_by_time_kind_and_tag(record: Record) -> None:
    """events() is the change log newest first; since, kind, tag and limit filter it."""
    rows = sql(record.reader, "SELECT event_id, occurred_at, kind FROM change_log")
    with record.reader.connect() as conn:
        every = query.events(conn, limit=1000)
        assert len(every) == len(rows)
        times = [e["occurred_at"] for e in every]
        assert times == sorted(times, reverse=True)
        middle = dt.datetime.fromisoformat(times[len(times) // 2])
        since = query.events(conn, since=middle, limit=1000)
        assert since == [e for e in every if e["occurred_at"] >= times[len(times) // 2]]
        assert 0 < len(since) < len(every)
        metadata = query.events(conn, kind="metadata", limit=1000)
        assert {e["kind"] for e in metadata} == {"metadata"}
        assert len(metadata) == sum(1 for r in rows if r.kind == "metadata")
        tagged = query.events(conn, tag="fact-sheets", limit=1000)
        assert tagged and all("fact-sheets" in e["tags"] for e in tagged)
        assert len(tagged) < len(every)
        assert query.events(conn, limit=3) == every[:3]
        assert query.events(conn, limit=3, offset=3) == every[3:6]
        assert query.events(conn, since=START + dt.timedelta(days=1)) == []
        with pytest.raises(UsageError, match="^kind must be one of added, revised"):
            query.events(conn, kind="edited")
        with pytest.raises(UsageError, match="^limit must be a whole number"):
            query.events(conn, limit=0)


def test_parse_since_reads_dates_times_and_ages() -> None:
    """--since takes a date, a time (UTC unless zoned) or an age such as 7d."""
    now = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
    assert query.parse_since("2026-02-03") == dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
    assert query.parse_since("2026-02-03T16:44:17Z") == \
        dt.datetime(2026, 2, 3, 16, 44, 17, tzinfo=dt.UTC)
    assert query.parse_since("2026-02-03 11:44:17-05:00") == \
        dt.datetime(2026, 2, 3, 16, 44, 17, tzinfo=dt.UTC)
    assert query.parse_since("7d", now) == now - dt.timedelta(days=7)
    assert query.parse_since("12h", now) == now - dt.timedelta(hours=12)
    assert query.parse_since("2w", now) == now - dt.timedelta(weeks=2)
    for bad in ("yesterday", "7 days ago", "2026-13-01", ""):
        with pytest.raises(UsageError, match="is not a time"):
            query.parse_since(bad, now)
    # `1M` read as one minute: a person asking for a month got "no events match" (exit 1)
    assert query.parse_since("30m", now) == query.parse_since("12H", now) + \
        dt.timedelta(hours=11, minutes=30)
    for ambiguous in ("1M", " 3 M"):
        with pytest.raises(UsageError, match="'M' is minutes or months: write 30m for "
                                             "minutes, 30d for days"):
            query.parse_since(ambiguous, now)


def _add_delivery(conn: sa.Connection, event_id: int, channel: str, status: str) -> None:
    conn.execute(sa.text("""INSERT INTO deliveries (event_id, channel, mode, status, attempts,
                            created_at) VALUES (:e, :c, 'immediate', :s, 0, :t)"""),
                 {"e": event_id, "c": channel, "s": status, "t": START.replace(tzinfo=None)})


def _add_heartbeat(conn: sa.Connection, instance: str, seen: dt.datetime) -> None:
    conn.execute(sa.text("""INSERT INTO heartbeats (instance, hostname, pid, started_at,
                            seen_at, watching, status)
                            VALUES (:i, 'host-a', 4242, :t, :t, :w, 'watching 1 folder')"""),
                 {"i": instance, "t": seen.replace(tzinfo=None), "w": True})


def test_status_agrees_with_sql_counts(record: Record, tmp_path: Path) -> None:
    """status() counts statements, revisions by kind, rejected files and deliveries as the
    views do, names the last change, and reports the watcher by its heartbeat."""
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"# no front matter\n")
    Ingestor(record.writer, WatchConfig(paths=(tmp_path,)),
             clock=StepClock(START + dt.timedelta(days=1))).process_paths([str(bad)])
    with record.writer.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT event_id FROM change_log"))]
        for i, st in enumerate(["pending", "pending", "dead", "delivered", "failed"]):
            _add_delivery(conn, ids[i], "hook", st)
    now = dt.datetime.now(dt.UTC)
    with record.reader.connect() as conn:
        st = query.status(conn, now)
    kinds = dict(sql(record.reader,
                     "SELECT kind, count(*) FROM statement_revisions GROUP BY kind"))
    assert st["revisions"]["by_kind"] == {k: kinds.get(k, 0) for k in query.KINDS}
    assert st["revisions"]["total"] == sql(record.reader, "SELECT count(*) FROM statement_revisions"
                                           )[0][0]
    assert st["statements"] == {
        "total": sql(record.reader, "SELECT count(*) FROM current_statements")[0][0],
        "live": sql(record.reader, "SELECT count(*) FROM current_statements "
                                   "WHERE deleted_at IS NULL")[0][0],
        "deleted": 0}
    assert st["rejected_files"] == 1
    assert st["deliveries"] == {"pending": 2, "delivered": 1, "failed": 1, "dead": 1}
    last = sql(record.reader, "SELECT max(event_id) FROM change_log")[0][0]
    assert st["last_change"]["event_id"] == last
    assert st["watcher"] == {"running": False, "watching": False, "instances": []}
    with record.writer.begin() as conn:
        _add_heartbeat(conn, "old", now - dt.timedelta(minutes=10))
    with record.reader.connect() as conn:
        stale = query.status(conn, now)["watcher"]
    assert stale["running"] is False and stale["instances"][0]["fresh"] is False
    with record.writer.begin() as conn:
        _add_heartbeat(conn, "new", now - dt.timedelta(seconds=20))
    with record.reader.connect() as conn:
        fresh = query.status(conn, now)["watcher"]
    assert fresh["running"] is True and fresh["watching"] is True
    assert [(i["instance"], i["fresh"]) for i in fresh["instances"]] == [("new", True),
                                                                        ("old", False)]
    json.dumps(st)  # plain JSON values only


def test_errors_lists_rejected_files_with_reasons(engine: sa.Engine, tmp_path: Path) -> None:
    """errors() is the ingest_errors view: path, reason, detail and times."""
    root = tmp_path / "w"
    root.mkdir()
    (root / "a.md").write_bytes(b"# no front matter\n")
    (root / "b.md").write_bytes(b"---\ntitle: t\ndate: '2025-01-01'\n---\nbody\n")
    Ingestor(engine, WatchConfig(paths=(root,)), clock=StepClock()).process_paths(
        [str(root / "a.md"), str(root / "b.md")])
    with engine.connect() as conn:
        rows = query.errors(conn)
    assert [(Path(r["path"]).name, r["reason"]) for r in rows] == [
        ("b.md", "missing_field"), ("a.md", "no_front_matter")]  # most recently seen first
    assert all(r["last_seen_at"].endswith("Z") and r["detail"] for r in rows)


def test_a_prefix_finds_the_words_it_begins_whose_stem_is_shorter(record: Record) -> None:
    """PostgreSQL's index holds stems: "President" is stored as 'presid', "security" as
    'secur', "economic" as 'econom'. `presiden*` was the prefix 'presiden':*, which no such
    stem begins with, so on the whole corpus it found 397 statements on PostgreSQL and 1,667
    on SQLite (FTS5 keeps the words), missing every statement that says only "President".
    A prefix finds on both databases what the words it begins find."""
    with record.reader.connect() as conn:
        def ids(text: str) -> set[int]:
            return {h["statement_id"] for h in query.search(conn, text, limit=100)}

        for prefix, words in [("presiden*", ["President", "presidential"]),
                              ("Securit*", ["security"]), ("economi*", ["economic", "economy"]),
                              ("generati*", ["generation", "generations"])]:
            found = ids(prefix)
            for word in words:
                assert ids(word), word  # the record holds the word
                assert ids(word) <= found, (prefix, word, ids(word) - found)
            assert not ids(f"{words[0]} -{prefix}"), prefix

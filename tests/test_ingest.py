"""Tests for daemon.ingest on real databases (SQLite file and PostgreSQL) and real files."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import socket
import stat
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from daemon import query
from daemon.config import WatchConfig
from daemon.ingest import IngestCounts, Ingestor


def make(engine: sa.Engine, root: Path) -> Ingestor:
    return Ingestor(engine, WatchConfig(paths=(root,)))


def q(engine: sa.Engine, sql: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def distinct_urls(root: Path) -> set[str]:
    urls = set()
    for p in root.rglob("*.md"):
        m = re.search(r"^source_url: (.*)$", p.read_text(encoding="utf-8"), re.M)
        assert m, p
        urls.add(m.group(1).strip())
    return urls


def test_sample_ingests_without_rejections_and_twice_is_a_no_op(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """The real sample ingests with zero rejections, one statement per distinct URL, and
    a second pass creates nothing."""
    root = tmp_path / "current"
    shutil.copytree(sample / "current", root)
    counts = make(engine, root).scan()
    n_files = len(list(root.rglob("*.md")))
    assert counts.rejected == 0 and counts.files == n_files
    urls = distinct_urls(root)
    assert q(engine, "SELECT count(*) FROM current_statements")[0][0] == len(urls)
    assert {r[0] for r in q(engine, "SELECT source_url FROM current_statements")} == urls
    before = q(engine, "SELECT count(*) FROM statement_revisions")[0][0]
    again = make(engine, root).scan()
    assert again.as_dict() == IngestCounts(files=n_files, unchanged=n_files).as_dict()
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == before
    assert q(engine, "SELECT count(*) FROM ingest_errors")[0][0] == 0


def replay(engine: sa.Engine, corpus: Path, tmp_path: Path) -> dict[tuple[str, int], str]:
    """Write each version over the same path in order, ingesting after each step; return
    the kind recorded for each (orig_path, version)."""
    index = list(csv.DictReader((corpus / "revisions" / "INDEX.tsv").open(), delimiter="\t"))
    chains: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in index:
        chains[row["orig_path"]].append(row)
    root = tmp_path / "watched"
    root.mkdir()
    ingestor = make(engine, root)
    kinds: dict[tuple[str, int], str] = {}
    for orig, rows in chains.items():
        target = root / orig
        target.parent.mkdir(parents=True, exist_ok=True)
        for row in sorted(rows, key=lambda r: int(r["version"])):
            shutil.copyfile(corpus / "revisions" / row["version_file"], target)
            counts = ingestor.process_paths([str(target)])
            assert counts.rejected == 0, row["version_file"]
            got = [k for k in ("added", "revised", "metadata", "formatting") if
                   getattr(counts, k)]
            kinds[(orig, int(row["version"]))] = got[0] if got else "none"
    return kinds


def test_replaying_real_revision_chains_gives_the_expected_kinds(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """Each real transition of the sample is recorded with the kind a person read off it,
    revision numbers run 1..n, and each revision has exactly one event."""
    kinds = replay(engine, sample, tmp_path)
    expected = list(csv.DictReader((sample / "revisions" / "EXPECTED.tsv").open(),
                                   delimiter="\t"))
    for row in expected:
        assert kinds[(row["orig_path"], int(row["version"]))] == row["expected_kind"], row
    gaps = q(engine, """SELECT statement_id, count(*), max(revision_number)
                        FROM statement_revisions GROUP BY statement_id""")
    assert all(count == top for _sid, count, top in gaps)
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == \
        q(engine, "SELECT count(*) FROM change_log")[0][0]
    # the 1856 -> 1846 edit is a revised body change whose summary counts one word each way
    rows = q(engine, """SELECT c.kind, c.changed_fields, c.words_added, c.words_removed
                        FROM change_log c JOIN statement_revisions r
                          ON r.statement_id = c.statement_id AND r.revision_number = c.to_revision
                        WHERE r.body_text LIKE '%1846%' AND c.kind = 'revised'""")
    assert rows and rows[0].words_added == 1 and rows[0].words_removed == 1


def test_replaying_the_real_un_nesting_of_a_list_item_is_not_revised(
        engine: sa.Engine, tmp_path: Path) -> None:
    """The real chain of fixtures/nested-list: v2 moves a list item out of the sub-list of
    the item above it (markup only) and bumps modified_time. It is recorded as metadata;
    the nested item's first word is its own word in the stored text and in search."""
    root = Path(__file__).parent / "fixtures" / "nested-list"
    kinds = replay(engine, root, tmp_path)
    assert sorted(kinds.values()) == ["added", "metadata"]
    rows = q(engine, "SELECT kind, changed_fields, words_added, words_removed FROM change_log "
                     "ORDER BY event_id")
    assert [r.kind for r in rows] == ["added", "metadata"]
    assert (rows[1].words_added, rows[1].words_removed) == (0, 0)
    texts = [r[0] for r in q(engine, "SELECT body_text FROM statement_revisions "
                                     "ORDER BY revision_number")]
    assert all("infrastructure.\n\nClimate Resilient" in t for t in texts)
    with engine.connect() as conn:
        assert len(query.search(conn, '"infrastructure Climate Resilient Debt"')) == 1


def test_source_url_rewrite_is_metadata_on_the_same_statement(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """The real bulk source_url rewrite is a metadata revision of the same statement, and
    the old URL stays findable."""
    replay(engine, sample, tmp_path)
    rows = q(engine, """SELECT statement_id, changed_fields FROM change_log
                        WHERE kind = 'metadata' AND source_url LIKE
                        'https://bidenwhitehouse.archives.gov/%'""")
    assert rows, "the sample must hold the URL rewrite chain"
    sid = rows[0].statement_id
    fields = rows[0].changed_fields
    assert "source_url" in (fields if isinstance(fields, list) else __import__("json").loads(
        fields))
    urls = {r[0] for r in q(engine, "SELECT url FROM statement_urls WHERE statement_id = :s",
                            s=sid)}
    assert any(u.startswith("https://www.whitehouse.gov/") for u in urls)
    assert any(u.startswith("https://bidenwhitehouse.archives.gov/") for u in urls)
    assert q(engine, "SELECT count(*) FROM current_statements WHERE statement_id = :s",
             s=sid)[0][0] == 1


def test_a_url_changed_back_to_an_old_one_is_the_statements_url_again(
        engine: sa.Engine, tmp_path: Path) -> None:
    """u1 -> u2 -> u1 in place: the third revision records source_url u1, but the statement
    kept u2 (`current_statements` and `redline history` named u2, the URL no file held):
    a URL the statement had before was looked up as its alias, and only a URL new to it
    became its current one. So also for a new file written at an old URL of it."""
    root = tmp_path / "w"
    root.mkdir()
    ing = make(engine, root)

    def write(name: str, url: str, text: str = "Alpha words.") -> None:
        (root / name).write_text(f"---\nsource_url: {url}\ntitle: A\ndate: '2025-01-01'\n"
                                 f"---\n{text}\n", encoding="utf-8")
        ing.process_paths([str(root / name)])

    def current() -> list[tuple[str, str]]:
        return [tuple(r) for r in q(engine, """SELECT c.source_url, r.source_url
            FROM current_statements c JOIN statement_revisions r ON r.statement_id =
            c.statement_id AND r.revision_number = c.revision_number""")]

    for url in ("https://example.org/u1", "https://example.org/u2", "https://example.org/u1"):
        write("a.md", url)
        assert current() == [(url, url)]
    write("n.md", "https://example.org/u2", "New words at the other URL.")
    assert current() == [("https://example.org/u2", "https://example.org/u2")]
    with engine.connect() as conn:
        summary = query.statement_summary(conn, query.resolve_statement(
            conn, "https://example.org/u1"))
    assert summary["source_url"] == "https://example.org/u2"
    assert [k for (k,) in q(engine, "SELECT kind FROM statement_revisions ORDER BY "
                                    "revision_number")] == ["added", "metadata", "metadata",
                                                            "revised"]


def _first_sample(sample: Path) -> bytes:
    return sorted((sample / "current").rglob("*.md"))[0].read_bytes()


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
    pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="bom"),
    pytest.param(lambda b: re.sub(rb"^date: '(.*)'$", rb'date: "\1"', b, flags=re.M),
                 id="quoting"),
    pytest.param(lambda b: re.sub(rb"^(date: .*\n)(.*\n)", rb"\2\1", b, flags=re.M),
                 id="key-order"),
])
def test_byte_only_changes_make_no_revision(engine: sa.Engine, sample: Path, tmp_path: Path,
                                            mutate) -> None:  # type: ignore[no-untyped-def]
    """CRLF, a BOM, YAML quoting style and key order leave every parsed value equal."""
    root = tmp_path / "w"
    root.mkdir()
    f = root / "s.md"
    original = _first_sample(sample)
    f.write_bytes(original)
    make(engine, root).scan()
    changed = mutate(original)
    assert changed != original
    f.write_bytes(changed)
    counts = make(engine, root).scan()
    assert counts.unchanged == 1 and counts.files == 1
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == 1


def test_rename_move_delete_and_restore(engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A rename or move is no change; removing the last file is `deleted`; bringing it back
    is `restored`."""
    root = tmp_path / "w"
    (root / "sub").mkdir(parents=True)
    f = root / "a.md"
    f.write_bytes(_first_sample(sample))
    ing = make(engine, root)
    ing.scan()
    f.rename(root / "sub" / "b.md")
    assert ing.scan().as_dict() == IngestCounts(files=1, unchanged=1).as_dict()
    (root / "sub" / "b.md").rename(root / "sub" / "c.md")
    assert ing.process_paths([str(root / "sub" / "c.md"), str(root / "sub" / "b.md")]
                             ).as_dict()["deleted"] == 0
    (root / "sub" / "c.md").unlink()
    (root / "keep.md").write_bytes(sorted((sample / "current").rglob("*.md"))[1].read_bytes())
    assert ing.scan().deleted == 1
    (root / "back.md").write_bytes(_first_sample(sample))
    assert ing.scan().restored == 1
    kinds = [r[0] for r in q(engine, """SELECT kind FROM statement_revisions
                                         WHERE revision_number <= 3 ORDER BY statement_id,
                                         revision_number""")]
    assert kinds[:3] == ["added", "deleted", "restored"]
    deleted_at = q(engine, "SELECT deleted_at FROM current_statements ORDER BY statement_id")
    assert deleted_at[0][0] is None


def _readdress(path: Path, new_path: Path, url: str) -> None:
    """Move a statement file and change its source_url on the way (words untouched)."""
    data = re.sub(rb"^source_url: .*$", f"source_url: {url}".encode(), path.read_bytes(),
                  count=1, flags=re.M)
    path.unlink()
    new_path.write_bytes(data)


@pytest.mark.parametrize("entry", ["scan", "process_paths", "leaving"])
def test_a_file_moved_and_readdressed_at_once_is_a_metadata_revision(
        engine: sa.Engine, sample: Path, tmp_path: Path, entry: str) -> None:
    """A file renamed and given a new source_url between two looks, its words unchanged:
    the same statement with a `metadata` revision changing source_url, the old URL still
    findable — not `deleted` and `added`. Through a full pass, a live batch holding both
    paths, and a live batch whose old path's deletion is still settling (`leaving`)."""
    root = tmp_path / "w"
    root.mkdir()
    first, second = sorted((sample / "current").rglob("*.md"))[:2]
    shutil.copy(first, root / "q.md")
    shutil.copy(second, root / "other.md")  # the folder never becomes empty
    ing = make(engine, root)
    ing.scan()
    old_url = q(engine, "SELECT source_url FROM current_statements ORDER BY statement_id")[0][0]
    new_url = "https://example.org/readdressed/"
    _readdress(root / "q.md", root / "q-moved.md", new_url)
    if entry == "scan":
        counts = ing.scan()
    elif entry == "process_paths":
        counts = ing.process_paths([str(root / "q-moved.md"), str(root / "q.md")])
    else:
        counts = ing.process_paths([str(root / "q-moved.md")], leaving=[str(root / "q.md")])
        assert counts.metadata == 1 and counts.added == 0
        counts = ing.process_paths([str(root / "q.md")])
    assert (counts.added, counts.deleted) == (0, 0)
    history = q(engine, """SELECT revision_number, kind, changed_fields, source_url
                           FROM statement_revisions WHERE statement_id = (SELECT statement_id
                           FROM current_statements WHERE source_url = :u)
                           ORDER BY revision_number""", u=new_url)
    assert [(r[0], r[1], r[3]) for r in history] == [(1, "added", old_url),
                                                     (2, "metadata", new_url)]
    fields = history[1][2]
    assert (fields if isinstance(fields, list) else json.loads(fields)) == ["source_url"]
    assert q(engine, "SELECT count(*) FROM current_statements")[0][0] == 2
    assert {r[0] for r in q(engine, "SELECT url FROM statement_urls")} >= {old_url, new_url}
    assert q(engine, "SELECT count(*) FROM files")[0][0] == 2


def test_two_leaving_statements_with_the_same_words_are_not_guessed(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """Two statements with identical words both gone and one new file with those words and a
    new URL: which one moved cannot be known, so it is an addition and two deletions."""
    root = tmp_path / "w"
    root.mkdir()
    data = _first_sample(sample)
    (root / "a.md").write_bytes(data)
    (root / "b.md").write_bytes(re.sub(rb"^source_url: .*$", b"source_url: https://ex.org/b/",
                                       data, count=1, flags=re.M))
    shutil.copy(sorted((sample / "current").rglob("*.md"))[1], root / "other.md")
    ing = make(engine, root)
    ing.scan()
    (root / "b.md").unlink()
    _readdress(root / "a.md", root / "c.md", "https://ex.org/c/")
    counts = ing.scan()
    assert (counts.added, counts.deleted, counts.metadata) == (1, 2, 0)


def test_missing_or_emptied_folder_is_an_error_not_a_mass_deletion(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A watched folder that vanishes or is suddenly empty deletes nothing."""
    root = tmp_path / "w"
    shutil.copytree(sample / "current", root)
    make(engine, root).scan()
    n = q(engine, "SELECT count(*) FROM current_statements WHERE deleted_at IS NULL")[0][0]
    n_files = q(engine, "SELECT count(*) FROM files")[0][0]
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    counts = make(engine, root).scan()
    assert counts.deleted == 0 and counts.folder_errors == [
        f"{root}: watched folder is missing or not a folder; its {n_files} known files are "
        "kept, not deleted"]
    root.mkdir()
    counts = make(engine, root).scan()
    assert counts.deleted == 0 and counts.folder_errors == [
        f"{root}: watched folder is suddenly empty (unmounted?); its {n_files} known files "
        "are kept, not deleted"]
    assert q(engine, "SELECT count(*) FROM current_statements WHERE deleted_at IS NULL"
             )[0][0] == n
    # a folder never seen has nothing to keep, and says nothing about it
    never = tmp_path / "never"
    assert make(engine, never).scan().folder_errors == [
        f"{never}: watched folder is missing or not a folder"]


def test_a_file_too_large_is_taken_once_the_limit_is_raised(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A file rejected as too large is read again, unchanged, once `max_file_bytes` is
    raised above its size (by the full pass and by the quick no-change answer alike);
    within the old limit it stays rejected without being read."""
    from daemon.survey import read_known, survey

    root = tmp_path / "w"
    root.mkdir()
    data = _first_sample(sample)
    (root / "big.md").write_bytes(data)
    small, large = (Ingestor(engine, WatchConfig(paths=(root,), max_file_bytes=limit))
                    for limit in (1024, len(data) + 10))
    assert small.scan().rejected == 1
    again = small.scan()
    assert (again.rejected, again.added) == (1, 0)
    with engine.connect() as conn:
        known, rejected = read_known(conn.exec_driver_sql)
    assert [f.path for f in survey(large.watch, None, known, rejected).todo] == [
        str(root / "big.md")]
    counts = large.scan()
    assert (counts.rejected, counts.added) == (0, 1)
    assert q(engine, "SELECT count(*) FROM ingest_errors")[0][0] == 0


BAD_FILES = {
    "not-utf8.md": (b"---\ntitle: caf\xe9\n---\n", "not_utf8"),
    "binary.md": (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    "nofm.md": (b"# Just markdown\n", "no_front_matter"),
    "unclosed.md": (b"---\nsource_url: u\ntitle: t\n", "unclosed_front_matter"),
    "list.md": (b"---\n- a\n---\nbody\n", "front_matter_not_mapping"),
    "alias.md": (b"---\na: &x [1]\nb: *x\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n---\n",
                 "yaml_alias"),
    "tag.md": (b"---\nsource_url: !!python/name:os.system u\ntitle: t\n---\n", "yaml_tag"),
    "nourl.md": (b"---\ntitle: t\ndate: '2025-01-01'\n---\nbody\n", "missing_field"),
    "badtime.md": (b"---\nsource_url: u\ntitle: t\npublished_time: noon\n---\n",
                   "invalid_time"),
    "huge.md": (b"---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n---\n" + b"x" * 5000,
                "too_large"),
}


def test_bad_files_are_rejected_with_reasons_and_fixing_them_ingests(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """Every bad input of SPEC §2 lands in ingest_errors with its reason, changes nothing
    else, and ingests normally once fixed."""
    root = tmp_path / "w"
    root.mkdir()
    (root / "good.md").write_bytes(_first_sample(sample))
    for name, (data, _reason) in BAD_FILES.items():
        (root / name).write_bytes(data)
    ing = Ingestor(engine, WatchConfig(paths=(root,), max_file_bytes=4096))
    counts = ing.scan()
    assert counts.rejected == len(BAD_FILES) and counts.added == 1
    errors = {os.path.basename(r.path): r.reason for r in
              q(engine, "SELECT path, reason, detail FROM ingest_errors")}
    assert errors == {name: reason for name, (_d, reason) in BAD_FILES.items()}
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == 1
    # unchanged bad files are still reported as failing on the next pass, without re-reading
    assert ing.scan().rejected == len(BAD_FILES)
    (root / "nourl.md").write_bytes(
        b"---\nsource_url: https://example.org/fixed\ntitle: Fixed\ndate: '2025-01-01'\n"
        b"---\nNow fine.\n")
    counts = ing.scan()
    assert counts.added == 1 and counts.rejected == len(BAD_FILES) - 1
    assert "nourl.md" not in {os.path.basename(r[0]) for r in
                              q(engine, "SELECT path FROM ingest_errors")}
    (root / "binary.md").unlink()
    ing.scan()
    assert "binary.md" not in {os.path.basename(r[0]) for r in
                               q(engine, "SELECT path FROM ingest_errors")}


def test_a_nul_escape_in_the_front_matter_is_rejected_on_both_databases(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A UTF-8 file without NUL bytes can still make one: a YAML escape (\\0, \\x00,
    \\u0000) in a "quoted" value or key. PostgreSQL refuses NUL in text and jsonb, so such
    a file failed the whole batch there (`redline ingest` printed a DataError traceback and
    exit 1, recording not even the good files beside it; `redline run` exited at start-up).
    It is rejected as `invalid_field` naming the field, on both databases alike."""
    root = tmp_path / "w"
    root.mkdir()
    (root / "good.md").write_bytes(_first_sample(sample))
    head = b"---\nsource_url: https://example.org/nul-%d\ndate: '2025-01-01'\n"
    bad = {"title.md": (head % 1 + b'title: "Hello\\0World"\n---\nBody.\n', "title"),
           "tags.md": (head % 2 + b'title: T\ntags: [a, "b\\x00c"]\n---\nBody.\n', "tags"),
           "extra.md": (head % 3 + b'title: T\nnote: {"k\\u0000": v}\n---\nBody.\n', "note")}
    for name, (data, _field) in bad.items():
        assert b"\x00" not in data
        (root / name).write_bytes(data)
    counts = make(engine, root).scan()
    assert (counts.added, counts.rejected) == (1, 3)
    rows = {os.path.basename(r.path): (r.reason, r.detail) for r in
            q(engine, "SELECT path, reason, detail FROM ingest_errors")}
    assert rows == {name: ("invalid_field", f"field '{field}' holds a NUL character (a \\0 "
                           "escape): no text may hold one, and PostgreSQL refuses it")
                    for name, (_data, field) in bad.items()}
    (root / "title.md").write_bytes(head % 1 + b'title: "Hello World"\n---\nBody.\n')
    counts = make(engine, root).scan()
    assert (counts.added, counts.rejected) == (1, 2)


def test_a_path_the_database_cannot_index_is_refused_and_the_pass_goes_on(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A file 3,000 bytes deep (Linux allows 4,096) passed PostgreSQL's btree limit of
    2,704 bytes for the files index: the whole batch failed (`redline ingest` exit 1,
    nothing recorded; the daemon, taking it for an outage, held every later change for
    ever). Whatever the database refuses for its data is that file's rejection now; the
    others are recorded, by a pass and by the daemon's entry point alike."""
    import random
    import string

    rng = random.Random(5)
    root = tmp_path / "w"
    deep = root
    for _ in range(12):
        deep = deep / "".join(rng.choices(string.ascii_letters, k=240))
    deep.mkdir(parents=True)
    long_path = deep / "deep.md"
    long_path.write_bytes(b"---\nsource_url: https://example.org/deep\ntitle: Deep\n"
                          b"date: '2025-01-01'\n---\nDeep.\n")
    assert len(str(long_path).encode()) > 2704
    (root / "good.md").write_bytes(_first_sample(sample))
    ing = make(engine, root)
    counts = ing.scan()
    postgres = engine.dialect.name == "postgresql"
    assert (counts.added, counts.rejected) == ((1, 1) if postgres else (2, 0))
    assert q(engine, "SELECT count(*) FROM current_statements")[0][0] == (1 if postgres else 2)
    (root / "later.md").write_bytes(b"---\nsource_url: https://example.org/later\n"
                                    b"title: Later\ndate: '2025-01-01'\n---\nLater.\n")
    long_path.write_bytes(long_path.read_bytes() + b"More.\n")
    counts = ing.process_paths([str(long_path), str(root / "later.md")])
    assert counts.added == 1 and counts.rejected == (1 if postgres else 0)
    assert q(engine, "SELECT title FROM current_statements WHERE source_url = "
                     "'https://example.org/later'")[0][0] == "Later"


def test_a_source_url_over_2000_bytes_is_rejected_on_both_databases(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """A 3,000-character URL (not compressible) passed PostgreSQL's btree limit of 2,704
    bytes for the unique index on source_url: the whole batch failed there (`redline
    ingest` exit 1, nothing of the batch recorded; the daemon held every later change).
    It is rejected as `invalid_field` on both databases; 2,000 bytes still ingest."""
    import random
    import string

    rng = random.Random(3)
    root = tmp_path / "w"
    root.mkdir()
    (root / "good.md").write_bytes(_first_sample(sample))
    base = "https://example.org/"

    def url_file(name: str, length: int) -> str:
        url = base + "".join(rng.choices(string.ascii_letters + string.digits,
                                         k=length - len(base)))
        (root / name).write_text(f"---\nsource_url: {url}\ntitle: {name}\n"
                                 "date: '2025-01-01'\n---\nBody.\n", encoding="utf-8")
        return url

    url_file("long.md", 3000)
    fits = url_file("fits.md", 2000)
    counts = make(engine, root).scan()
    assert (counts.added, counts.rejected) == (2, 1)
    assert [(os.path.basename(r.path), r.reason) for r in q(
        engine, "SELECT path, reason FROM ingest_errors")] == [("long.md", "invalid_field")]
    assert "source_url is 3,000 bytes long, over the limit of 2,000" in q(
        engine, "SELECT detail FROM ingest_errors")[0][0]
    assert q(engine, "SELECT count(*) FROM current_statements WHERE source_url = :u",
             u=fits)[0][0] == 1


def test_a_text_of_too_many_words_for_one_tsvector_is_stored_and_searchable(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """2.5 MB of distinct words (within the default max_file_bytes) make a tsvector over
    PostgreSQL's 1 MB limit. That failed the whole batch there: `redline ingest` exit 1
    with no statement of the batch recorded, and the daemon took the error for an outage
    and held every later change for ever. The statement is stored whole, on both
    databases, and on PostgreSQL search finds the words of its beginning."""
    import random
    import string

    rng = random.Random(7)
    words = ["".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(250_000)]
    root = tmp_path / "w"
    root.mkdir()
    (root / "good.md").write_bytes(_first_sample(sample))
    text = " ".join(words)
    (root / "big.md").write_text("---\nsource_url: https://example.org/big\ntitle: Big\n"
                                 "date: '2025-01-01'\n---\n" + text + "\n", encoding="utf-8")
    counts = make(engine, root).scan()
    assert (counts.added, counts.rejected) == (2, 0)
    assert q(engine, "SELECT body_text FROM current_statements WHERE source_url = "
                     "'https://example.org/big'")[0][0] == text
    with engine.connect() as conn:
        assert [h["title"] for h in query.search(conn, words[0])] == ["Big"]
        assert [h["title"] for h in query.search(conn, f"{words[1]} {words[2]}")] == ["Big"]


def test_unreadable_file_is_rejected(engine: sa.Engine, sample: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that cannot be read is recorded as unreadable, the rest goes on."""
    import daemon.reader as reader_mod

    root = tmp_path / "w"
    root.mkdir()
    f = root / "locked.md"
    f.write_bytes(_first_sample(sample))
    (root / "fine.md").write_bytes(sorted((sample / "current").rglob("*.md"))[1].read_bytes())
    f.chmod(0)
    if os.geteuid() == 0:  # root reads any mode: make the OS answer EACCES as it would
        real_open = open

        def denied(path, *a, **kw):  # type: ignore[no-untyped-def]
            if str(path) == str(f):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **kw)

        monkeypatch.setattr(reader_mod, "open", denied, raising=False)
    counts = make(engine, root).scan()
    assert counts.rejected == 1 and counts.added == 1
    row = q(engine, "SELECT reason, detail FROM ingest_errors")[0]
    assert row.reason == "unreadable" and "Permission denied" in row.detail


def test_vanishing_file_mid_scan_is_rejected_not_crashing(
        engine: sa.Engine, sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file listed by the scan but gone when read is recorded as vanished."""
    import daemon.reader as reader_mod

    root = tmp_path / "w"
    root.mkdir()
    victim = root / "gone.md"
    victim.write_bytes(_first_sample(sample))
    real_open = open

    def vanishing_open(path, *a, **kw):  # type: ignore[no-untyped-def]
        if str(path) == str(victim) and victim.exists():
            victim.unlink()
        return real_open(path, *a, **kw)

    monkeypatch.setattr(reader_mod, "open", vanishing_open, raising=False)
    counts = make(engine, root).scan()
    assert counts.rejected == 1
    assert q(engine, "SELECT reason FROM ingest_errors")[0][0] == "vanished"
    monkeypatch.undo()
    assert make(engine, root).scan().rejected == 0
    assert q(engine, "SELECT count(*) FROM ingest_errors")[0][0] == 0


def _special_file(path: Path, kind: str) -> socket.socket | None:
    """Make a FIFO, a character device like /dev/zero (root only) or a bound socket at
    `path`; the socket is returned, to be closed by the caller."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("only root can make a device node")
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is
    else:
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(path.parent)  # a relative name: a socket path is limited to 107 bytes
        try:
            sock.bind(path.name)
        finally:
            os.chdir(cwd)
        return sock
    return None


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_a_fifo_device_or_socket_named_like_a_statement_is_not_read(
        engine: sa.Engine, sample: Path, tmp_path: Path, kind: str) -> None:
    """A FIFO named x.md blocked the reader for good in open() (the daemon's live worker
    with it: no change was recorded any more), a device was read as a file (5 MB of
    zeros rejected as binary). Neither is a statement file: a full pass does not list them,
    and a path handed over by the watcher is not read either; a statement whose file was
    replaced by one is deleted, as the full pass records it."""
    root = tmp_path / "w"
    root.mkdir()
    (root / "fine.md").write_bytes(_first_sample(sample))
    victim = root / "x.md"
    victim.write_bytes(sorted((sample / "current").rglob("*.md"))[1].read_bytes())
    ingestor = make(engine, root)
    assert ingestor.scan().added == 2
    victim.unlink()
    sock = _special_file(victim, kind)
    result: list[IngestCounts] = []
    worker = threading.Thread(target=lambda: result.append(ingestor.process_paths(
        [str(victim)])), daemon=True)
    try:
        worker.start()
        worker.join(60)  # a bound against hanging the suite, not a timing
        if worker.is_alive() and kind == "fifo":  # release the blocked open()
            os.close(os.open(victim, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(10)
        assert result, "reading the special file blocked"
    finally:
        if sock is not None:
            sock.close()
    counts = result[0]
    assert (counts.rejected, counts.deleted) == (0, 1)
    assert q(engine, "SELECT count(*) FROM ingest_errors")[0][0] == 0
    assert q(engine, "SELECT path FROM files") == [(str(root / "fine.md"),)]
    full = make(engine, root).scan()  # the full pass agrees: nothing to do
    assert (full.files, full.unchanged, full.rejected, full.deleted) == (1, 1, 0, 0)


BAD_NAME = os.fsdecode(b"bad\xff.md")  # a name that is not UTF-8, as Python gives it
BAD_FOLDER = os.fsdecode(b"dir\xfe")


def _samples(sample: Path, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((sample / "current").rglob("*.md"))[:n]]


def _rejections(engine: sa.Engine) -> dict[str, sa.Row]:
    return {r.path: r for r in q(engine, "SELECT path, reason, detail, first_seen_at, "
                                         "last_seen_at FROM ingest_errors")}


def test_a_name_that_is_not_utf8_is_rejected_and_renaming_it_ingests(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """Linux allows any bytes in a name; no database stores a name that is not UTF-8. Such
    a file (or a file in such a folder) is rejected under its path with those bytes as
    \\xNN, and the rest of the pass is ingested; the next pass counts it rejected again
    without recording it anew; renamed, it is ingested and its rejection is gone."""
    root = tmp_path / "w"
    (root / BAD_FOLDER).mkdir(parents=True)
    good, in_bad_name, in_bad_folder = _samples(sample, 3)
    (root / "good.md").write_bytes(good)
    (root / BAD_NAME).write_bytes(in_bad_name)
    (root / BAD_FOLDER / "inside.md").write_bytes(in_bad_folder)
    ing = make(engine, root)
    assert ing.scan().as_dict() == IngestCounts(files=3, added=1, rejected=2).as_dict()
    errors = _rejections(engine)
    assert set(errors) == {f"{root}/bad\\xff.md", f"{root}/dir\\xfe/inside.md"}
    by_name, by_folder = errors[f"{root}/bad\\xff.md"], errors[f"{root}/dir\\xfe/inside.md"]
    assert by_name.reason == by_folder.reason == "bad_file_name"
    assert by_name.detail.startswith("the file name is not valid UTF-8")
    assert "rename the file" in by_name.detail and "rename the folder" in by_folder.detail
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == 1

    assert ing.scan().as_dict() == IngestCounts(files=3, unchanged=1, rejected=2).as_dict()
    assert _rejections(engine) == errors  # neither deleted as stale nor recorded anew

    (root / BAD_NAME).rename(root / "renamed.md")
    (root / BAD_FOLDER).rename(root / "dir")
    assert ing.scan().as_dict() == IngestCounts(files=3, added=2, unchanged=1).as_dict()
    assert _rejections(engine) == {}


def test_process_paths_rejects_a_name_that_is_not_utf8(engine: sa.Engine, sample: Path,
                                                       tmp_path: Path) -> None:
    """The daemon's live entry point: such a path is rejected as in a full pass (its stored
    hash looked up by its stored form), and the file's deletion clears the rejection."""
    root = tmp_path / "w"
    root.mkdir()
    good, other = _samples(sample, 2)
    bad = root / BAD_NAME
    bad.write_bytes(other)
    (root / "good.md").write_bytes(good)
    ing = make(engine, root)
    counts = ing.process_paths([str(bad), str(root / "good.md")])
    assert counts.as_dict() == IngestCounts(files=2, added=1, rejected=1).as_dict()
    assert [(r.path, r.reason) for r in q(engine, "SELECT path, reason FROM ingest_errors")
            ] == [(f"{root}/bad\\xff.md", "bad_file_name")]
    assert ing.process_paths([str(bad)]).as_dict() == IngestCounts(files=1,
                                                                   rejected=1).as_dict()
    assert ing.scan().as_dict() == IngestCounts(files=2, unchanged=1, rejected=1).as_dict()
    bad.unlink()
    assert ing.process_paths([str(bad)]).as_dict() == IngestCounts().as_dict()
    assert _rejections(engine) == {}


def _url_sharing_pair(sample: Path, root: Path) -> str:
    """The sample's two real files carrying one source_url, copied to `root` as 0.md and
    the newer 1.md (modification times a second apart); their URL."""
    index = list(csv.DictReader((sample / "current" / "INDEX.tsv").open(), delimiter="\t"))
    dupes: dict[str, list[str]] = defaultdict(list)
    for row in index:
        dupes[row["source_url"]].append(row["path"])
    url, paths = next((u, p) for u, p in dupes.items() if len(p) == 2)
    root.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        dest = root / f"{i}.md"
        shutil.copyfile(sample / "current" / p, dest)
        os.utime(dest, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i * 10**9))
    return url


def test_duplicate_urls_newest_file_wins(engine: sa.Engine, sample: Path, tmp_path: Path
                                         ) -> None:
    """Two real files with one source_url make one statement whose text is the newest."""
    root = tmp_path / "w"
    url = _url_sharing_pair(sample, root)
    make(engine, root).scan()
    rows = q(engine, "SELECT statement_id, revision_count FROM current_statements "
             "WHERE source_url = :u", u=url)
    assert len(rows) == 1 and rows[0].revision_count == 2
    newest = (root / "1.md")
    assert q(engine, "SELECT path FROM current_statements c JOIN statement_revisions r "
             "ON r.statement_id = c.statement_id AND r.revision_number = c.revision_number"
             )[0][0] == str(newest)


def test_renaming_the_older_of_two_files_with_one_url_is_no_change(
        engine: sa.Engine, sample: Path, tmp_path: Path) -> None:
    """Of two real files carrying one URL the newest gives the text; renaming or moving
    the older one writes nothing (SPEC §3: a rename is not a change), so it records no
    revision and the newest text stays current. Writing the older text under a new name
    is a change: the newest file written wins."""
    root = tmp_path / "w"
    _url_sharing_pair(sample, root)
    (root / "sub").mkdir()
    ing = make(engine, root)
    ing.scan()

    def current() -> tuple[int, str]:
        return q(engine, "SELECT c.revision_count, r.path FROM current_statements c "
                 "JOIN statement_revisions r ON r.statement_id = c.statement_id "
                 "AND r.revision_number = c.revision_number")[0]

    assert current() == (2, str(root / "1.md"))
    os.rename(root / "0.md", root / "sub" / "older.md")
    counts = ing.process_paths([str(root / "0.md"), str(root / "sub" / "older.md")])
    assert counts.as_dict() == IngestCounts(files=1, unchanged=1).as_dict()
    assert current() == (2, str(root / "1.md"))
    assert ing.scan().as_dict() == IngestCounts(files=2, unchanged=2).as_dict()
    os.rename(root / "sub" / "older.md", root / "again.md")
    assert ing.scan().as_dict() == IngestCounts(files=2, unchanged=2).as_dict()
    assert current() == (2, str(root / "1.md"))
    shutil.copyfile(root / "again.md", root / "copy.md")  # written now: the newest file
    ing.scan()
    assert current() == (3, str(root / "copy.md"))


# ---- the whole shared corpus (skips where ../shared/corpus is absent) -----------------

def _oracle_words(path: Path) -> str:
    """An independent, crude reading of the characters a reader sees: regular expressions
    strip link targets, markup characters, list markers, tags and entities (not the
    product's renderer)."""
    front, text = path.read_text(encoding="utf-8").split("\n---\n", 1)
    text = str(yaml.safe_load(front[4:])["title"]) + "\n\n" + text
    text = re.sub(r"^[ \t]*(?:[-+*][ \t]+|\d+[.)][ \t]{2,})(?=\S)", " ", text, flags=re.M)
    text = re.sub(r"\]\((?:[^()]|\([^()]*\))*\)", "]", text)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    text = re.sub(r"[\\*_#\[\]>`]", " ", text)
    text = text.translate({0x2019: "'", 0x2018: "'", 0x201c: '"', 0x201d: '"', 0x2014: "-",
                           0x2013: "-", 0x200b: None, 0x200d: None, 0x2060: None})
    return re.sub(r"\s*-+\s*", "-", " ".join(text.split()))


@pytest.mark.corpus
def test_whole_corpus_ingests_with_zero_rejections(engine: sa.Engine, corpus: Path,
                                                   tmp_path: Path) -> None:
    """All of ../shared/corpus/current ingests: no rejection, one statement per distinct
    URL, and a second pass creates nothing."""
    root = corpus / "current"
    counts = make(engine, root).scan()
    assert counts.rejected == 0, q(engine, "SELECT path, reason, detail FROM ingest_errors")
    assert q(engine, "SELECT count(*) FROM statements")[0][0] == len(distinct_urls(root))
    before = q(engine, "SELECT count(*) FROM revisions")[0][0]
    again = make(engine, root).scan()
    assert again.unchanged == again.files == counts.files
    assert q(engine, "SELECT count(*) FROM revisions")[0][0] == before


@pytest.mark.corpus
def test_whole_revision_corpus_replay_misses_no_edit(engine: sa.Engine, corpus: Path,
                                                     tmp_path: Path) -> None:
    """Replaying every real chain: each labelled editorial change is `revised` unless an
    independent reading finds the words equal; modified_time bumps are metadata;
    pandoc/markup-only changes are never `revised`; the URL rewrite is metadata."""
    kinds = replay(engine, corpus, tmp_path)
    index = list(csv.DictReader((corpus / "revisions" / "INDEX.tsv").open(), delimiter="\t"))
    files = {(r["orig_path"], int(r["version"])): corpus / "revisions" / r["version_file"]
             for r in index}
    missed = []
    for row in index:
        key = (row["orig_path"], int(row["version"]))
        cause, kind = row["likely_cause"], kinds[key]
        if key[1] == 1:
            assert kind == "added"
            continue
        before, after = files[(key[0], key[1] - 1)], files[key]
        old, new = _oracle_words(before), _oracle_words(after)
        # chars: a visible character changed (spacing aside); words: the word sequence did
        chars_differ = old.replace(" ", "") != new.replace(" ", "")
        words_differ = old.split() != new.split()
        if cause.startswith("site: editorial") and kind != "revised" and chars_differ:
            missed.append((row["version_file"], kind))
        if cause.startswith("scraper-side: pandoc") or cause.startswith("site: markup"):
            assert kind != "revised" or words_differ, row["version_file"]
        if cause.startswith("repo-side: bulk source_url"):
            assert kind == "metadata", row["version_file"]
        if cause == "site: modified_time bump only" and not words_differ:
            assert kind == "metadata", row["version_file"]
    assert not missed, missed


def test_process_paths_stops_between_transactions(engine: sa.Engine, sample: Path,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop asked mid-burst ends process_paths after a whole transaction: what was applied
    is committed and consistent, the rest is counted as left, and a later pass takes it."""
    from daemon import ingest as ingest_mod

    monkeypatch.setattr(ingest_mod, "BATCH_FILES", 5)
    root = tmp_path / "current"
    shutil.copytree(sample / "current", root)
    paths = sorted(str(p) for p in root.rglob("*.md"))
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2  # two transactions, then stop

    ing = make(engine, root)
    counts = ing.process_paths(paths, stop=stop)
    assert counts.files == 10 and counts.left == len(paths) - 10
    assert q(engine, "SELECT count(*) FROM files")[0][0] == 10
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == \
        q(engine, "SELECT count(*) FROM change_log")[0][0]
    rest = make(engine, root).scan()
    assert rest.files == len(paths) and rest.unchanged == 10 and rest.rejected == 0
    assert q(engine, "SELECT count(*) FROM files")[0][0] == len(paths)


def test_process_paths_streams_more_paths_and_counts_them_if_stopped(
        engine: sa.Engine, sample: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's burst: `more` is asked for further paths whenever the reading runs out,
    and they join the same pass until it answers nothing; what was read before each ask
    may be committed first. Stopped, the paths taken but not applied count as left."""
    from daemon import ingest as ingest_mod
    from daemon import reader

    monkeypatch.setattr(reader, "_take_worker", lambda start: None)  # read in-process

    root = tmp_path / "current"
    shutil.copytree(sample / "current", root)
    paths = sorted(str(p) for p in root.rglob("*.md"))
    parts = [paths[:3], paths[3:4], [], paths[4:]]  # the empty answer ends the stream
    asked = []

    def more() -> list[str]:
        asked.append(1)
        return parts[len(asked)]

    counts = make(engine, root).process_paths(parts[0], more=more)
    assert len(asked) == 2 and counts.files == 4 and counts.added + counts.revised + \
        counts.metadata == 4
    assert q(engine, "SELECT count(*) FROM files")[0][0] == 4

    monkeypatch.setattr(ingest_mod, "BATCH_FILES", 5)
    stops = []

    def stop() -> bool:
        stops.append(1)
        return len(stops) > 1  # one transaction, then stop

    later = iter([paths[5:9], paths[9:], []])
    counts = make(engine, root).process_paths(paths[4:5], stop=stop, more=lambda: next(later))
    # committed before `more` was first asked: the one file; then four taken, read, and
    # stopped before their transaction
    assert counts.files == 1 and counts.left == 4, "taken, not applied: left"
    assert q(engine, "SELECT count(*) FROM files")[0][0] == 5
    assert q(engine, "SELECT count(*) FROM statement_revisions")[0][0] == \
        q(engine, "SELECT count(*) FROM change_log")[0][0]


def test_sqlite_checkpoints_run_beside_the_writer(tmp_path: Path, sample: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """After an ingest the checkpointer thread copies the WAL back into the database file:
    the file alone (without its -wal) then holds every statement, and is intact."""
    import sqlite3
    import time

    from daemon.store import engine as engine_mod
    from daemon.store import migrate

    monkeypatch.setattr(engine_mod, "CHECKPOINT_WAL_BYTES", 0)
    db = tmp_path / "redline.db"
    engine = engine_mod.make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    root = tmp_path / "current"
    shutil.copytree(sample / "current", root)
    counts = make(engine, root).scan()
    statements = q(engine, "SELECT count(*) FROM statements")[0][0]
    assert counts.added == statements > 20
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        checkpointer = engine_mod._checkpointers.get(str(db))
        if checkpointer is not None and checkpointer.runs:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no checkpoint ran")
    alone = tmp_path / "alone.db"
    shutil.copyfile(db, alone)  # the main file only: what checkpoints copied into it
    conn = sqlite3.connect(alone)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM statements").fetchone()[0] == statements
    finally:
        conn.close()
    engine.dispose()


def test_insert_many_stores_what_sqlalchemys_insert_stores(engine: sa.Engine) -> None:
    """records.insert_many applies the columns' own bind processing itself (datetimes,
    dates, JSON; by executemany on SQLite, binary COPY on PostgreSQL): every stored value
    equals what SQLAlchemy's insert stores."""
    import datetime as dt

    from daemon.store import records
    from daemon.store.schema import revisions, statements

    when = dt.datetime(2025, 7, 25, 16, 5, 19, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    statement = dict(source_url="https://example.org/a/", head_revision=1, first_seen_at=when,
                     last_changed_at=when, deleted_at=None)
    revision = dict(number=1, kind="revised", changed_fields=["title", "tags"],
                    source_url="https://example.org/a/", title="Tarif “quotes” — ünïcode",
                    date=dt.date(2025, 7, 25), published_time=when, modified_time=None,
                    tags=["a", "b"], extra={"k": [1, "x"], "z": None}, body="**Body**",
                    body_text="Body", content_sha256="0" * 64, path="/w/a.md",
                    observed_at=when)
    stored = []
    with engine.begin() as conn:
        for way in ("sqlalchemy", "insert_many"):
            url = f"https://example.org/{way}/"
            s_row = {**statement, "source_url": url}
            if way == "sqlalchemy":
                sid = conn.execute(statements.insert().values(s_row)
                                   .returning(statements.c.id)).scalar_one()
                conn.execute(revisions.insert(), [{**revision, "statement_id": sid}])
            else:
                sid = records._insert_with_ids(conn, statements, [s_row])[0]
                records.insert_many(conn, revisions, [{**revision, "statement_id": sid}])
            raw = conn.exec_driver_sql(
                "SELECT s.head_revision, s.first_seen_at, s.last_changed_at, s.deleted_at, "
                "r.number, r.kind, r.changed_fields, r.title, r.date, r.published_time, "
                "r.modified_time, r.tags, r.extra, r.body, r.body_text, r.observed_at "
                "FROM statements s JOIN revisions r ON r.statement_id = s.id "
                f"WHERE s.source_url = '{url}'").one()
            stored.append(tuple(raw))
    assert stored[0] == stored[1]
    assert stored[0][1] is not None and stored[0][8] is not None


def test_insert_many_errors_are_sqlalchemys(engine: sa.Engine) -> None:
    """A failed bulk insert raises what SQLAlchemy raises for a statement, which the retry
    logic relies on: a constraint violation is an IntegrityError, and on PostgreSQL a
    connection dropped under a COPY is an OperationalError marked as invalidated."""
    from daemon.store import records
    from daemon.store.schema import statement_urls

    row = {"url": "https://example.org/x/", "statement_id": 999_999}  # no such statement
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        records.insert_many(conn, statement_urls, [row])
    if engine.dialect.name != "postgresql":
        return
    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    try:
        with pytest.raises(sa.exc.OperationalError) as caught, engine.begin() as conn:
            records._column_oids(conn, "statement_urls")  # known: the COPY is the next query
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            records.insert_many(conn, statement_urls, [row])
    finally:
        admin.dispose()
    assert caught.value.connection_invalidated
    assert "COPY" in str(caught.value)  # the COPY's own error, not a failed rollback's
    with engine.connect() as conn:  # the pool replaced the dropped connection
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1

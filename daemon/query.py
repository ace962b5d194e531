"""Questions asked of the record: a statement's history, the diff between two revisions,
full-text search, the change log, rejected files and the daemon's state.

The one library behind `redline history|diff|search|events|errors|status` and the web view.
It reads the SQL views of SPEC §4 (plus `revisions` for the extra keys a diff compares and
the search index), never writes, and returns plain JSON-ready values: times are ISO 8601
UTC strings ending in `Z`, dates `YYYY-MM-DD`, JSON arrays lists.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.changes import classify_change
from daemon.diffs import unified_diff, word_diff
from daemon.errors import NotFound, UsageError
from daemon.store.records import version_from_row
from daemon.store.schema import JSONType, UTCDateTime, revisions
from daemon.text import paragraphs, title_text

KINDS = ("added", "revised", "metadata", "formatting", "deleted", "restored")
DELIVERY_STATUSES = ("pending", "delivered", "failed", "dead")
# A heartbeat older than this means the daemon is not running (it refreshes every ~30 s).
HEARTBEAT_FRESH = dt.timedelta(minutes=2)
# Search snippets mark matched words with these; renderers turn them into colour or <mark>.
MARK_START = "\u27e6"
MARK_END = "\u27e7"

# The SPEC §4 views, typed so that times, dates and JSON come back as Python values.
_TYPES: dict[str, Any] = {
    "date": sa.Date, "published_time": UTCDateTime, "modified_time": UTCDateTime,
    "tags": JSONType, "changed_fields": JSONType, "first_seen_at": UTCDateTime,
    "last_changed_at": UTCDateTime, "deleted_at": UTCDateTime, "observed_at": UTCDateTime,
    "occurred_at": UTCDateTime,
}


def _view(name: str, columns: str) -> sa.TableClause:
    return sa.table(name, *(sa.column(c, _TYPES.get(c)) for c in columns.split()))


_current = _view("current_statements", """statement_id source_url title date published_time
    modified_time tags body body_text revision_number revision_count first_seen_at
    last_changed_at deleted_at""")
_revisions = _view("statement_revisions", """statement_id source_url revision_number kind
    changed_fields title date published_time modified_time tags body body_text
    content_sha256 path observed_at""")
_change_log = _view("change_log", """event_id occurred_at kind statement_id source_url title
    from_revision to_revision changed_fields summary words_added words_removed""")
_ingest_errors = sa.table(
    "ingest_errors", sa.column("path"), sa.column("reason"), sa.column("detail"),
    sa.column("first_seen_at", UTCDateTime), sa.column("last_seen_at", UTCDateTime),
)
_delivery_status = sa.table("delivery_status", sa.column("status"), sa.column("channel"))
_heartbeats = sa.table(
    "heartbeats", sa.column("instance"), sa.column("hostname"), sa.column("pid"),
    sa.column("started_at", UTCDateTime), sa.column("seen_at", UTCDateTime),
    sa.column("watching", sa.Boolean), sa.column("status"),
)


def iso(value: Any) -> Any:
    """A JSON-ready value: aware datetimes as `...Z` strings, dates as YYYY-MM-DD."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# Ids are 64-bit signed integers on both databases: a larger number names no statement
# (and would not even fit in a query parameter).
MAX_ID = 2**63 - 1
_WHOLE = re.compile(r"[0-9]+")


def whole_number(text: str) -> int | None:
    """The value of a string of ASCII digits, else None (`str.isdigit` also accepts `²`,
    which `int` refuses). More than 19 digits is more than any id, revision or bound here:
    MAX_ID + 1 stands for it (`int` refuses over 4,300 digits with a ValueError)."""
    if not _WHOLE.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else MAX_ID + 1


def _known_id(statement_id: int) -> int:
    if statement_id > MAX_ID:
        raise NotFound(f"no statement with an id beyond {MAX_ID} (64 bits)")
    if statement_id < 1:
        raise NotFound(f"no statement with id {statement_id}")
    return statement_id


def _row(row: Any, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    m = row._mapping
    return {k: iso(m[k]) for k in (keys or tuple(m.keys()))}


# --- naming a statement ---------------------------------------------------------------

def resolve_statement(conn: Connection, ref: str) -> int:
    """The id of the statement named by its URL, an old URL of it, or its numeric id."""
    ref = no_nul(ref, "a statement's name").strip()
    if not ref:
        raise UsageError("name a statement by its URL, an old URL of it, or its id")
    candidates = url_variants(ref)
    found = dict(conn.execute(
        sa.text("SELECT url, statement_id FROM statement_urls WHERE url IN :u")
        .bindparams(sa.bindparam("u", expanding=True)), {"u": candidates}).all())
    for url in candidates:  # the URL as typed wins over a variant of it
        if url in found:
            return int(found[url])
    number = whole_number(ref)
    if number is not None:
        if not 1 <= number <= MAX_ID:
            raise NotFound(f"no statement with id {clip(ref)}")
        sid = conn.execute(sa.text("SELECT id FROM statements WHERE id = :i"),
                           {"i": number}).scalar()
        if sid is not None:
            return int(sid)
        raise NotFound(f"no statement with id {clip(ref)}")
    raise NotFound(f"no statement has the URL {clip(ref)} (see `redline search`)")


def no_nul(text: str, what: str) -> str:
    """`text` unless it holds a NUL character: no statement text, URL or tag can (the files
    are text), and PostgreSQL refuses NUL in any text value (a DataError, which the web
    view answered with a 500 and a traceback)."""
    if "\x00" in text:
        raise UsageError(f"{what} contains a NUL character (\\x00): no statement holds one")
    return text


def clip(text: str, limit: int = 300) -> str:
    """What the user typed, for an error line: a pasted page is not repeated in full."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def url_variants(ref: str) -> list[str]:
    """The spellings of a pasted URL that name the same page, the URL as typed first: with
    or without the trailing slash (the most common difference), without a `#fragment`
    (never sent to the server), with the scheme and host in lower case, and with its
    percent-escapes in either case and its non-ASCII characters percent-encoded (a browser
    copies `%E2%81%A0` or shows the character where the file has `%e2%81%a0`)."""
    if "://" not in ref:
        return [ref]
    out: list[str] = []

    def add(url: str) -> None:
        for u in (url, url[:-1] if url.endswith("/") else url + "/"):
            if u not in out:
                out.append(u)

    for base in dict.fromkeys((ref, ref.split("#", 1)[0])):
        scheme, _, rest = base.partition("://")
        host, slash, path = rest.partition("/")
        for url in dict.fromkeys((base, f"{scheme.lower()}://{host.lower()}{slash}{path}")):
            encoded = "".join(urllib.parse.quote(ch, safe="") if ord(ch) > 127 else ch
                              for ch in url)
            add(url)
            for text in dict.fromkeys((url, encoded)):
                add(_ESCAPE.sub(lambda m: m.group().lower(), text))
                add(_ESCAPE.sub(lambda m: m.group().upper(), text))
    return out


def statement_summary(conn: Connection, statement_id: int) -> dict[str, Any]:
    """The statement's current_statements row (without its body) and every URL it has had."""
    keys = ("statement_id", "source_url", "title", "date", "published_time", "modified_time",
            "tags", "revision_number", "revision_count", "first_seen_at", "last_changed_at",
            "deleted_at")
    statement_id = _known_id(statement_id)
    row = conn.execute(sa.select(*(_current.c[k] for k in keys))
                       .where(_current.c.statement_id == statement_id)).first()
    if row is None:
        raise NotFound(f"no statement with id {statement_id}")
    out = _row(row)
    out["urls"] = list(conn.execute(sa.text(
        "SELECT url FROM statement_urls WHERE statement_id = :i ORDER BY url"),
        {"i": statement_id}).scalars())
    return out


# --- history and diffs ------------------------------------------------------------------

_HISTORY_KEYS = ("revision_number", "kind", "changed_fields", "observed_at", "title",
                 "source_url", "date", "published_time", "modified_time", "path")


def history(conn: Connection, statement_id: int) -> list[dict[str, Any]]:
    """Every revision of a statement, oldest first, with its event's summary and counts."""
    statement_id = _known_id(statement_id)
    r, c = _revisions, _change_log
    q = (sa.select(*(r.c[k] for k in _HISTORY_KEYS), c.c.event_id, c.c.summary,
                   c.c.words_added, c.c.words_removed)
         .select_from(r.outerjoin(c, sa.and_(c.c.statement_id == r.c.statement_id,
                                             c.c.to_revision == r.c.revision_number)))
         .where(r.c.statement_id == statement_id).order_by(r.c.revision_number))
    return [_row(row) for row in conn.execute(q)]


_META_FIELDS = ("source_url", "title", "date", "published_time", "modified_time", "tags",
                "path", "content_sha256")


def _revision_meta(conn: Connection, statement_id: int, number: int) -> dict[str, Any]:
    r = _revisions
    row = conn.execute(sa.select(r.c.revision_number, r.c.kind, r.c.changed_fields,
                                 r.c.observed_at, *(r.c[k] for k in _META_FIELDS))
                       .where(r.c.statement_id == statement_id,
                              r.c.revision_number == number)).one()
    return _row(row)


def _parse_rev(value: int | str | None, name: str) -> int | None:
    if value is None:
        return None
    number = whole_number(str(value).strip().lstrip("rR"))
    if number is None or number < 1:
        raise UsageError(f"{name} must be a revision number (1, 2, ...), "
                         f"not {clip(repr(value))}")
    return number


def pick_revisions(head: int, from_rev: int | str | None, to_rev: int | str | None,
                   statement_id: int = 0) -> tuple[int | None, int]:
    """Which two revisions a diff compares: by default the last two; the first revision of
    a statement is compared with nothing (from = None)."""
    a, b = _parse_rev(from_rev, "from"), _parse_rev(to_rev, "to")
    for n, typed in ((a, from_rev), (b, to_rev)):
        if n is not None and n > head:
            shown = n if n <= MAX_ID else clip(str(typed).strip())
            raise NotFound(f"statement {statement_id} has no revision {shown} "
                           f"(it has {'only 1' if head == 1 else f'1 to {head}'})")
    to = b if b is not None else head
    frm = a if a is not None else (to - 1 if to > 1 else None)
    if frm is not None and frm >= to:
        raise UsageError(f"from ({frm}) must be an earlier revision than to ({to})")
    return frm, to


def diff(conn: Connection, statement_id: int, from_rev: int | str | None = None,
         to_rev: int | str | None = None) -> dict[str, Any]:
    """The diff between two revisions (default: the last two): metadata changes, a unified
    diff and a word diff of title and text."""
    statement_id = _known_id(statement_id)
    head = conn.execute(sa.text("SELECT head_revision FROM statements WHERE id = :i"),
                        {"i": statement_id}).scalar()
    if head is None:
        raise NotFound(f"no statement with id {statement_id}")
    frm, to = pick_revisions(int(head), from_rev, to_rev, statement_id)
    rows = {r.number: r for r in conn.execute(
        sa.select(revisions).where(revisions.c.statement_id == statement_id,
                                   revisions.c.number.in_([n for n in (frm, to) if n])))}
    new = version_from_row(rows[to])
    old = version_from_row(rows[frm]) if frm else None
    if old is None:
        changed: list[str] = []
    elif to == frm + 1:  # type: ignore[operator]
        changed = list(rows[to].changed_fields)
    else:
        change = classify_change(old, new)
        changed = list(change.changed_fields) if change else []
    old_title, old_text = (old.title, old.body_text) if old else ("", "")
    ops, stats = word_diff(old_title, old_text, new.title, new.body_text)
    unified = (unified_diff(old.title, old.body_text, new.title, new.body_text,
                            f"r{frm}", f"r{to}") if old else _added_unified(new, f"r{to}"))
    from_meta = _revision_meta(conn, statement_id, frm) if frm else None
    to_meta = _revision_meta(conn, statement_id, to)
    return {
        "statement": statement_summary(conn, statement_id),
        "from": from_meta,
        "to": to_meta,
        "changed_fields": changed,
        "metadata_changes": _metadata_changes(changed, from_meta, to_meta, old, new),
        "unified": unified,
        "words": [op.as_dict() for op in ops],
        "stats": {"paragraphs_changed": stats.paragraphs_changed,
                  "words_added": stats.words_added, "words_removed": stats.words_removed},
    }


def _added_unified(new: Any, label: str) -> str:
    """A first revision as a unified diff against nothing (every line added)."""
    lines = [f"# {title_text(new.title)}", *paragraphs(new.body_text)]
    return "\n".join(difflib.unified_diff([], lines, "/dev/null", label, lineterm="")) + "\n"


def _iso_exact(value: dt.datetime | None) -> str | None:
    """A time with its microseconds, where whole seconds hide the change."""
    return None if value is None else \
        value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _metadata_changes(changed: list[str], a: dict[str, Any] | None, b: dict[str, Any],
                      old: Any, new: Any) -> list[dict[str, Any]]:
    """Old and new value of every changed field except the body (shown as the text diff)."""
    if a is None:
        return []
    out = []
    for field in changed:
        if field == "body":
            continue
        if field in b:
            before, after = a[field], b[field]
            if before == after and isinstance(getattr(new, field, None), dt.datetime):
                # a time moved by less than a second: whole seconds would read "X -> X"
                before, after = (_iso_exact(getattr(v, field)) for v in (old, new))
            out.append({"field": field, "old": before, "new": after})
        else:  # an extra front-matter key
            out.append({"field": field, "old": old.extra_fields().get(field),
                        "new": new.extra_fields().get(field)})
    return out


# --- search -----------------------------------------------------------------------------

_TERM_RE = re.compile(r'(-?)("[^"]*"?|\S+)')
# What both full-text indexes keep of a text: runs of letters and digits (FTS5 unicode61
# and the PostgreSQL parser split on everything else).
_TOKEN_RE = re.compile(r"[^\W_]+")

# Bounds on what one search may ask. FTS5's snippet() scores every instance of every term
# against every other, so its cost per result grows with the square of the terms' matches:
# 20 `a*` terms took 2.8-8 s on a 40-statement database, 2,000 kept a CPU busy for minutes.
# People type a few words (the examples here use 1 to 4); a pasted sentence is 20-30.
MAX_SEARCH_TERMS = 32  # words and "phrases", with OR alternatives and -words
MAX_PREFIX_TERMS = 8  # of which word* prefixes (each may stand for thousands of words)
MAX_SEARCH_CHARS = 2_000


def _has_token(words: str) -> bool:
    """Whether a term holds anything an index could match: `-`, `--` or `"..."` hold nothing,
    and FTS5 would match nothing for them (an empty phrase), PostgreSQL ignore them."""
    return _TOKEN_RE.search(words) is not None


@dataclass(frozen=True)
class SearchTerm:
    """A word or a phrase as typed (without its quotes and `*`); `prefix` for `word*`."""

    words: str
    prefix: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """What a search asks: every group must match (a group is alternatives joined by OR),
    no `none_of` term may."""

    all_of: tuple[tuple[SearchTerm, ...], ...]
    none_of: tuple[SearchTerm, ...]


def parse_search(text: str) -> SearchQuery:
    """The user's words: "quoted phrases", `OR` between alternatives, `-word` to exclude, a
    trailing `*` for a prefix; words without an operator must all occur. A term without a
    letter or digit is left out. Raises UsageError beyond the bounds above."""
    no_nul(text, "the search text")
    positive: list[list[SearchTerm]] = []
    negative: list[SearchTerm] = []
    pending_or = False
    terms = prefixes = 0
    for minus, term in _TERM_RE.findall(text):
        if term == "OR" and not minus:
            pending_or = bool(positive)
            continue
        prefix = term.endswith("*") and not term.startswith('"')
        words = term.strip('"').rstrip("*") if prefix else term.strip('"')
        if not _has_token(words):  # a lone `-` or `*`: only text, and no word
            continue
        terms += 1
        prefixes += prefix
        if terms > MAX_SEARCH_TERMS:
            raise UsageError(f"search takes at most {MAX_SEARCH_TERMS} words or \"phrases\" "
                             f"(OR alternatives and -words included); "
                             f"{_count_terms(text)} were given")
        if prefixes > MAX_PREFIX_TERMS:
            raise UsageError(f"search takes at most {MAX_PREFIX_TERMS} prefix* words; use "
                             "whole words or longer prefixes for the others")
        found = SearchTerm(words, prefix)
        if minus:
            negative.append(found)
        elif pending_or:
            positive[-1].append(found)
            pending_or = False
        else:
            positive.append([found])
    if len(text) > MAX_SEARCH_CHARS:
        raise UsageError(f"search text is {len(text)} characters long; at most "
                         f"{MAX_SEARCH_CHARS} are read")
    if not positive:
        raise UsageError("search needs at least one word to look for")
    return SearchQuery(tuple(tuple(g) for g in positive), tuple(negative))


def _count_terms(text: str) -> int:
    return sum(1 for minus, term in _TERM_RE.findall(text)
               if not (term == "OR" and not minus) and _has_token(term.strip('"').rstrip("*")))


def _fold(words: str) -> str:
    """Case and diacritics folded, as FTS5's unicode61 tokenizer (remove_diacritics 2) does."""
    decomposed = unicodedata.normalize("NFKD", words.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _fts5_key(term: SearchTerm) -> tuple[tuple[str, ...], bool]:
    """The tokens FTS5 looks for: terms with the same key match the same rows."""
    return tuple(_TOKEN_RE.findall(_fold(term.words))), term.prefix


def _distinct(q: SearchQuery, key: Any) -> SearchQuery:
    """The query without repeated terms and groups (`a* a* a*` is `a*`): they cannot change
    which statements match, only multiply the cost of ranking and snippets."""
    groups: list[tuple[SearchTerm, ...]] = []
    seen_groups: set[frozenset[Any]] = set()
    for group in q.all_of:
        kept: dict[Any, SearchTerm] = {}
        for t in group:
            kept.setdefault(key(t), t)
        if frozenset(kept) not in seen_groups:
            seen_groups.add(frozenset(kept))
            groups.append(tuple(kept.values()))
    negative: dict[Any, SearchTerm] = {}
    for t in q.none_of:
        negative.setdefault(key(t), t)
    return SearchQuery(tuple(groups), tuple(negative.values()))


def _fts5_phrase(term: SearchTerm) -> str:
    return '"' + term.words.replace('"', '""') + '"' + (" *" if term.prefix else "")


def fts5_query(text: str) -> str:
    """The user's words as a safe FTS5 query: every word and "quoted phrase" is quoted (so
    FTS5 syntax characters are only text), `OR` joins alternatives, `-word` excludes and a
    trailing `*` searches a prefix; words without an operator must all occur."""
    q = _distinct(parse_search(text), _fts5_key)
    positive = [" OR ".join(_fts5_phrase(t) for t in group) for group in q.all_of]
    query = " AND ".join(f"({p})" if " OR " in p else p for p in positive)
    return query + "".join(f" NOT {_fts5_phrase(n)}" for n in q.none_of)


def _pg_key(term: SearchTerm) -> tuple[str, bool]:
    return term.words.lower(), term.prefix


def _tsquery_literal(words: str) -> str:
    """`words` as one quoted tsquery operand: inside quotes only `'` and `\\` are special."""
    return "'" + words.replace("\\", "\\\\").replace("'", "''") + "'"


# Endings of English words, whole or in part: `prefix + ending` are words a prefix may
# begin, whose stems (shorter than the prefix: "president" -> 'presid') the prefix must find.
_ENDINGS = tuple(
    "s es ed ing ings ingly ly e y ies ied er ers est al als ally ic ics ical ically ity "
    "ities ive ives ively iveness ion ions ation ations ition itions ization izations "
    "isation isations ational tional ment ments ness ful fully fulness ous ously ousness "
    "ance ances ence ences ency encies ant ants ent ents ently ism isms ist ists ate ates "
    "ated ating ator ators ize izes ized izing izer ise ised ising able ably ible ibly "
    "ability abilities ibility less lessly lessness alism ality alities alize alized icate "
    "iciti ative eed eedly edly ogy ogies ogical".split())
_LETTERS_RE = re.compile(r"[^\W\d_]{3,}")


def prefix_stems(conn: Connection, text: str) -> dict[str, tuple[str, ...]]:
    """For each `word*` of a search on PostgreSQL, the stems shorter than the word of the
    words it begins ("presiden" -> 'presid', the stem of "president"): the index holds
    stems, and the prefix 'presiden':* begins none of them."""
    q = parse_search(text)
    prefixes = {t.words.lower() for t in (*(t for g in q.all_of for t in g), *q.none_of)
                if t.prefix and _LETTERS_RE.fullmatch(t.words)}
    out: dict[str, tuple[str, ...]] = {}
    for p in sorted(prefixes):
        words = {p + e[k:] for e in _ENDINGS for k in range(len(e)) if p.endswith(e[:k])}
        lexemes = conn.execute(sa.text("SELECT tsvector_to_array(to_tsvector('english', :w))"),
                               {"w": " ".join(sorted(words))}).scalar_one()
        out[p] = tuple(sorted(lx for lx in lexemes if len(lx) < len(p) and p.startswith(lx)))
    return out


def tsquery_sql(text: str, stems: dict[str, tuple[str, ...]] | None = None
                ) -> tuple[str, dict[str, str]]:
    """The user's words as a PostgreSQL tsquery expression and its parameters, with the
    meaning fts5_query gives them: each word or phrase is `phraseto_tsquery` of the text
    (stemmed, stop words dropped, never parsed as tsquery syntax), each `word*` a quoted
    operand with `:*` (a prefix of the stemmed word, as to_tsquery does it) or one of its
    `stems` (prefix_stems), combined with `&&`, `||` and `!!` in SQL; the user's text
    reaches PostgreSQL only as bound values."""
    q = _distinct(parse_search(text), _pg_key)
    params: dict[str, str] = {}

    def operand(term: SearchTerm) -> str:
        name = f"w{len(params)}"
        if term.prefix:
            params[name] = _tsquery_literal(term.words) + ":*"
            # A prefix that is an English stop word (`am*`, `in*`, `off*`, `don*`) is no
            # word to stem: the 'english' configuration drops it and the query matched
            # nothing, where FTS5 finds America, international, official, Donald. The
            # 'simple' configuration keeps it (lower-cased), a prefix of the stored stems.
            prefix = (f"(CASE WHEN numnode(to_tsquery('english', :{name})) = 0 "
                      f"THEN to_tsquery('simple', :{name}) "
                      f"ELSE to_tsquery('english', :{name}) END)")
            shorter = (stems or {}).get(term.words.lower())
            if not shorter:
                return prefix
            params[name + "s"] = " | ".join(_tsquery_literal(lx) for lx in shorter)
            return f"({prefix} || to_tsquery('simple', :{name}s))"
        params[name] = term.words
        return f"phraseto_tsquery('english', :{name})"

    groups = ["(" + " || ".join(operand(t) for t in group) + ")" for group in q.all_of]
    groups += [f"(!! {operand(t)})" for t in q.none_of]
    expr = groups[0]
    for g in groups[1:]:
        expr = f"({expr} && {g})"
    return expr, params


def search(conn: Connection, text: str, limit: int | str = 20, offset: int = 0
           ) -> list[dict[str, Any]]:
    """Current statements matching `text`, best first, with a snippet whose matched words are
    between MARK_START and MARK_END; rank is higher for a better match."""
    if conn.dialect.name == "sqlite":
        sql = sa.text(f"""
            SELECT s.rowid AS statement_id, c.source_url, c.title, c.deleted_at,
                   snippet(statement_search, -1, '{MARK_START}', '{MARK_END}', '…', 16)
                     AS snippet,
                   -bm25(statement_search, 5.0, 1.0) AS rank
            FROM statement_search s JOIN current_statements c ON c.statement_id = s.rowid
            WHERE statement_search MATCH :q
            ORDER BY bm25(statement_search, 5.0, 1.0), s.rowid LIMIT :limit OFFSET :offset""")
        params: dict[str, Any] = {"q": fts5_query(text)}
    else:
        tsquery, params = tsquery_sql(text, prefix_stems(conn, text))
        sql = sa.text(f"""
            SELECT s.statement_id, c.source_url, c.title, c.deleted_at,
                   ts_headline('english', c.body_text, t.q,
                               'StartSel="{MARK_START}", StopSel="{MARK_END}", MaxWords=30,
                                MinWords=12, MaxFragments=1, FragmentDelimiter=" … "')
                     AS snippet,
                   ts_rank(s.tsv, t.q) AS rank
            FROM statement_search s JOIN current_statements c ON c.statement_id = s.statement_id,
                 (SELECT {tsquery} AS q) AS t
            WHERE s.tsv @@ t.q
            ORDER BY rank DESC, s.statement_id LIMIT :limit OFFSET :offset""")
    params.update(limit=_bounded(limit, "limit"), offset=max(0, int(offset)))
    typed = sql.columns(deleted_at=UTCDateTime)
    try:
        rows = conn.execute(typed, params).all()
    except sa.exc.OperationalError as exc:  # an FTS5 syntax error the quoting did not catch
        raise UsageError(f"cannot search for {text!r}: {str(exc.orig).splitlines()[0]}"
                         ) from None
    # one line per snippet: a fragment may span paragraphs
    return [{**_row(r), "snippet": " ".join(r.snippet.split()), "rank": round(float(r.rank), 6)}
            for r in rows]


def _bounded(value: int | str, name: str, top: int = 10_000) -> int:
    number = whole_number(str(value).strip())
    if number is None or not 1 <= number <= top:
        raise UsageError(f"{name} must be a whole number from 1 to {top}, "
                         f"not {clip(repr(value))}")
    return number


# --- the change log, errors and status ----------------------------------------------------

_SINCE_RE = re.compile(r"^([0-9]+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time from `2026-02-03`, `2026-02-03T16:44:17Z` (no zone = UTC) or an age
    such as `30m`, `12h`, `7d`, `2w`; a time outside the years 1 to 9999 (UTC) is a
    UsageError, not an OverflowError."""
    value = text.strip()
    m = _SINCE_RE.match(value.lower())
    try:
        if m:
            if value.endswith("M"):  # a month to many a reader, a minute to us: neither
                raise UsageError(f"since {clip(repr(text))}: 'M' is minutes or months: "
                                 "write 30m for minutes, 30d for days")
            now = now or dt.datetime.now(dt.UTC)
            return now - dt.timedelta(**{_UNITS[m.group(2)]: whole_number(m.group(1))})
        try:
            when = dt.datetime.fromisoformat(value.replace(" ", "T", 1) if len(value) > 10
                                             else value)
        except ValueError:
            raise UsageError(f"since {clip(repr(text))} is not a time: use e.g. 2026-02-03, "
                             "2026-02-03T16:44:17Z or 7d, 12h, 30m") from None
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except OverflowError:
        raise UsageError(f"since {clip(repr(text))} is out of range: a time must fall in "
                         "the years 1 to 9999 (UTC)") from None


def events(conn: Connection, since: dt.datetime | None = None, kind: str | None = None,
           tag: str | None = None, limit: int | str = 50, offset: int = 0
           ) -> list[dict[str, Any]]:
    """change_log rows (with the tags of the revision), newest first."""
    c, r = _change_log, _revisions
    q = (sa.select(*c.c, r.c.tags)
         .select_from(c.join(r, sa.and_(r.c.statement_id == c.c.statement_id,
                                        r.c.revision_number == c.c.to_revision))))
    if since is not None:
        q = q.where(c.c.occurred_at >= since)
    if kind is not None:
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)}, not {clip(repr(kind))}")
        q = q.where(c.c.kind == kind)
    if tag is not None:
        no_nul(tag, "tag")
        if conn.dialect.name == "sqlite":
            q = q.where(sa.text("EXISTS (SELECT 1 FROM json_each(statement_revisions.tags) "
                                "WHERE json_each.value = :tag)").bindparams(tag=tag))
        else:
            q = q.where(sa.text("statement_revisions.tags @> jsonb_build_array(:tag)")
                        .bindparams(tag=tag))
    q = (q.order_by(c.c.occurred_at.desc(), c.c.event_id.desc())
         .limit(_bounded(limit, "limit")).offset(max(0, int(offset))))
    return [_row(row) for row in conn.execute(q)]


def errors(conn: Connection) -> list[dict[str, Any]]:
    """Files failing now (ingest_errors), most recently seen first."""
    e = _ingest_errors
    return [_row(row) for row in conn.execute(
        sa.select(*e.c).order_by(e.c.last_seen_at.desc(), e.c.path))]


def status(conn: Connection, now: dt.datetime | None = None) -> dict[str, Any]:
    """Counts of statements, revisions by kind, rejected files and deliveries, the last
    change, and whether a daemon is running (a heartbeat seen within HEARTBEAT_FRESH, and
    not the last one of a daemon that stopped), and per channel the deliveries still to
    send (pending or failed, waiting for a retry)."""
    now = now or dt.datetime.now(dt.UTC)
    total, deleted = conn.execute(sa.select(
        sa.func.count(), sa.func.count(_current.c.deleted_at))).one()
    by_kind = dict.fromkeys(KINDS, 0)
    r = _revisions
    for kind, n in conn.execute(sa.select(r.c.kind, sa.func.count()).group_by(r.c.kind)):
        by_kind[kind] = int(n)
    d = _delivery_status
    deliveries = dict.fromkeys(DELIVERY_STATUSES, 0)
    for st, n in conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status)):
        deliveries[st] = int(n)
    rejected = conn.execute(sa.select(sa.func.count()).select_from(_ingest_errors)).scalar_one()
    waiting = {ch: int(n) for ch, n in conn.execute(
        sa.select(d.c.channel, sa.func.count()).where(d.c.status.in_(("pending", "failed")))
        .group_by(d.c.channel).order_by(d.c.channel))}
    last = events(conn, limit=1)
    h = _heartbeats
    instances = []
    for row in conn.execute(sa.select(*h.c).order_by(h.c.seen_at.desc())):
        item = _row(row)
        # a daemon that stopped cleanly wrote its last row saying so: it is not running
        item["fresh"] = now - row.seen_at <= HEARTBEAT_FRESH and not (
            row.status == "stopped" and not row.watching)
        instances.append(item)
    running = [i for i in instances if i["fresh"]]
    return {
        "statements": {"total": int(total), "live": int(total) - int(deleted),
                       "deleted": int(deleted)},
        "revisions": {"total": sum(by_kind.values()), "by_kind": by_kind},
        "last_change": last[0] if last else None,
        "rejected_files": int(rejected),
        "deliveries": deliveries,
        "waiting_by_channel": waiting,
        "watcher": {"running": bool(running),
                    "watching": any(i["watching"] for i in running),
                    "instances": instances},
    }

"""The SPEC §7 event body, built from the database: the one thing every channel sends.

`build_body` is pure (rows in, a JSON-ready dict out); `event_bodies` reads the rows of
several events at once. Diffs longer than `DIFF_LIMIT_CHARS` are cut, and the body then
says so (`diff.truncated`, `diff.note`): a cut is never silent.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from daemon.diffs import WordOp, unified_diff, word_diff
from daemon.query import iso  # one form for every outward time: whole seconds, Z
from daemon.store.schema import events, revisions
from daemon.text import paragraphs, title_text

# Each part of a diff (the unified text; the text of the word operations) is cut here.
DIFF_LIMIT_CHARS = 100_000
# Fields of a revision that a notification shows as the statement.
_STATEMENT_FIELDS = ("source_url", "title", "date", "published_time", "modified_time", "tags")


def event_bodies(conn: Connection, event_ids: Iterable[int],
                 limit: int = DIFF_LIMIT_CHARS) -> dict[int, dict[str, Any]]:
    """The SPEC §7 bodies of these events by event id, in id order (unknown ids left out)."""
    ids = sorted(set(event_ids))
    if not ids:
        return {}
    cur = revisions.alias("cur")
    prev = revisions.alias("prev")
    query = (
        sa.select(events, *[c.label(f"cur_{c.name}") for c in cur.c],
                  *[c.label(f"prev_{c.name}") for c in prev.c])
        .select_from(events.join(cur, cur.c.id == events.c.revision_id).outerjoin(
            prev, sa.and_(prev.c.statement_id == events.c.statement_id,
                          prev.c.number == events.c.from_revision)))
        .where(events.c.id.in_(ids))
    )
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(query).mappings():
        current = {k[4:]: v for k, v in row.items() if k.startswith("cur_")}
        previous = ({k[5:]: v for k, v in row.items() if k.startswith("prev_")}
                    if row["prev_id"] is not None else None)
        event = {k: v for k, v in row.items() if not k.startswith(("cur_", "prev_"))}
        out[row["id"]] = build_body(event, current, previous, limit)
    return {i: out[i] for i in ids if i in out}


def build_body(event: Mapping[str, Any], current: Mapping[str, Any],
               previous: Mapping[str, Any] | None, limit: int = DIFF_LIMIT_CHARS
               ) -> dict[str, Any]:
    """One event body from its event row and the rows of its revision and the one before."""
    statement: dict[str, Any] = {"statement_id": event["statement_id"]}
    for name in _STATEMENT_FIELDS:
        value = current[name]
        statement[name] = list(value) if name == "tags" else (
            iso(value) if isinstance(value, dt.date) else value)
    return {
        "event_id": event["id"],
        "kind": event["kind"],
        "occurred_at": iso(event["occurred_at"]),
        "statement": statement,
        "revision": event["to_revision"],
        "previous_revision": event["from_revision"],
        "changed_fields": list(event["changed_fields"]),
        "summary": event["summary"],
        "words_added": event["words_added"],
        "words_removed": event["words_removed"],
        "diff": event_diff(event["kind"], current, previous, limit),
    }


def event_diff(kind: str, current: Mapping[str, Any], previous: Mapping[str, Any] | None,
               limit: int = DIFF_LIMIT_CHARS) -> dict[str, Any]:
    """The unified and word diffs of an event; empty when no words changed (metadata,
    formatting, deleted), the whole text as inserted for an added statement."""
    new_label = f"r{current['number']}"
    if kind in ("deleted", "metadata", "formatting"):  # no word changed: nothing to compare
        return _cut("", [], limit)
    if previous is None:
        lines = [f"# {title_text(current['title'])}", *paragraphs(current["body_text"])]
        unified = "\n".join(difflib.unified_diff([], lines, "/dev/null", new_label,
                                                 lineterm="")) + "\n"
        text = "\n\n".join([title_text(current["title"]), *paragraphs(current["body_text"])])
        return _cut(unified, [WordOp("insert", text)], limit,
                    f"`redline diff {current['source_url']} --to {current['number']}`")
    ops, stats = word_diff(previous["title"], previous["body_text"], current["title"],
                           current["body_text"])
    if not (stats.words_added or stats.words_removed):
        return _cut("", [], limit)
    unified = unified_diff(previous["title"], previous["body_text"], current["title"],
                           current["body_text"], f"r{previous['number']}", new_label)
    return _cut(unified, [op for op in ops if op.text], limit,
                f"`redline diff {current['source_url']} --from {previous['number']} "
                f"--to {current['number']}`")


def _cut(unified: str, ops: Sequence[WordOp], limit: int, hint: str = "") -> dict[str, Any]:
    """Cut each part at `limit` characters and say so in the body."""
    unified_total = len(unified)
    words_total = sum(len(op.text) for op in ops)
    if unified_total > limit:
        unified = unified[:unified.rfind("\n", 0, limit) + 1 or limit]
    words: list[dict[str, str]] = []
    budget = limit
    for op in ops:
        if budget <= 0:
            break
        words.append({"op": op.op, "text": op.text[:budget]})
        budget -= len(op.text)
    truncated = unified_total > limit or words_total > limit
    diff: dict[str, Any] = {"unified": unified, "words": words, "truncated": truncated}
    if truncated:
        diff["note"] = (f"diff cut at {limit:,} characters (unified diff "
                        f"{unified_total:,}, word diff {words_total:,} characters); "
                        f"{hint or '`redline diff URL`'} shows all of it")
    return diff

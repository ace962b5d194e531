"""Human-readable renderings of a message (subject, plain text, HTML) for email and Apprise.

Pure. Everything from a statement is HTML-escaped; the word diff shows deletions in <del>
and insertions in <ins>, and long unchanged stretches are shortened to their context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from daemon.notify.channels import Message
from daemon.render import marked_runs

# Unchanged text kept on each side of a change in the HTML word diff.
CONTEXT_CHARS = 240
SUBJECT_TITLE_CHARS = 120

_STYLE_DEL = "background:#ffebe9;color:#82071e;text-decoration:line-through"
_STYLE_INS = "background:#dafbe1;color:#116329;text-decoration:none"


def subject(message: Message) -> str:
    """One line: what happened, to which statement."""
    body = message.body
    if message.kind == "test":
        return f"[redline] TEST notification for channel {body.get('channel', '')}".rstrip()
    if message.kind == "digest":
        total = body["counts"].get("total", len(body["events"]))
        return f"[redline] digest: {_plural(total, 'change')} until {body['until']}"
    title = " ".join(str(body["statement"]["title"]).split())
    if len(title) > SUBJECT_TITLE_CHARS:
        title = title[:SUBJECT_TITLE_CHARS - 1] + "…"
    return f"[redline] {body['kind']}: {title}"


def text(message: Message) -> str:
    """The plain-text rendering (the unified diff for events)."""
    if message.kind == "test":
        return str(message.body["message"]) + "\n"
    if message.kind == "digest":
        body = message.body
        lines = [f"{_plural(len(body['events']), 'change')} from {body['since']} "
                 f"until {body['until']} ({_counts(body['counts'])})", ""]
        for ev in body["events"]:
            lines += [_event_headline(ev), f"  {ev['statement']['source_url']}",
                      f"  {ev['summary']}", ""]
        if body.get("note"):
            lines.append(str(body["note"]))
        return "\n".join(lines).rstrip() + "\n"
    return _event_text(message.body)


def html(message: Message) -> str:
    """The HTML rendering: escaped text, the word diff with <ins> and <del>."""
    if message.kind == "test":
        inner = f"<p><strong>TEST</strong> {escape(str(message.body['message']))}</p>"
    elif message.kind == "digest":
        body = message.body
        parts = [f"<h2>{escape(_plural(len(body['events']), 'change'))}</h2>",
                 f"<p>from {escape(str(body['since']))} until {escape(str(body['until']))}"
                 f" ({escape(_counts(body['counts']))})</p>"]
        parts += [f"<hr>{_event_html(ev, level=3)}" for ev in body["events"]]
        if body.get("note"):
            parts.append(f"<p><em>{escape(str(body['note']))}</em></p>")
        inner = "\n".join(parts)
    else:
        inner = _event_html(message.body, level=2)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>"
            "<body style=\"font-family:sans-serif;max-width:50em\">\n"
            f"{inner}\n</body></html>\n")


def _event_headline(ev: Mapping[str, Any]) -> str:
    rev = f"revision {ev['revision']}"
    if ev.get("previous_revision"):
        rev += f" (was {ev['previous_revision']})"
    return f"{ev['kind']}: {ev['statement']['title']} [{rev}]"


def _event_text(ev: Mapping[str, Any]) -> str:
    lines = [_event_headline(ev), ev["statement"]["source_url"], ev["summary"]]
    if ev["changed_fields"]:
        lines.append("changed: " + ", ".join(ev["changed_fields"]))
    lines.append(f"at {ev['occurred_at']}")
    diff = ev.get("diff") or {}
    if diff.get("unified"):
        lines += ["", diff["unified"].rstrip("\n")]
    if diff.get("note"):
        lines += ["", f"[{diff['note']}]"]
    return "\n".join(lines) + "\n"


def _event_html(ev: Mapping[str, Any], level: int) -> str:
    st = ev["statement"]
    title = escape(str(st["title"]))
    url = str(st["source_url"])
    link = (f"<a href=\"{escape(url)}\">{title}</a>"
            if url.startswith(("https://", "http://")) else title)
    meta = f"revision {ev['revision']}"
    if ev.get("previous_revision"):
        meta += f" (was {ev['previous_revision']})"
    if ev["changed_fields"]:
        meta += " · changed: " + ", ".join(ev["changed_fields"])
    meta += f" · {ev['occurred_at']}"
    parts = [f"<h{level}>{escape(ev['kind'])}: {link}</h{level}>",
             f"<p>{escape(str(ev['summary']))}<br><small>{escape(meta)}</small></p>"]
    diff = ev.get("diff") or {}
    if diff.get("words"):
        parts.append("<div style=\"white-space:pre-wrap;border-left:3px solid #ccc;"
                     f"padding-left:1em\">{word_diff_html(diff['words'])}</div>")
    if diff.get("note"):
        parts.append(f"<p><em>{escape(str(diff['note']))}</em></p>")
    return "\n".join(parts)


def word_diff_html(words: Sequence[Mapping[str, str]], context: int = CONTEXT_CHARS) -> str:
    """Word operations as HTML: <del> and <ins> marked, long equal runs shortened."""
    # the marks go around words only: the white space an edit begins or ends with is shown
    # as unchanged text, and a break the old text had where words now go on is left out
    # ("Two {+again+}", not "Two", a blank line, " again")
    runs: list[tuple[str, str]] = []
    for op, t in marked_runs(words):
        if op == "equal" and runs and runs[-1][0] == "equal":
            runs[-1] = ("equal", runs[-1][1] + t)
        else:
            runs.append((op, t))
    out: list[str] = []
    last = len(runs) - 1
    for i, (op, t) in enumerate(runs):
        if op == "delete":
            out.append(f"<del style=\"{_STYLE_DEL}\">{escape(t)}</del>")
        elif op == "insert":
            out.append(f"<ins style=\"{_STYLE_INS}\">{escape(t)}</ins>")
        else:
            out.append(_shorten(t, context, keep_head=i > 0, keep_tail=i < last))
    return "".join(out)


def _shorten(t: str, context: int, keep_head: bool, keep_tail: bool) -> str:
    if not (keep_head or keep_tail):
        return escape(t)
    head = t[:context] if keep_head else ""
    tail = t[-context:] if keep_tail else ""
    if len(head) + len(tail) + 3 >= len(t):
        return escape(t)
    gap = "<span style=\"color:#888\"> … </span>"
    return escape(head) + gap + escape(tail)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items() if k != "total") or "none"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

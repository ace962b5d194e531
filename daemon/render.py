"""Diffs for people: the changed fields first, then the text, as plain text, coloured text for
a terminal, or a standalone HTML page.

Pure functions over the dict `daemon.query.diff` returns. Plain word diffs mark edits inline
as `[-old-]{+new+}` (the `git diff --word-diff=plain` convention); HTML escapes every piece of
statement text and marks edits with <del> and <ins>.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text

from daemon.errors import escape_controls

# rich styles, shared by the CLI (the web view has its own CSS)
DELETE_STYLE = "bold red strike"
INSERT_STYLE = "bold green underline"
MARK_STYLE = "bold yellow"

_EDGE_WS = re.compile(r"^(\s*)(.*?)(\s*)$", re.S)

def shown(value: Any) -> Any:
    """`value` (text, or the lists and mappings of a result) with every control character
    but its white space written as `\\xNN`: a statement's words are printed, never obeyed
    by the terminal."""
    if isinstance(value, str):
        return escape_controls(value, keep_breaks=True)
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shown(v) for v in value)
    return value


# fields of a revision shown side by side, in this order (not the file path: a page may be
# published, and where the file sat on this machine is nobody's business)
REVISION_FIELDS = ("kind", "observed_at", "title", "source_url", "date", "published_time",
                   "modified_time", "tags", "changed_fields")


def show_value(value: Any) -> str:
    """A field value as one line of text: lists comma-separated, nothing as `(none)`."""
    if value is None or value == []:
        return "(none)"
    if isinstance(value, dict) or (isinstance(value, list | tuple)
                                   and not all(isinstance(v, str) for v in value)):
        # an extra key's mapping or nested list, as JSON: Python wrote {'k': ['1', '2']}
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _rev_label(rev: Mapping[str, Any] | None) -> str:
    if rev is None:
        return "(nothing)"
    return f"r{rev['revision_number']} {rev['kind']} {rev['observed_at']}"


def header_lines(d: Mapping[str, Any]) -> list[str]:
    """What a diff compares and every changed field with its old and new value."""
    s = d["statement"]
    stats = d["stats"]
    lines = [f"statement {s['statement_id']}: {s['source_url']}",
             f"title: {s['title']}",
             f"from: {_rev_label(d['from'])}",
             f"to:   {_rev_label(d['to'])}",
             "changed: " + (", ".join(d["changed_fields"])
                            or ("(nothing)" if d["from"] else "(new statement)"))]
    for m in d["metadata_changes"]:
        lines.append(f"  {m['field']}: {show_value(m['old'])} -> {show_value(m['new'])}")
    lines.append(f"words: +{stats['words_added']} -{stats['words_removed']} in "
                 f"{_plural(stats['paragraphs_changed'], 'paragraph')}")
    return lines


def _split_edges(text: str) -> tuple[str, str, str]:
    m = _EDGE_WS.match(text)
    assert m is not None
    return m.group(1), m.group(2), m.group(3)


def marked_runs(ops: Iterable[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(op, text) runs where edits carry no leading or trailing white space (it is moved
    outside the marks); the white space after a deletion followed by an insertion is
    dropped, as the insertion brings its own."""
    ops = list(ops)
    runs: list[tuple[str, str]] = []
    for i, op in enumerate(ops):
        if op["op"] == "equal":
            runs.append(("equal", op["text"]))
            continue
        lead, core, trail = _split_edges(op["text"])
        if op["op"] == "delete" and i + 1 < len(ops) and ops[i + 1]["op"] == "insert":
            trail = ""
            if not core:  # only the old text's white space (a break where words now go
                lead = ""  # on): the insertion shows the new text's, "Two {+again+}"
        if lead:
            runs.append(("equal", lead))
        if core:
            runs.append((op["op"], core))
        if trail:
            runs.append(("equal", trail))
    return runs


def _paragraphs(runs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The runs cut at the blank lines of unchanged text; an edit spanning paragraphs stays
    in one."""
    paras: list[list[tuple[str, str]]] = [[]]
    for op, text in runs:
        if op != "equal":
            paras[-1].append((op, text))
            continue
        pieces = text.split("\n\n")
        for i, piece in enumerate(pieces):
            if i:
                paras.append([])
            if piece:
                paras[-1].append((op, piece))
    return [p for p in paras if p]


def changed_paragraphs(ops: Iterable[Mapping[str, str]], whole: bool = False
                       ) -> list[list[tuple[str, str]] | None]:
    """The paragraphs holding an edit (all of them when `whole`); None where unchanged
    paragraphs were left out."""
    out: list[list[tuple[str, str]] | None] = []
    for para in _paragraphs(marked_runs(ops)):
        if whole or any(op != "equal" for op, _ in para):
            out.append(para)
        elif not out or out[-1] is not None:
            out.append(None)
    return out if any(p is not None for p in out) else []


GAP = "…"  # stands for unchanged paragraphs left out


def words_plain(ops: Iterable[Mapping[str, str]], whole: bool = False) -> str:
    """The word diff with edits marked `[-deleted-]{+inserted+}`: the changed paragraphs,
    or the whole text when `whole`."""
    marks = {"delete": ("[-", "-]"), "insert": ("{+", "+}"), "equal": ("", "")}
    return "\n\n".join(
        GAP if para is None else
        "".join(marks[op][0] + text + marks[op][1] for op, text in para)
        for para in changed_paragraphs(ops, whole))


def words_rich(ops: Iterable[Mapping[str, str]], whole: bool = False) -> Text:
    """`words_plain` coloured for a terminal: deletions red and struck, insertions green."""
    out = Text()
    styles = {"delete": DELETE_STYLE, "insert": INSERT_STYLE, "equal": ""}
    for i, para in enumerate(changed_paragraphs(ops, whole)):
        if i:
            out.append("\n\n")
        if para is None:
            out.append(GAP, style="dim")
            continue
        for op, text in para:
            out.append(text, style=styles[op])
    return out


def unified_rich(unified: str) -> Text:
    """A unified diff coloured for a terminal."""
    out = Text()
    for line in unified.splitlines(keepends=True):
        if line.startswith(("+++", "---")):
            out.append(line, style="bold")
        elif line.startswith("@@"):
            out.append(line, style="cyan")
        elif line.startswith("+"):
            out.append(line, style="green")
        elif line.startswith("-"):
            out.append(line, style="red")
        else:
            out.append(line)
    return out


def _no_words(d: Mapping[str, Any]) -> str:
    """What the word view says when no word changed: a text whose paragraph breaks moved
    (a paragraph split in six, say) changed in paragraphs, not in words; saying "no text
    change" under "in 6 paragraphs" read as a contradiction."""
    if d["stats"]["paragraphs_changed"]:
        return "(no word changed: only paragraph breaks moved; --format unified shows where)"
    return "(no text change)"


def diff_plain(d: Mapping[str, Any], fmt: str) -> str:
    """The header and then the unified (`unified`) or inline word (`words`) diff."""
    head = "\n".join(header_lines(d)) + "\n\n"
    if fmt == "words":
        return head + (words_plain(d["words"]) or _no_words(d)) + "\n"
    return head + (d["unified"] or "(no text change)\n")


def diff_rich(d: Mapping[str, Any], fmt: str) -> Text:
    """`diff_plain`, coloured for a terminal."""
    out = Text()
    for line in header_lines(d):
        key, sep, rest = line.partition(":")
        out.append(key + sep, style="bold")
        out.append(rest + "\n")
    out.append("\n")
    if fmt == "words":
        out.append_text(words_rich(d["words"]) or Text(_no_words(d)))
        out.append("\n")
    else:
        out.append_text(unified_rich(d["unified"] or "(no text change)\n"))
    return out


def search_snippet_rich(snippet: str, start: str, end: str) -> Text:
    """A search snippet with the words between the `start` and `end` marks highlighted."""
    out = Text()
    for i, part in enumerate(re.split(f"{re.escape(start)}|{re.escape(end)}", snippet)):
        out.append(part, style=MARK_STYLE if i % 2 else "")
    return out


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; vertical-align: top; padding: .25rem .5rem;
         border-bottom: 1px solid #ddd; overflow-wrap: anywhere; }
del { background: #ffd7d5; color: #82071e; }
ins { background: #d1f5d3; color: #055d20; text-decoration: none; }
.text { white-space: pre-wrap; border: 1px solid #ddd; padding: 1rem; }
.stats, .url { color: #555; }
"""


def _e(value: Any) -> str:
    return html.escape(show_value(value), quote=True)


def _link(url: str) -> str:
    if url.startswith(("http://", "https://")):
        return f'<a href="{html.escape(url, quote=True)}">{html.escape(url)}</a>'
    return html.escape(url)


def words_html(ops: Iterable[Mapping[str, str]]) -> str:
    """The word diff as HTML: every piece escaped, edits in <del> and <ins>."""
    parts = []
    for op, text in marked_runs(ops):
        t = html.escape(text, quote=False)
        parts.append(f"<del>{t}</del>" if op == "delete" else
                     f"<ins>{t}</ins>" if op == "insert" else t)
    return "".join(parts)


def diff_html_fragment(d: Mapping[str, Any]) -> str:
    """The body of a diff page: both revisions' metadata, the changed fields and the text
    with <del>/<ins> marks. No scripts, no inline event handlers, all text escaped."""
    s, a, b, stats = d["statement"], d["from"], d["to"], d["stats"]
    rows = []
    for field in REVISION_FIELDS:
        old = _e(a.get(field)) if a else ""
        new = _e(b.get(field))
        if field == "source_url":
            old = _link(a[field]) if a else ""
            new = _link(b[field])
        rows.append(f"<tr><th>{field}</th><td>{old}</td><td>{new}</td></tr>")
    from_head = f"r{a['revision_number']}" if a else "(nothing)"
    changed = "".join(
        f"<li><b>{_e(m['field'])}</b>: <del>{_e(m['old'])}</del> &rarr; "
        f"<ins>{_e(m['new'])}</ins></li>" for m in d["metadata_changes"])
    fields = ", ".join(html.escape(f) for f in d["changed_fields"]) or "(nothing)"
    return "\n".join([
        f"<h1>{_e(s['title'])}</h1>",
        f"<p class=\"url\">statement {s['statement_id']}: {_link(s['source_url'])}</p>",
        f"<h2>Changed fields</h2>\n<p>{fields}</p>",
        f"<ul>{changed}</ul>" if changed else "",
        "<h2>Revisions</h2>",
        f"<table><tr><th></th><th>{from_head}</th><th>r{b['revision_number']}</th></tr>",
        *rows, "</table>",
        "<h2>Text</h2>",
        f"<p class=\"stats\">+{_plural(stats['words_added'], 'word')}, "
        f"-{_plural(stats['words_removed'], 'word')} in "
        f"{_plural(stats['paragraphs_changed'], 'paragraph')}</p>",
        f"<div class=\"text\">{words_html(d['words'])}</div>",
    ])


def diff_html_page(d: Mapping[str, Any]) -> str:
    """A standalone HTML page of a diff, fit to attach to an email or publish."""
    s, a, b = d["statement"], d["from"], d["to"]
    span = (f"r{a['revision_number']} to " if a else "") + f"r{b['revision_number']}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(s['title'])} ({span})</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{diff_html_fragment(d)}\n"
        "<p class=\"stats\">Generated by redline.</p>\n</body>\n</html>\n"
    )

"""Markdown -> the words a reader sees; the folding rules of SPEC §3.

Pure functions. `markdown_to_text` renders with pyromark (pulldown-cmark, CommonMark) and
keeps the text of raw HTML while dropping its tags; `word_key` folds what SPEC §3 says is
not a change of words (white space, NBSP, zero-width characters, quote and dash styles).
"""

from __future__ import annotations

import html
import re

import pyromark

# Paragraph-level blocks: their end separates paragraphs in body_text.
_BLOCKS = {"Paragraph", "Heading", "Item", "BlockQuote", "CodeBlock", "TableRow",
           "TableHead", "FootnoteDefinition", "DefinitionListTitle",
           "DefinitionListDefinition", "MetadataBlock", "HtmlBlock"}

# Raw HTML tags that start a new line of text when rendered; other tags are inline.
_BLOCK_TAGS = ("address|article|aside|blockquote|br|caption|dd|div|dl|dt|figcaption|figure|"
               "footer|h[1-6]|header|hr|li|main|nav|ol|p|pre|section|table|tbody|td|tfoot|th|"
               "thead|tr|ul")
_COMMENT_RE = re.compile(r"<!--.*?(-->|$)", re.S)
_BLOCK_TAG_RE = re.compile(rf"</?(?:{_BLOCK_TAGS})\b[^>]*>", re.I)
_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>|<![^>]*>|<\?[^>]*>", re.S)

# Invisible characters that a reader never sees: removed before any comparison.
_INVISIBLE_RE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069"
                           "\ufeff\ufffc]")
# Every kind of space, NBSP included, is a plain space.
_SPACE_RE = re.compile(r"[^\S\n]+")
_PARA_SPLIT_RE = re.compile(r"\n\s*\n")

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "`": "'", "\u02bc": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\ufe58": "-", "\ufe63": "-", "\uff0d": "-",
})
# A dash style includes its spacing: "a—b", "a — b" and "a -- b" read the same.
_DASH_RE = re.compile(r"\s*-+\s*")
_WS_RE = re.compile(r"\s+")


def _html_text(fragment: str) -> str:
    fragment = _COMMENT_RE.sub(" ", fragment)
    fragment = _BLOCK_TAG_RE.sub("\n\n", fragment)
    fragment = _TAG_RE.sub("", fragment)
    return html.unescape(fragment)


def markdown_to_text(markdown: str) -> str:
    """Render Markdown to plain text: paragraphs separated by a blank line, spaces folded."""
    out: list[str] = []
    pending_html: list[str] = []
    for event in pyromark.events(markdown):
        if isinstance(event, dict):
            if "Text" in event:
                if pending_html:
                    out.append(_html_text("".join(pending_html)))
                    pending_html.clear()
                out.append(event["Text"])
                continue
            if "Html" in event or "InlineHtml" in event:
                pending_html.append(event.get("Html") or event.get("InlineHtml") or "")
                continue
            if pending_html:
                out.append(_html_text("".join(pending_html)))
                pending_html.clear()
            if "Code" in event:
                out.append(event["Code"])
            elif "End" in event:
                end = event["End"]
                name = end if isinstance(end, str) else next(iter(end))
                if name in _BLOCKS:
                    out.append("\n\n")
                elif name == "TableCell":
                    out.append(" ")
            elif "InlineMath" in event or "DisplayMath" in event:
                out.append(next(iter(event.values())))
            elif "FootnoteReference" in event:
                out.append(f"[{event['FootnoteReference']}]")
        else:  # unit events: "SoftBreak", "HardBreak", "Rule", ...
            if pending_html:
                out.append(_html_text("".join(pending_html)))
                pending_html.clear()
            if event in ("SoftBreak", "HardBreak"):
                out.append(" " if event == "SoftBreak" else "\n")
            elif event == "Rule":
                out.append("\n\n")
    if pending_html:
        out.append(_html_text("".join(pending_html)))
    return normalize_text("".join(out))


def normalize_text(text: str) -> str:
    """Fold spaces inside paragraphs and drop invisible characters; keep quotes and dashes."""
    text = _INVISIBLE_RE.sub("", text)
    paragraphs = []
    for para in _PARA_SPLIT_RE.split(text):
        lines = [_SPACE_RE.sub(" ", line).strip() for line in para.split("\n")]
        joined = " ".join(line for line in lines if line)
        if joined:
            paragraphs.append(joined)
    return "\n\n".join(paragraphs)


def fold_words(text: str) -> str:
    """Fold quote and dash styles (with the spacing around dashes) for word comparison."""
    text = _INVISIBLE_RE.sub("", text).translate(_QUOTES)
    text = _DASH_RE.sub("-", text)
    return text


def word_key(text: str) -> str:
    """The comparison key of a text: folded words separated by single spaces."""
    return _WS_RE.sub(" ", fold_words(text)).strip()


def title_text(title: str) -> str:
    """A title as a reader sees it: spaces folded, invisible characters dropped."""
    return _SPACE_RE.sub(" ", _INVISIBLE_RE.sub("", title).replace("\n", " ")).strip()


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a body_text."""
    return [p for p in text.split("\n\n") if p]

"""Markdown -> the words a reader sees; the folding rules of SPEC §3.

Pure functions. `markdown_to_text` renders with pyromark (pulldown-cmark, CommonMark) and
keeps the text of raw HTML while dropping its tags; `word_key` folds what SPEC §3 says is
not a change of words (white space, NBSP, zero-width characters, quote and dash styles).
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

import pyromark

# Paragraph-level blocks: their end separates paragraphs in body_text.
_BLOCKS = {"Paragraph", "Heading", "Item", "BlockQuote", "CodeBlock", "TableRow",
           "TableHead", "FootnoteDefinition", "DefinitionListTitle",
           "DefinitionListDefinition", "MetadataBlock", "HtmlBlock"}
# What the end of a tag writes; other tags write nothing.
_END_TEXT = dict.fromkeys(_BLOCKS, "\n\n") | {"TableCell": " "}
# Blocks whose start separates them from text before it. A tight list item's text is no
# Paragraph (no Start/End of its own), so a block nested in it (a list, a code block, a
# quote, a heading, raw HTML) follows that text with nothing between them: "- one\n    -
# two" would read "onetwo". Paragraph and Item are left out: a Paragraph starts only after
# a block's Start or End, an Item after its List's Start or the previous Item's End, so
# they never follow text (and they are the commonest starts: the hot loop stays lean).
_START_BLOCKS = frozenset({"List", "Heading", "BlockQuote", "CodeBlock", "HtmlBlock", "Table",
                           "FootnoteDefinition", "DefinitionList", "MetadataBlock"})

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
_SPACE_RE = re.compile(r"\s+")
_PARA_SPLIT_RE = re.compile(r"\n\s*\n")
_SPACES_RE = re.compile("  +")

# pandoc reads a no-break space as a letter, CommonMark as white space, next to which an
# emphasis delimiter may not close or open: `**IBM\xa0**announced` (pandoc's Markdown for
# <strong>IBM&nbsp;</strong>announced) is bold "IBM" on the site and to pandoc, but reads
# "**IBM **announced" to CommonMark, and writing the space as `&nbsp;` or moving it out of
# the bold "changed" those words. A no-break space (or its entity) touching a run of `*` is
# parsed as a stand-in and written back as a space: a letter-like one (a noncharacter) where
# a letter or a space is on the run's other side, a punctuation one where punctuation is
# (`**(TSMC)**\xa0announced`, `a\xa0**(b)**`, `**IBM\xa0**[announced](…)`), either way what
# lets the run open or close as pandoc reads it. Nothing but emphasis sees the difference.
_NBSP_LETTER = "\ufdd0"
_NBSP_PUNCT = "\u2e3f"  # CAPITULUM


def _nbsp_standins(markdown: str) -> str:
    """`markdown` with each no-break space that touches a run of `*` made a stand-in: one for
    the run before it and one for the run after it, where it sits between two
    (`***a,*\xa0**b`: `*` after punctuation, `**` before a letter, each needs its own)."""
    spaces = set()
    for pair, offset in (("*\xa0", 1), ("\xa0*", 0)):
        i = markdown.find(pair)
        while i != -1:
            spaces.add(i + offset)
            i = markdown.find(pair, i + 2)
    out = []
    last = 0
    end = len(markdown)
    for i in sorted(spaces):
        standins = ""
        if i and markdown[i - 1] == "*":  # "**\xa0": the run's other side is before it
            k = i - 1
            while k and markdown[k - 1] == "*":
                k -= 1
            other = markdown[k - 1] if k else " "
            if other != "\\":  # an escaped "\*" first: no delimiter run of its own
                standins = _standin(other)
        if i + 1 < end and markdown[i + 1] == "*":  # "\xa0**": after it
            k = i + 1
            while k < end and markdown[k] == "*":
                k += 1
            standins += _standin(markdown[k] if k < end else " ")
        if standins:
            out.append(markdown[last:i])
            out.append(standins)
            last = i + 1
    out.append(markdown[last:])
    return "".join(out)


def _standin(other: str) -> str:
    """The stand-in for a no-break space at one side of a run whose other side is `other`."""
    return _NBSP_PUNCT if unicodedata.category(other)[0] in "PS" else _NBSP_LETTER


_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "`": "'", "\u02bc": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\ufe58": "-", "\ufe63": "-", "\uff0d": "-",
})
_QUOTE_CHARS_RE = re.compile("[" + "".join(map(chr, _QUOTES)) + "]")
# A dash style includes its spacing: "a—b", "a — b" and "a -- b" read the same.
_DASHES_RE = re.compile("-+")


def _fold_quote(match: re.Match[str]) -> str:
    return match.group().translate(_QUOTES)


def _html_text(fragment: str) -> str:
    fragment = _COMMENT_RE.sub(" ", fragment)
    fragment = _BLOCK_TAG_RE.sub("\n\n", fragment)
    fragment = _TAG_RE.sub("", fragment)
    return html.unescape(fragment)


def markdown_to_text(markdown: str) -> str:
    """Render Markdown to plain text: paragraphs separated by a blank line, spaces folded."""
    # (one character is found far faster than two: most files hold no "*")
    if "*" in markdown and ("*\u00a0" in markdown or "\u00a0*" in markdown or (
            "&" in markdown and ("&nbsp;" in markdown or "&#160;" in markdown))) \
            and _NBSP_LETTER not in markdown and _NBSP_PUNCT not in markdown:
        if "&" in markdown:  # "**IBM&nbsp;**announced" too
            for entity in ("&nbsp;", "&#160;"):
                markdown = markdown.replace(entity + "*", "\xa0*").replace("*" + entity, "*\xa0")
        text = _render(_nbsp_standins(markdown))
        if _NBSP_LETTER in text or _NBSP_PUNCT in text:
            text = text.replace(_NBSP_LETTER, " ").replace(_NBSP_PUNCT, " ")
    else:
        text = _render(markdown)
    return normalize_text(text)


def _render(markdown: str) -> str:
    """The text of the events, not yet normalized."""
    out: list[str] = []
    append = out.append
    pending_html: list[str] = []
    end_text = _END_TEXT.get
    start_blocks = _START_BLOCKS
    event: Any  # a str or a one-key dict (pyromark.event.Event), dispatched by hand
    # The hot loop (about 40 events per statement paragraph): the commonest events (SoftBreak,
    # Text, Start, End) take the fewest tests. Every event but Html/InlineHtml ends a run
    # of raw HTML, which is rendered as one fragment.
    for event in pyromark.events(markdown):
        if type(event) is str:  # unit events: "SoftBreak", "HardBreak", "Rule"
            if pending_html:
                append(_html_text("".join(pending_html)))
                pending_html.clear()
            if event == "SoftBreak":
                append(" ")
            elif event == "HardBreak":
                append("\n")
            elif event == "Rule":
                append("\n\n")
            continue
        text = event.get("Text")
        if text is not None:
            if pending_html:
                append(_html_text("".join(pending_html)))
                pending_html.clear()
            append(text)
            continue
        if pending_html and "Html" not in event and "InlineHtml" not in event:
            append(_html_text("".join(pending_html)))
            pending_html.clear()
        start = event.get("Start")
        if start is not None:  # a block nested in a tight item: not run into its text
            if (start if type(start) is str else next(iter(start))) in start_blocks:
                append("\n\n")
            continue
        if "End" in event:
            end = event["End"]
            sep = end_text(end if type(end) is str else next(iter(end)))
            if sep is not None:
                append(sep)
            continue
        key = next(iter(event))
        if key == "Html" or key == "InlineHtml":
            pending_html.append(event[key])
        elif key == "Code" or key == "InlineMath" or key == "DisplayMath":
            append(event[key])
        elif key == "FootnoteReference":
            append(f"[{event[key]}]")
    if pending_html:
        append(_html_text("".join(pending_html)))
    return "".join(out)


def normalize_text(text: str) -> str:
    """Fold spaces inside paragraphs and drop invisible characters; keep quotes and dashes."""
    # U+FFFC is the one invisible character that str.isprintable() accepts.
    if "\ufffc" in text:
        return _normalize_text_slow(text)
    # NBSP is common; like any space but "\n" it can become " " without moving a break.
    folded = text.replace("\u00a0", " ")
    out: list[str] = []
    append = out.append
    for para in _PARA_SPLIT_RE.split(folded):
        if para.isprintable():  # no invisible character, and " " is its only space
            if "  " in para:
                para = _SPACES_RE.sub(" ", para)  # far faster than split/join on long text
            para = para.strip(" ")
        elif _INVISIBLE_RE.search(para):
            return _normalize_text_slow(text)  # dropping them can join two paragraphs
        else:
            para = " ".join(para.split())
        if para:
            append(para)
    return "\n\n".join(out)


def _normalize_text_slow(text: str) -> str:
    """normalize_text for any text: invisible characters dropped before paragraphs split."""
    if _INVISIBLE_RE.search(text):
        text = _INVISIBLE_RE.sub("", text)
    # str.split() splits on every Unicode space (NBSP included) and is far faster than a regex
    folded = (" ".join(para.split()) for para in _PARA_SPLIT_RE.split(text))
    return "\n\n".join(p for p in folded if p)


def fold_words(text: str) -> str:
    """Fold quote and dash styles (with the spacing around dashes) and Unicode's canonical
    equivalents (NFC) for word comparison."""
    if text.isascii():  # the commonest case, a plain word of a diff: nothing to fold
        if "`" in text:
            text = text.replace("`", "'")
    else:
        if _INVISIBLE_RE.search(text):
            text = _INVISIBLE_RE.sub("", text)
        # canonically equivalent text is the same text: "é" precomposed or as "e" and a
        # combining accent (NFD, as some converters and file systems write it) reads the same
        if not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        # a few curly quotes in a long text: replacing the matches is far faster than
        # str.translate, which looks up every character
        text = _QUOTE_CHARS_RE.sub(_fold_quote, text)
    if "-" not in text:
        return text
    # each run of dashes with the white space around it becomes one "-" (what a regex
    # \s*-+\s* does, without trying that pattern at every space of the text)
    parts = _DASHES_RE.split(text)
    inner = [p.strip() for p in parts[1:-1]]
    return "-".join([parts[0].rstrip(), *inner, parts[-1].lstrip()])


def word_key(text: str) -> str:
    """The comparison key of a text: folded words separated by single spaces."""
    return " ".join(fold_words(text).split())


def title_text(title: str) -> str:
    """A title as a reader sees it: spaces folded, invisible characters dropped."""
    return _SPACE_RE.sub(" ", _INVISIBLE_RE.sub("", title).replace("\n", " ")).strip()


def count_words(text: str) -> int:
    """The words of a normalized text (normalize_text's output, which body_text is): its
    words are separated by one space and its paragraphs by one blank line, so counting
    those is len(text.split()) without building millions of strings."""
    return text.count(" ") + text.count("\n\n") + 1 if text else 0


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a body_text."""
    return [p for p in text.split("\n\n") if p]

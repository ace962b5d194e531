"""The Atom feed of changes (RFC 4287), built from change-log entries. Pure: it takes plain
values and returns bytes; the route decides which events and which URLs."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

ATOM_NS = "http://www.w3.org/2005/Atom"

# XML 1.0 forbids most C0 controls even when escaped; a statement title could hold one.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class FeedEntry:
    """One change as an Atom entry: `link` is the diff page, `id` a permanent IRI."""

    id: str
    title: str
    link: str
    updated: dt.datetime
    summary: str
    categories: Sequence[str] = ()


@dataclass(frozen=True)
class Feed:
    """The feed itself: `self_link` is its own URL (with the filters), `link` the web page."""

    id: str
    title: str
    self_link: str
    link: str
    updated: dt.datetime
    subtitle: str = ""
    entries: Sequence[FeedEntry] = field(default_factory=tuple)


def atom_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, as Atom wants it."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(text: str) -> str:
    return _XML_ILLEGAL.sub("", text)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", {k: _clean(v) for k, v in attrs.items()})
    if text is not None:
        el.text = _clean(text)
    return el


def render_atom(feed: Feed) -> bytes:
    """The feed as an Atom 1.0 document (UTF-8, with an XML declaration)."""
    ET.register_namespace("", ATOM_NS)
    root = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(root, "id", feed.id)
    _sub(root, "title", feed.title)
    if feed.subtitle:
        _sub(root, "subtitle", feed.subtitle)
    _sub(root, "updated", atom_time(feed.updated))
    _sub(root, "link", rel="self", type="application/atom+xml", href=feed.self_link)
    _sub(root, "link", rel="alternate", type="text/html", href=feed.link)
    author = _sub(root, "author")
    _sub(author, "name", "redline")
    _sub(root, "generator", "redline")
    for entry in feed.entries:
        el = _sub(root, "entry")
        _sub(el, "id", entry.id)
        _sub(el, "title", entry.title)
        _sub(el, "updated", atom_time(entry.updated))
        _sub(el, "link", rel="alternate", type="text/html", href=entry.link)
        _sub(el, "summary", entry.summary)
        for term in entry.categories:
            _sub(el, "category", term=term)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"

"""classify_change(old, new) -> Change(kind, changed_fields): the one decision of SPEC §3.

Pure. The one-shot ingest, the live watcher and the reconcile scan all reach this function
through `daemon.ingest`; nothing else decides what changed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cached_property

from daemon.document import Document
from daemon.text import count_words, markdown_to_text, title_text, word_key

METADATA_FIELDS = ("date", "published_time", "modified_time", "tags", "source_url")


@dataclass(frozen=True)
class Version:
    """The parsed values of one revision of a statement, as compared by classify_change."""

    source_url: str
    title: str
    date: dt.date | None
    published_time: dt.datetime | None
    modified_time: dt.datetime | None
    tags: tuple[str, ...]
    extra: str
    body: str
    body_text: str

    @classmethod
    def from_document(cls, doc: Document) -> Version:
        return cls(doc.source_url, doc.title, doc.date, doc.published_time, doc.modified_time,
                   doc.tags, doc.extra, doc.body, markdown_to_text(doc.body))

    @cached_property
    def title_key(self) -> str:
        return word_key(title_text(self.title))

    @cached_property
    def body_key(self) -> str:
        return word_key(self.body_text)

    @cached_property
    def word_count(self) -> int:
        """Words in the title and the text (an added statement's `words_added`)."""
        return count_words(self.body_text) + len(self.title.split())

    def extra_fields(self) -> dict[str, object]:
        return json.loads(self.extra)


@dataclass(frozen=True)
class Change:
    """What changed between two versions: a SPEC §3 kind and the changed field names."""

    kind: str
    changed_fields: tuple[str, ...]


def metadata_changes(old: Version, new: Version) -> list[str]:
    """Names of the non-word fields whose values differ (extra keys by their own name)."""
    changed = [f for f in METADATA_FIELDS if getattr(old, f) != getattr(new, f)]
    if old.extra != new.extra:
        a, b = old.extra_fields(), new.extra_fields()
        changed += sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return changed


def classify_change(old: Version | None, new: Version) -> Change | None:
    """Decide what changed from `old` to `new`; None when every parsed value is identical."""
    if old is None:
        return Change("added", ())
    metadata = metadata_changes(old, new)
    words = []
    if old.title_key != new.title_key:
        words.append("title")
    if old.body_key != new.body_key:
        words.append("body")
    if words:
        return Change("revised", tuple(_ordered(words + metadata)))
    if metadata:
        return Change("metadata", tuple(_ordered(metadata)))
    formatting = [f for f in ("title", "body") if getattr(old, f) != getattr(new, f)]
    if formatting:
        return Change("formatting", tuple(formatting))
    return None


_ORDER = {name: i for i, name in enumerate(("title", "body") + METADATA_FIELDS)}


def _ordered(fields: list[str]) -> list[str]:
    return sorted(dict.fromkeys(fields), key=lambda f: (_ORDER.get(f, len(_ORDER)), f))

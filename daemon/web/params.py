"""Query-string parameters shared by the pages, the feed and the API: the change-log filters
and paging. A bad value raises UsageError (a 400), never a 500."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from daemon import query
from daemon.errors import UsageError

PAGE_SIZE = 50
MAX_PAGE = 10_000


@dataclass(frozen=True)
class EventFilter:
    """The filters of the change log: `since` as typed (kept for links) and parsed."""

    kind: str | None = None
    tag: str | None = None
    since: str | None = None
    since_time: dt.datetime | None = None

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in (("kind", self.kind), ("tag", self.tag),
                                  ("since", self.since)) if v}


def text_param(params: Mapping[str, str], name: str) -> str | None:
    """A parameter's value, stripped; empty means absent (an empty form field). One given
    more than once (`?kind=added&kind=revised`) is refused: each parameter takes one value,
    and keeping one of them silently would answer another question than the one asked.
    A NUL character (`%00`) is a bad value: no text holds one, and PostgreSQL refuses it
    in any bound parameter (a DataError, which was a 500 for `?q=`, `?tag=`, `?channel=`)."""
    getlist = getattr(params, "getlist", None)
    if getlist is not None and len(given := getlist(name)) > 1:
        raise UsageError(f"{name} was given {len(given)} times; it takes one value")
    value = params.get(name, "").strip()
    if "\x00" in value:
        raise UsageError(f"{name} must not contain a NUL character (%00)")
    return value or None


def event_filter(params: Mapping[str, str]) -> EventFilter:
    """kind, tag and since (a date, an ISO time or an age such as 7d) from a query string."""
    kind = text_param(params, "kind")
    if kind is not None and kind not in query.KINDS:
        raise UsageError(f"kind must be one of {', '.join(query.KINDS)}, not {kind!r}")
    since = text_param(params, "since")
    since_time = query.parse_since(since) if since else None
    return EventFilter(kind=kind, tag=text_param(params, "tag"), since=since,
                       since_time=since_time)


def relative_since(value: str | None) -> bool:
    """Whether a `since` value is an age (7d, 12h, 30m, 2w) rather than a point in time."""
    return value is not None and value.strip().lower().endswith(("m", "h", "d", "w"))


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """A whole number within [lo, hi]; the default when absent."""
    value = text_param(params, name)
    if value is None:
        return default
    number = query.whole_number(value)
    if number is None or not lo <= number <= hi:
        raise UsageError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")
    return number


def page_param(params: Mapping[str, str]) -> int:
    return int_param(params, "page", 1, 1, MAX_PAGE)


def href(path: str, params: Mapping[str, object] | None = None) -> str:
    """A site-relative link with a query string (None and empty values left out)."""
    kept = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path

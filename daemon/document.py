"""bytes -> Document (front matter + body) or Rejection(reason, message)  (SPEC §2).

Pure: no disk, no clock, no database. The front matter is split by hand and read with a
YAML loader that resolves nothing implicitly (every plain scalar stays a string, so `no`
stays "no" and times are parsed by us), after an event scan that rejects anchors,
aliases and explicit tags before anything is constructed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

try:  # the C loader is the fast path; the pure-Python one behaves the same
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - libyaml missing
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

MAX_FRONT_MATTER_BYTES = 64 * 1024
# Lists and mappings nested in one field: real front matter nests one or two; the JSON of
# the extra keys (and every reader of it) recurses once per level.
MAX_NESTING = 32
# A source_url is a key of unique indexes: PostgreSQL's btree refuses an entry over 2,704
# bytes (the whole batch failed there), and no real URL comes near this bound.
MAX_SOURCE_URL_BYTES = 2_000
REQUIRED_FIELDS = ("source_url", "title")
KNOWN_FIELDS = ("source_url", "title", "date", "published_time", "modified_time", "tags")


@dataclass(frozen=True)
class Document:
    """One parsed statement file: the fields of SPEC §2 and the Markdown body."""

    source_url: str
    title: str
    date: dt.date | None
    published_time: dt.datetime | None
    modified_time: dt.datetime | None
    tags: tuple[str, ...]
    extra: str  # unknown keys as canonical JSON text ("{}" when none)
    body: str

    def extra_dict(self) -> dict[str, Any]:
        return json.loads(self.extra)


@dataclass(frozen=True)
class Rejection:
    """Why a file cannot be ingested: a stable reason code and a sentence for a person."""

    reason: str
    message: str


class _FrontMatterLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader that keeps every plain scalar a string (only empty/~/null become None)
    and refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) != len(node.value):  # YAML: the keys of a mapping are unique;
            seen: set[Any] = set()           # PyYAML kept the last value without a word
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {_key_name(key)} is given twice (YAML keys "
                        "are unique: keep the one you mean)", key_node.start_mark)
                seen.add(key)
        return mapping


_FrontMatterLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:null"]
    for key, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACE_RE = re.compile(r"\s")
# Anchors need "&", aliases "*", tags "!": front matter with none of them needs no event scan.
_YAML_SPECIALS_RE = re.compile(r"[&*!]")


# What Windows editors write for "Unicode": a byte order mark, or a statement's first line
# `---` in two-byte units. Such a file holds NUL bytes, yet it is text, only not UTF-8.
_WIDE_STARTS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
                (b"-\x00-\x00-\x00", "UTF-16"), (b"\x00-\x00-\x00-", "UTF-16"))


def _wide_encoding(data: bytes) -> str | None:
    return next((name for start, name in _WIDE_STARTS if data.startswith(start)), None)


def parse_document(data: bytes, max_bytes: int = 5_000_000) -> Document | Rejection:
    """Parse one file's bytes; never raises for bad input."""
    if len(data) > max_bytes:
        return Rejection("too_large", f"file is {len(data):,} bytes, over the limit of "
                         f"{max_bytes:,} (watch.max_file_bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data:
        wide = _wide_encoding(data)
        if wide:
            return Rejection("not_utf8", f"the file is {wide} text, not UTF-8: save the file "
                             "as UTF-8")
        return Rejection("binary", "file contains NUL bytes: it is binary, not a text statement")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not valid UTF-8 at byte {exc.start}: save the file "
                         "as UTF-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    split = _split_front_matter(text)
    if isinstance(split, Rejection):
        return split
    front, body = split
    if len(front.encode("utf-8")) > MAX_FRONT_MATTER_BYTES:
        return Rejection("front_matter_too_large", "front matter is over "
                         f"{MAX_FRONT_MATTER_BYTES // 1024} KiB")
    meta = _load_yaml(front)
    if isinstance(meta, Rejection):
        return meta
    return _validate(meta, body)


def _split_front_matter(text: str) -> tuple[str, str] | Rejection:
    start = 4
    if not text.startswith("---\n"):  # "--- ": trailing white space, as a closing line may
        first_end = text.find("\n")
        first = text if first_end == -1 else text[:first_end]
        if first.rstrip(" \t") != "---":
            return Rejection("no_front_matter", "no front matter: the first line must be "
                             f"'---' (found {first[:40]!r})")
        start = len(text) if first_end == -1 else first_end + 1
    pos = start
    while True:
        end = text.find("\n", pos)
        line = text[pos:] if end == -1 else text[pos:end]
        if line.rstrip(" \t") in ("---", "..."):
            body = "" if end == -1 else text[end + 1:]
            return text[start:pos], body
        if end == -1:
            return Rejection("unclosed_front_matter", "front matter is never closed: add a "
                             "line '---' after the last field")
        pos = end + 1


def _load_yaml(front: str) -> dict[str, Any] | Rejection:
    try:
        for event in (yaml.parse(front, Loader=_BaseLoader) if _YAML_SPECIALS_RE.search(front)
                      else ()):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return Rejection("yaml_alias", "front matter uses YAML anchors or aliases "
                                 "(& or *), which are not allowed")
            tag = getattr(event, "tag", None)
            if tag is not None and not isinstance(event, yaml.DocumentStartEvent):
                return Rejection("yaml_tag", f"front matter uses the YAML tag {tag!r}; tags "
                                 "are not allowed")
        meta = yaml.load(front, Loader=_FrontMatterLoader)  # noqa: S506 - safe, no resolvers
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 2}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        return Rejection("invalid_yaml", f"front matter is not valid YAML{line}: {problem}")
    if not isinstance(meta, dict):
        return Rejection("front_matter_not_mapping", "front matter must be a mapping of "
                         f"'key: value' lines, not {_yaml_kind(meta)}")
    escapes = "\\" in front  # only an escape in a "quoted" scalar (\0, \x00, \u0000) makes NUL
    for key, value in meta.items():
        if not (escapes or isinstance(value, (list, dict))):
            continue
        depth, nul = _nesting(key, value)
        if nul:
            return Rejection("invalid_field", f"field {str(key)!r} holds a NUL character "
                             "(a \\0 escape): no text may hold one, and PostgreSQL "
                             "refuses it")
        if depth > MAX_NESTING:
            return Rejection("invalid_field", f"field {str(key)!r} nests lists or mappings "
                             f"{depth} levels deep; at most {MAX_NESTING} are kept")
    return meta


def _nesting(key: Any, value: Any) -> tuple[int, bool]:
    """How many lists and mappings nest in `value` (0 for a scalar), and whether any text in
    it or in `key` holds NUL. A loop, not a recursion: a few hundred levels of `[[[…` (well
    within libyaml's limit of 1,000) raised RecursionError and stopped the ingest."""
    deepest, nul = 0, isinstance(key, str) and "\x00" in key
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            nul = nul or "\x00" in item
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
    return deepest, nul


def _key_name(key: Any) -> str:
    """A front matter key as a person wrote it (not Python's None)."""
    return "~ (null, empty)" if key is None else repr(key)


def _yaml_kind(value: Any) -> str:
    """What a YAML value is, in a person's words (not Python's type names)."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (dt.date, dt.datetime)):
        return f"a date ({value})"
    if isinstance(value, str):
        return f"a single text ({value[:40]!r})"
    return type(value).__name__


def _validate(meta: dict[str, Any], body: str) -> Document | Rejection:
    for key in meta:
        if not isinstance(key, str):
            return Rejection("invalid_field", f"front matter key {_key_name(key)} is not a "
                             "name: write a name before the ':'")
    for name in REQUIRED_FIELDS:
        value = meta.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return Rejection("missing_field", f"required field {name!r} is missing or empty")
        if not isinstance(value, str):
            return Rejection("invalid_field", f"field {name!r} must be text, not "
                             f"{_yaml_kind(value)}")
    source_url = meta["source_url"].strip()
    if _SPACE_RE.search(source_url):
        return Rejection("invalid_field", f"source_url contains white space: {source_url!r}")
    if len(source_url.encode("utf-8")) > MAX_SOURCE_URL_BYTES:
        return Rejection("invalid_field", f"source_url is {len(source_url.encode('utf-8')):,} "
                         f"bytes long, over the limit of {MAX_SOURCE_URL_BYTES:,}: "
                         f"{source_url[:60]!r}…")
    try:
        date = _parse_date(meta.get("date"))
        published = _parse_time(meta.get("published_time"), "published_time")
        modified = _parse_time(meta.get("modified_time"), "modified_time")
    except ValueError as exc:
        return Rejection("invalid_time", str(exc))
    if date is None and published is None:
        return Rejection("missing_field", "neither 'published_time' nor 'date' is present: "
                         "one of them is required")
    tags = meta.get("tags")
    if tags is None:
        tag_tuple: tuple[str, ...] = ()
    elif isinstance(tags, str):
        tag_tuple = (tags.strip(),) if tags.strip() else ()
    elif isinstance(tags, list) and all(isinstance(t, str) for t in tags):
        tag_tuple = tuple(t.strip() for t in tags if t.strip())
    else:
        return Rejection("invalid_field", "field 'tags' must be a string or a list of strings")
    extra = {k: v for k, v in meta.items() if k not in KNOWN_FIELDS}
    return Document(
        source_url=source_url,
        title=meta["title"],
        date=date,
        published_time=published,
        modified_time=modified,
        tags=tag_tuple,
        extra=json.dumps(extra, sort_keys=True, ensure_ascii=False, default=str),
        body=body,
    )


def _parse_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _DATE_RE.match(value.strip()):
        raise ValueError(f"field 'date' must be YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"field 'date' is not a real date: {value!r}") from None


def parse_time(text: str) -> dt.datetime:
    """'YYYY-MM-DD HH:MM:SS±HH:MM' or ISO 8601 -> an aware UTC datetime (naive means UTC)."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _parse_time(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a time, got {value!r}")
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"field {name!r} is not a time (YYYY-MM-DD HH:MM:SS±HH:MM or "
                         f"ISO 8601): {value!r}") from None
    except OverflowError:  # 0001-01-01 00:00:00+14:00 is before the year 1 in UTC
        raise ValueError(f"field {name!r} is outside the years 1 to 9999 once in UTC: "
                         f"{value!r}") from None

"""Tests for daemon.document: the parser of SPEC §2, its rejections and its robustness."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.document import Document, Rejection, parse_document

GOOD = (
    "---\n"
    "date: '2025-03-19'\n"
    "modified_time: 2025-03-19 14:42:27-04:00\n"
    "published_time: 2025-03-19 14:42:26-04:00\n"
    "source_url: https://www.whitehouse.gov/x/\n"
    "tags: briefings-statements\n"
    'title: "Statement\\_from Secretary Rubio\\u2019s office"\n'
    "---\n \nHello, world.\n"
)


def parse(text: str | bytes) -> Document | Rejection:
    return parse_document(text.encode() if isinstance(text, str) else text)


def test_parses_fields_and_converts_times_to_utc() -> None:
    """A real-shaped file yields its fields, UTC times, YAML escapes decoded, body kept."""
    doc = parse(GOOD)
    assert isinstance(doc, Document)
    assert doc.source_url == "https://www.whitehouse.gov/x/"
    assert doc.title == "Statement\u00a0from Secretary Rubio\u2019s office"
    assert doc.date == dt.date(2025, 3, 19)
    assert doc.published_time == dt.datetime(2025, 3, 19, 18, 42, 26, tzinfo=dt.UTC)
    assert doc.modified_time == dt.datetime(2025, 3, 19, 18, 42, 27, tzinfo=dt.UTC)
    assert doc.tags == ("briefings-statements",)
    assert doc.body == " \nHello, world.\n"
    assert doc.extra == "{}"


def test_bom_crlf_and_cr_parse_to_the_same_document() -> None:
    """A UTF-8 BOM is ignored and CRLF/CR line ends equal LF."""
    base = parse(GOOD)
    assert parse(b"\xef\xbb\xbf" + GOOD.encode()) == base
    assert parse(GOOD.replace("\n", "\r\n")) == base
    assert parse(GOOD.replace("\n", "\r")) == base


def test_white_space_after_the_opening_dashes_is_allowed_as_after_the_closing_ones() -> None:
    """`--- ` (a space or tab left by an editor or an exporter) opens the front matter, as
    it closes it: the file was rejected as `no_front_matter` although its closing line
    with the same spaces was accepted. A file that never changes its words is the same
    document either way (no revision)."""
    base = parse(GOOD)
    assert isinstance(base, Document)
    for opening in ("--- ", "---\t", "---  \t"):
        assert parse(GOOD.replace("---\n", opening + "\n", 1)) == base
        assert parse(GOOD.replace("\n---\n", "\n" + opening + "\n", 1)) == base
    assert parse(GOOD.replace("---\n", "--- x\n", 1)) == Rejection(
        "no_front_matter", "no front matter: the first line must be '---' (found '--- x')")


def test_unknown_keys_are_kept_and_plain_scalars_stay_strings() -> None:
    """`no` stays "no", `012` stays "012": unknown keys are kept as written."""
    doc = parse(GOOD.replace("tags:", "flag: no\nnumber: 012\ntags:"))
    assert isinstance(doc, Document)
    assert doc.extra_dict() == {"flag": "no", "number": "012"}


def test_tags_list_and_iso_times() -> None:
    """Tags may be a list; ISO 8601 with Z parses; naive times are taken as UTC."""
    doc = parse(GOOD.replace("tags: briefings-statements", "tags: [a, b]")
                .replace("2025-03-19 14:42:26-04:00", "2025-03-19T18:42:26Z")
                .replace("2025-03-19 14:42:27-04:00", "2025-03-19T18:42:27"))
    assert isinstance(doc, Document)
    assert doc.tags == ("a", "b")
    assert doc.published_time == dt.datetime(2025, 3, 19, 18, 42, 26, tzinfo=dt.UTC)
    assert doc.modified_time == dt.datetime(2025, 3, 19, 18, 42, 27, tzinfo=dt.UTC)


BILLION_LAUGHS = (
    "---\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "source_url: u\ntitle: t\ndate: '2025-01-01'\n---\nbody\n"
)


@pytest.mark.parametrize(("data", "reason", "words"), [
    (b"---\ntitle: \xff\xfe\n---\n", "not_utf8", "UTF-8"),
    (b"---\x00\x01\x02binary", "binary", "binary"),
    # text saved as "Unicode" by a Windows editor: not UTF-8 (SPEC §2), not a binary file
    ("---\nsource_url: u\ntitle: t\n---\n".encode("utf-16"), "not_utf8", "UTF-16"),
    ("---\nsource_url: u\ntitle: t\n---\n".encode("utf-16-be"), "not_utf8", "UTF-16"),
    ("\ufeff---\nsource_url: u\n---\n".encode("utf-16-be"), "not_utf8", "save the file as "
     "UTF-8"),
    ("\ufeff---\nsource_url: u\n---\n".encode("utf-32-le"), "not_utf8", "UTF-32"),
    ("just some text\n", "no_front_matter", "first line must be '---'"),
    ("", "no_front_matter", "no front matter"),
    ("---\ntitle: x\nsource_url: y\n", "unclosed_front_matter", "never closed"),
    ("---\n- a\n- b\n---\nbody", "front_matter_not_mapping", "mapping of 'key: value' "
     "lines, not a list"),
    ("---\njust a string\n---\nbody", "front_matter_not_mapping", "not a single text "
     "('just a string')"),
    ("---\n---\nbody", "front_matter_not_mapping", "lines, not empty"),  # not "NoneType"
    (BILLION_LAUGHS, "yaml_alias", "anchors or aliases"),
    ("---\nsource_url: !!python/object/apply:os.system ['true']\ntitle: t\n---\n", "yaml_tag",
     "tag"),
    ("---\nsource_url: !custom u\ntitle: t\n---\n", "yaml_tag", "tag"),
    ("---\ntitle: [unclosed\n---\n", "invalid_yaml", "not valid YAML"),
    ("---\ntitle: t\ndate: '2025-01-01'\n---\n", "missing_field", "'source_url'"),
    ("---\nsource_url: u\ndate: '2025-01-01'\n---\n", "missing_field", "'title'"),
    ("---\nsource_url: u\ntitle: t\n---\n", "missing_field", "published_time"),
    ("---\nsource_url: u\ntitle: t\npublished_time: yesterday\n---\n", "invalid_time",
     "published_time"),
    ("---\nsource_url: u\ntitle: t\ndate: 2025-13-45\n---\n", "invalid_time", "date"),
    # outside datetime's range once in UTC: an OverflowError traceback (exit 1) for ingest
    ("---\nsource_url: u\ntitle: t\npublished_time: '0001-01-01 00:00:00+14:00'\n---\n",
     "invalid_time", "'published_time' is outside the years 1 to 9999 once in UTC"),
    ("---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n"
     "modified_time: 9999-12-31T23:59:59-01:00\n---\n", "invalid_time", "'modified_time' is"),
    ("---\nsource_url: u\ntitle: \"a\\0b\"\ndate: '2025-01-01'\n---\n", "invalid_field",
     "'title' holds a NUL character"),
    ("---\nsource_url: u\ntitle: [a, b]\ndate: '2025-01-01'\n---\n", "invalid_field",
     "'title' must be text, not a list"),
    ("---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\ntags: {a: 1}\n---\n", "invalid_field",
     "tags"),
    # a key given twice: YAML says a mapping's keys are unique; PyYAML kept the last value
    # silently, so which of two titles was the statement's depended on their order
    ("---\nsource_url: u\ntitle: First\ndate: '2025-01-01'\ntitle: Second\n---\n",
     "invalid_yaml", "at line 5: the key 'title' is given twice"),
    ("---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\nx: {a: 1, 'a': 2}\n---\n",
     "invalid_yaml", "the key 'a' is given twice"),
    ("---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n~: 1\nnull: 2\n---\n",
     "invalid_yaml", "the key ~ (null, empty) is given twice"),
    ("---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n~: 1\n---\n",
     "invalid_field", "key ~ (null, empty) is not a name"),
])
def test_bad_input_is_rejected_with_reason(data: str | bytes, reason: str, words: str) -> None:
    """Each bad input of SPEC §2 yields its reason code and a message naming the problem."""
    result = parse(data)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert words in result.message


@pytest.mark.parametrize("escape", ["", 'q: "a\\\\b"\n'], ids=["plain", "with-an-escape"])
@pytest.mark.parametrize("depth", [400, 999])
def test_deeply_nested_extra_keys_are_rejected_not_a_crash(escape: str, depth: int) -> None:
    """`extra: [[[[…]]]]` a few hundred levels deep, within libyaml's limit of 1,000, raised
    RecursionError (the NUL check recursed once per level when the front matter held a
    backslash; json.dumps of the extra keys near 1,000 levels): `redline ingest` stopped
    with a traceback. Such a field is rejected with its depth; 32 levels are kept."""
    def front(n: int) -> bytes:
        nest = "[" * n + "x" + "]" * n
        return (f"---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\n{escape}extra: {nest}\n"
                f"m: {'{a: ' * n}x{'}' * n}\n---\nbody\n").encode()

    result = parse(front(depth))
    assert isinstance(result, Rejection), result
    assert (result.reason, result.message) == (
        "invalid_field", f"field 'extra' nests lists or mappings {depth} levels deep; "
        "at most 32 are kept")
    kept = parse(front(32))
    assert isinstance(kept, Document) and '"x"' in kept.extra


def test_file_over_the_size_limit_is_rejected() -> None:
    """A file over max_file_bytes is rejected before it is decoded."""
    result = parse_document(GOOD.encode() + b"x" * 2000, max_bytes=1024)
    assert isinstance(result, Rejection) and result.reason == "too_large"


def test_front_matter_over_64k_is_rejected() -> None:
    """The front matter is capped before YAML sees it."""
    big = "---\nsource_url: u\ntitle: t\ndate: '2025-01-01'\npad: '" + "x" * 70000 + "'\n---\n"
    result = parse(big)
    assert isinstance(result, Rejection) and result.reason == "front_matter_too_large"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    """Arbitrary bytes give a Document or a Rejection, never an exception."""
    assert isinstance(parse_document(data), Document | Rejection)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_front_matter_never_crashes(front: str) -> None:
    """Arbitrary text between the fences gives a Document or a Rejection."""
    result = parse_document(f"---\n{front}\n---\nbody\n".encode())
    assert isinstance(result, Document | Rejection)

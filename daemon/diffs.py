"""Unified and word diffs between two revisions, and the one-line summaries events store.

Pure. Words are compared by their folded form (so a quote-style change is not shown as an
edit) but shown as written. Paragraphs are aligned first and words are diffed only inside
changed paragraphs, which keeps long statements fast and the result readable.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from daemon.text import fold_words, paragraphs, title_text


@dataclass(frozen=True)
class WordOp:
    """One run of a word diff: op is equal, delete or insert; text keeps its spacing."""

    op: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"op": self.op, "text": self.text}


@dataclass(frozen=True)
class DiffStats:
    """What a word diff amounts to: paragraphs touched, words added and removed."""

    paragraphs_changed: int
    words_added: int
    words_removed: int


def _doc_lines(title: str, body_text: str) -> list[str]:
    return [f"# {title_text(title)}", *paragraphs(body_text)]


def unified_diff(old_title: str, old_text: str, new_title: str, new_text: str,
                 old_label: str = "r1", new_label: str = "r2", context: int = 1) -> str:
    """A line-level unified diff of title and paragraphs (each paragraph is one line)."""
    lines = difflib.unified_diff(_doc_lines(old_title, old_text), _doc_lines(new_title, new_text),
                                 fromfile=old_label, tofile=new_label, n=context, lineterm="")
    # no line changed (a metadata, deleted or restored revision): no diff at all, as in the
    # notification payload, not a lone newline that reads as an empty diff
    out = "\n".join(lines)
    return out + "\n" if out else ""


def _tokens(text: str) -> list[str]:
    """Split into words, each keeping the white space after it."""
    out: list[str] = []
    word_start = 0
    in_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            in_space = True
        elif in_space:
            out.append(text[word_start:i])
            word_start = i
            in_space = False
    if word_start < len(text):
        out.append(text[word_start:])
    return out


def _append(ops: list[WordOp], op: str, text: str) -> None:
    if not text:
        return
    if ops and ops[-1].op == op:
        ops[-1] = WordOp(op, ops[-1].text + text)
    else:
        ops.append(WordOp(op, text))


def _word_ops(old: str, new: str, ops: list[WordOp]) -> tuple[int, int]:
    a, b = _tokens(old), _tokens(new)
    ka = [fold_words(t).strip() for t in a]
    kb = [fold_words(t).strip() for t in b]
    added = removed = 0
    gap = ""  # white space of the old text after an equal run, not shown by it
    extra = ""  # white space of the new text after an equal run, not shown by it
    for tag, i1, i2, j1, j2 in _opcodes(ka, kb):
        if tag == "equal":
            # An equal run shows the new text's tokens, and the white space after its last
            # word where both texts have the same. Where they differ — one text ends there
            # or starts a paragraph, the other goes on in the line — each side's own space
            # goes with what that side has next: "EC – redacted" keeps its space when
            # " – redacted" is deleted, a paragraph break stays with the text it is in.
            # Inside the run too, a paragraph break that moved (the same words, broken
            # elsewhere) is a space deleted and a break inserted, or the reverse.
            start = j1
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                old_ws = a[i][len(a[i].rstrip()):]
                new_ws = b[j][len(b[j].rstrip()):]
                if old_ws == new_ws:
                    continue
                _append(ops, "equal", "".join(b[start:j + 1])[:-len(new_ws) or None])
                start = j + 1
                if j < j2 - 1:
                    _append(ops, "delete", old_ws)
                    _append(ops, "insert", new_ws)
            gap, extra = (old_ws, new_ws) if start == j2 else ("", "")
            _append(ops, "equal", "".join(b[start:j2]))
            continue
        deleted, inserted = gap + "".join(a[i1:i2]), extra + "".join(b[j1:j2])
        # words replaced by words: the white space both sides end with is no change, so
        # the runs hold the words alone ("fantastic" → "productive", as SPEC §7 shows)
        kept = _common_trailing_space(deleted, inserted) if i2 > i1 and j2 > j1 else ""
        _append(ops, "delete", deleted[:len(deleted) - len(kept)])
        _append(ops, "insert", inserted[:len(inserted) - len(kept)])
        _append(ops, "equal", kept)
        removed += i2 - i1
        added += j2 - j1
        gap = extra = ""
    return added, removed


# Above this many word pairs (about 500 × 500 words), a stretch is first cut at the words
# that occur once on each side (patience diff): difflib compares every pair of equal words,
# which with the commonest words took seconds for a few thousand changed words and minutes
# for tens of thousands, inside the ingest's transaction.
DIRECT_PAIRS = 250_000


def _opcodes(ka: list[str], kb: list[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib's opcodes for two lists of words (or paragraphs), in bounded time. What both
    sides begin and end with is equal before anything is compared (an edit of one word in
    a long paragraph, or of one paragraph in a long text, compares only what lies
    between)."""
    head = 0
    while head < min(len(ka), len(kb)) and ka[head] == kb[head]:
        head += 1
    tail = 0
    while tail < min(len(ka), len(kb)) - head and ka[-1 - tail] == kb[-1 - tail]:
        tail += 1
    blocks: list[tuple[int, int, int]] = [(0, 0, head)] if head else []
    if tail:
        blocks.append((len(ka) - tail, len(kb) - tail, tail))
    todo = [(head, len(ka) - tail, head, len(kb) - tail)]
    while todo:
        alo, ahi, blo, bhi = todo.pop()
        if (ahi - alo) * (bhi - blo) <= DIRECT_PAIRS:
            matcher = difflib.SequenceMatcher(None, ka[alo:ahi], kb[blo:bhi], autojunk=False)
            blocks += [(alo + i, blo + j, n) for i, j, n in matcher.get_matching_blocks() if n]
            continue
        # A stretch with no anchor (see _anchors) shares nothing that says where it aligns
        # (a rewrite): all of it is replaced.
        i0, j0 = alo, blo
        for i, j in _anchors(ka, kb, alo, ahi, blo, bhi):
            todo.append((i0, i, j0, j))
            blocks.append((i, j, 1))
            i0, j0 = i + 1, j + 1
        if (i0, j0) != (alo, blo):
            todo.append((i0, ahi, j0, bhi))
    blocks.sort()
    ops: list[tuple[str, int, int, int, int]] = []
    i = j = 0
    for bi, bj, n in [*_merged(blocks), (len(ka), len(kb), 0)]:
        tag = "replace" if i < bi and j < bj else "delete" if i < bi else \
            "insert" if j < bj else ""
        if tag:
            ops.append((tag, i, bi, j, bj))
        if n:
            ops.append(("equal", bi, bi + n, bj, bj + n))
        i, j = bi + n, bj + n
    return ops


def _merged(blocks: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for i, j, n in blocks:
        if out and out[-1][0] + out[-1][2] == i and out[-1][1] + out[-1][2] == j:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
        else:
            out.append((i, j, n))
    return out


def _anchors(ka: list[str], kb: list[str], alo: int, ahi: int, blo: int, bhi: int
             ) -> list[tuple[int, int]]:
    """The longest run, in order on both sides, of words that occur once in each stretch;
    where there are none (text repeated: the same paragraph twice, two copies of a
    statement), of words that occur as often on both sides, a few times, the n-th
    occurrence on one side paired with the n-th on the other."""
    in_a, in_b = Counter(ka[alo:ahi]), Counter(kb[blo:bhi])
    for most in (1, 4, 16):
        if run := _anchor_run(ka, kb, alo, ahi, blo, bhi, {
                w for w, n in in_a.items() if n <= most and in_b.get(w) == n}):
            return run
    return []


def _anchor_run(ka: list[str], kb: list[str], alo: int, ahi: int, blo: int, bhi: int,
                words: set[str]) -> list[tuple[int, int]]:
    where_b: dict[str, list[int]] = {}
    for j in range(blo, bhi):
        if kb[j] in words:
            where_b.setdefault(kb[j], []).append(j)
    seen: Counter[str] = Counter()
    pairs = []
    for i in range(alo, ahi):
        if (w := ka[i]) in words:
            pairs.append((i, where_b[w][seen[w]]))
            seen[w] += 1
    # the longest increasing subsequence of the b positions (patience sorting)
    tails: list[int] = []  # the b position ending the best run of each length
    tail_at: list[int] = []  # its index in pairs
    before = [-1] * len(pairs)
    for k, (_i, j) in enumerate(pairs):
        n = bisect.bisect_left(tails, j)
        before[k] = tail_at[n - 1] if n else -1
        if n == len(tails):
            tails.append(j)
            tail_at.append(k)
        else:
            tails[n], tail_at[n] = j, k
    run: list[tuple[int, int]] = []
    k = tail_at[-1] if tail_at else -1
    while k >= 0:
        run.append(pairs[k])
        k = before[k]
    return run[::-1]


def _common_trailing_space(a: str, b: str) -> str:
    wa, wb = a[len(a.rstrip()):], b[len(b.rstrip()):]
    n = 0
    while n < min(len(wa), len(wb)) and wa[-1 - n] == wb[-1 - n]:
        n += 1
    return wa[len(wa) - n:]


# The word diffs computed last, by a digest of their four texts. An event's word diff is
# computed when it is recorded (for its counts and summary) and again, in the same process
# moments later, for its notification body: the second is taken from here. Bounded by the
# characters of the runs kept (a diff bigger than an eighth of it is not kept).
MEMO_BUDGET_CHARS = 4_000_000
_memo: OrderedDict[bytes, tuple[tuple[WordOp, ...], DiffStats, int]] = OrderedDict()
_memo_chars = 0
_memo_lock = threading.Lock()


def clear_memo() -> None:
    """Forget the word diffs kept (for benchmarks and tests that count the work)."""
    global _memo_chars
    with _memo_lock:
        _memo.clear()
        _memo_chars = 0


def _memo_key(*texts: str) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for t in texts:
        data = t.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def word_diff(old_title: str, old_text: str, new_title: str, new_text: str
              ) -> tuple[list[WordOp], DiffStats]:
    """Word-level diff of title and body; paragraphs are separated by a blank line."""
    global _memo_chars
    key = _memo_key(old_title, old_text, new_title, new_text)
    with _memo_lock:
        hit = _memo.get(key)
        if hit is not None:
            _memo.move_to_end(key)
            return list(hit[0]), hit[1]
    ops, stats = _compute_word_diff(old_title, old_text, new_title, new_text)
    size = sum(len(op.text) for op in ops)
    if size <= MEMO_BUDGET_CHARS // 8:
        with _memo_lock:
            if key not in _memo:
                _memo[key] = (tuple(ops), stats, size)
                _memo_chars += size
            while _memo_chars > MEMO_BUDGET_CHARS:
                _memo_chars -= _memo.popitem(last=False)[1][2]
    return ops, stats


def _compute_word_diff(old_title: str, old_text: str, new_title: str, new_text: str
                       ) -> tuple[list[WordOp], DiffStats]:
    pa, pb = _doc_lines(old_title, old_text), _doc_lines(new_title, new_text)
    ka = [" ".join(fold_words(p).split()) for p in pa]
    kb = [" ".join(fold_words(p).split()) for p in pb]
    ops: list[WordOp] = []
    added = removed = changed = 0
    for tag, i1, i2, j1, j2 in _opcodes(ka, kb):
        # the break before these paragraphs, on the side(s) that have one: a paragraph
        # inserted (or deleted) whole brings its break with it, or the other text would
        # read with an empty paragraph where it was
        in_old, in_new = i1 > 0 and i2 > i1, j1 > 0 and j2 > j1
        if in_old or in_new:
            _append(ops, "equal" if in_old and in_new else "delete" if in_old else "insert",
                    "\n\n")
        if tag == "equal":
            _append(ops, "equal", "\n\n".join(pb[j1:j2]))
            continue
        changed += max(i2 - i1, j2 - j1)
        a_words, r_words = _word_ops("\n\n".join(pa[i1:i2]), "\n\n".join(pb[j1:j2]), ops)
        added += a_words
        removed += r_words
    # the "# " marker of the title line is ours, not the statement's; a run that held only
    # the marker (the title's first word changed, or nothing to compare with) goes with it
    if ops and ops[0].text.startswith("# "):
        ops[0] = WordOp(ops[0].op, ops[0].text[2:])
        if not ops[0].text:
            del ops[0]
    return ops, DiffStats(changed, added, removed)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summarize(kind: str, changed_fields: tuple[str, ...] | list[str],
              stats: DiffStats | None = None, words: int | None = None) -> str:
    """The one-line summary stored with each event."""
    if kind == "added":
        return f"new statement: {_plural(words or 0, 'word')}"
    if kind == "deleted":
        return "statement withdrawn: its last file disappeared"
    if kind == "formatting":
        return "formatting only: " + ", ".join(changed_fields)
    parts = []
    if kind == "restored":
        parts.append("statement restored")
    if stats is not None and (stats.words_added or stats.words_removed):
        what = []
        if "title" in changed_fields:
            what.append("title changed")
        body_paras = stats.paragraphs_changed - (1 if "title" in changed_fields else 0)
        if body_paras > 0:
            what.append(_plural(body_paras, "paragraph") + " changed")
        parts.append(f"{', '.join(what) or 'text changed'}: +{_plural(stats.words_added, 'word')}"
                     f", -{_plural(stats.words_removed, 'word')}")
    other = [f for f in changed_fields if f not in ("title", "body")]
    if other:
        parts.append("fields changed: " + ", ".join(other))
    return "; ".join(parts) or kind

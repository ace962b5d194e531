"""Shapes a word diff (a list of {op, text}) for the side-by-side view. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass
class SideBySideRow:
    """One paragraph (or run of changed paragraphs): old on the left, new on the right."""

    left: list[tuple[str, str]] = field(default_factory=list)
    right: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(op != "equal" for op, _ in self.left + self.right)


def side_by_side(words: Iterable[Mapping[str, str]]) -> list[SideBySideRow]:
    """Rows aligned at the paragraph breaks both revisions share (those inside equal runs);
    deleted runs go left, inserted runs right, equal text both sides."""
    rows: list[SideBySideRow] = []
    row = SideBySideRow()
    for w in words:
        op, text = w["op"], w["text"]
        if op == "equal":
            for i, part in enumerate(_PARAGRAPH_BREAK.split(text)):
                if i:
                    rows.append(row)
                    row = SideBySideRow()
                if part:
                    row.left.append(("equal", part))
                    row.right.append(("equal", part))
        elif op == "delete":
            row.left.append(("delete", text))
        else:
            row.right.append(("insert", text))
    rows.append(row)
    return [r for r in rows if r.left or r.right]

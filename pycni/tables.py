"""Plain-text tables (`ps`, `network ls`, `probe`): columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table", "table_lines"]


def table_lines(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Each row as one line, cells left-aligned two spaces apart, trailing blanks dropped."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_table(rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(table_lines(rows))

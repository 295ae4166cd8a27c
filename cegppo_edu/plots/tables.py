"""Small tables for notebook cells: HTML in the book and in JupyterLab, aligned text when printed.

A chapter that shows numbers side by side returns a ``Table`` as its cell's value: the book renders it as a real
HTML table that fits the text column, never as a wide ``<pre>`` or as raw Markdown pipes.
"""

from __future__ import annotations

import html


class Table:
    """``header``: column names; ``rows``: lists of cells, already formatted as strings (or numbers).
    ``verbatim``: indices of columns shown as text a model wrote (in ``<code>``, which the book's MathJax leaves
    alone: a sampled "$x$" or "\\[" stays as the model wrote it)."""

    def __init__(self, header, rows, caption: str | None = None, verbatim: tuple[int, ...] = ()):
        self.header = [str(h) for h in header]
        self.rows = [[str(cell) for cell in row] for row in rows]
        for k, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"row {k} has {len(row)} cells, the header {len(self.header)}: {row}")
        self.caption = caption
        self.verbatim = set(verbatim)

    @classmethod
    def from_dicts(cls, rows: list[dict], digits: int = 3, caption: str | None = None) -> "Table":
        """A table of dicts that share their keys (the header); floats rounded to ``digits``, NaN shown as "—"."""
        def cell(value):
            if isinstance(value, float):
                return "—" if value != value else f"{value:.{digits}f}"
            return str(value)
        header = list(rows[0]) if rows else []
        return cls(header, [[cell(row[k]) for k in header] for row in rows], caption)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        def cell(i: int, text: str) -> str:
            return f"<td><code>{html.escape(text)}</code></td>" if i in self.verbatim else f"<td>{html.escape(text)}</td>"
        body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in self.rows)
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f'<table class="cegppo-table">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __str__(self) -> str:
        widths = [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [self.header, *self.rows]]
        return "\n".join(([self.caption] if self.caption else []) + lines)

    __repr__ = __str__


__all__ = ["Table"]

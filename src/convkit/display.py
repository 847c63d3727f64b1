"""How results show themselves: the command line's text in a terminal, HTML tables and inline
pictures in a notebook (IPython's `_repr_html_` and `_repr_png_`).

Light on purpose: this module imports nothing outside the standard library, so the objects of
the Python API (convkit.api) can be defined without loading torch, numpy, matplotlib or
IPython. Anything heavy is imported where a picture is made.
"""

from __future__ import annotations

import base64
import html
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

Format = Callable[[Any], str]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached), never in a terminal or a
    plain script. Imports nothing: a process without IPython loaded is not a notebook."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return getattr(shell, "kernel", None) is not None


def show(obj: Any) -> None:
    """Display `obj` in a notebook (HTML or picture); print it anywhere else."""
    if in_notebook():
        from IPython.display import display

        display(obj)
    else:
        print(obj)


# ---- pictures -----------------------------------------------------------------------------------


class Picture:
    """A PNG image that shows itself in a notebook; `.save(path)` writes it anywhere."""

    def __init__(self, png: bytes, title: str = ""):
        if png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("expected PNG bytes")
        self.png = png
        self.title = title

    @classmethod
    def from_file(cls, path: str | Path, title: str = "") -> Picture:
        return cls(Path(path).read_bytes(), title or Path(path).name)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels, from the PNG header."""
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")

    def save(self, path: str | Path) -> Path:
        from convkit.fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(self.png)
        return path

    def html(self, width: int | None = None) -> str:
        """An <img> with the PNG inline; `width` scales it to that many CSS pixels, without
        smoothing (a 28x28 input stays square pixels)."""
        data = base64.b64encode(self.png).decode("ascii")
        style = f"width:{width}px;image-rendering:pixelated" if width else "max-width:100%"
        alt = html.escape(self.title or "picture")
        return f'<img src="data:image/png;base64,{data}" alt="{alt}" style="{style}">'

    def _repr_png_(self) -> bytes:
        return self.png

    def __repr__(self) -> str:
        w, h = self.size
        return f"<Picture {w}x{h}{': ' + self.title if self.title else ''}>"


def figure_png(draw: Callable[[Any], Any]) -> bytes:
    """PNG bytes of what `draw(file)` writes into a binary file object (the draw module's
    figure functions take one instead of a path)."""
    import io

    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


def pyplot():
    """matplotlib.pyplot, with convkit's drawing modules imported so that a notebook keeps its
    backend. Those modules select Agg when first imported (a command needs no screen); inside a
    Jupyter kernel that switch would stop the notebook's own figures from showing inline, so it
    is skipped there, and convkit's figures, closed as soon as they are saved, never show."""
    import matplotlib

    drawing = ("convkit.inspect.draw", "convkit.inspect.plots")
    if in_notebook() and not all(m in sys.modules for m in drawing):
        use = matplotlib.use
        matplotlib.use = lambda *args, **kwargs: None
        try:
            import convkit.inspect.draw  # noqa: F401
            import convkit.inspect.plots  # noqa: F401
        finally:
            matplotlib.use = use
    import matplotlib.pyplot as plt

    import convkit.inspect.draw  # noqa: F401
    import convkit.inspect.plots  # noqa: F401

    return plt


# ---- tables -------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value)


def percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


class Table(list):
    """Rows (dicts, what `--json` prints) that show themselves: in a notebook an HTML table, in
    a terminal the lines the command line prints. `columns` are (key, header[, format])."""

    def __init__(
        self,
        rows: Iterable[dict[str, Any]] = (),
        columns: Sequence[tuple] = (),
        *,
        text: Callable[[list[dict[str, Any]]], list[str]] | None = None,
        title: str = "",
        pictures: Sequence[Picture] = (),
    ):
        super().__init__(rows)
        self.columns = [(c[0], c[1], c[2] if len(c) > 2 else _text) for c in columns] or [
            (k, k, _text) for k in (self[0] if self else {})
        ]
        self._text = text
        self.title = title
        self.pictures = list(pictures)

    def column(self, key: str) -> list[Any]:
        """One column's values, row by row."""
        return [row.get(key) for row in self]

    def lines(self) -> list[str]:
        """The rows as the command line prints them."""
        if self._text is not None:
            return self._text(list(self))
        cells = [[fmt(row.get(key)) for key, _, fmt in self.columns] for row in self]
        head = [header for _, header, _ in self.columns]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        return [
            "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
            for line in [head, *cells]
        ]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return html_table(
            [header for _, header, _ in self.columns],
            [[fmt(row.get(key)) for key, _, fmt in self.columns] for row in self],
            title=self.title,
        ) + html_pictures(self.pictures)


def html_table(
    head: Sequence[str], rows: Sequence[Sequence[str]], *, title: str = "", raw: bool = False
) -> str:
    """An HTML table; cells are escaped unless `raw` (cells that are HTML already). Cells that
    read as numbers are right-aligned."""
    esc = (lambda s: s) if raw else html.escape

    def cell(tag: str, value: str) -> str:
        plain = value.replace(",", "").replace("%", "").replace(".", "").lstrip("+-")
        align = ' style="text-align:right"' if plain.isdigit() else ' style="text-align:left"'
        return f"<{tag}{align}>{esc(value)}</{tag}>"

    parts = [f"<p><b>{html.escape(title)}</b></p>" if title else "", "<table>"]
    if head:
        parts.append("<thead><tr>" + "".join(cell("th", h) for h in head) + "</tr></thead>")
    parts.append("<tbody>")
    parts += ["<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows]
    parts.append("</tbody></table>")
    return "".join(parts)


def html_pictures(pictures: Sequence[Picture]) -> str:
    """Pictures side by side, wrapping to the next row where the page is too narrow."""
    if not pictures:
        return ""
    style = "display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start"
    return f'<div style="{style}">' + "".join(p.html() for p in pictures) + "</div>"


def html_pre(lines: Iterable[str]) -> str:
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"


class Report(dict):
    """A result as a dict (what `--json` prints), shown as the command line shows it: `lines()`
    in a terminal, `html()` in a notebook."""

    def lines(self) -> list[str]:
        return [f"{k}: {v}" for k, v in self.items()]

    def html(self) -> str:
        return html_pre(self.lines())

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        return self.html()

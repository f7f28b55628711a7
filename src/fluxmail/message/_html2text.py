"""HTML -> readable plain text, for the automatic text/plain alternative (pure, stdlib).

What a person reading the text part should see: paragraphs and headings on their own
lines (headings underlined), lists as ``- item`` / ``1. item``, links as ``text (url)``,
images as their alt text, table cells separated by `` | ``, ``<pre>`` kept as is, and
nothing of ``<script>``, ``<style>``, ``<head>`` or HTML comments. Paragraphs are wrapped
at 78 columns without breaking words or URLs.
"""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser

WIDTH = 78

_BLOCK = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "html",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript"})
_VOID_BREAKS = frozenset({"br", "hr"})
_SPACE = re.compile(r"[ \t\r\n\f\v]+")
_UNDERLINE = {"h1": "=", "h2": "-"}


class _TextBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []  # (kind, text): "para" | "pre" | "raw"
        self._line: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._lists: list[list[int]] = []  # per open list: [counter] (0 for <ul>)
        self._prefix = ""
        self._links: list[str | None] = []
        self._link_text_start: list[int] = []  # index into _line where a link's text starts
        self._heading: str | None = None
        self._row: list[str] = []
        self._cells: list[tuple[int, int]] = []  # open cells: (blocks, line parts) at start

    # --- collecting text -----------------------------------------------------------

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._line.append(data if self._pre else _SPACE.sub(" ", data))

    def _flush(self, kind: str = "para") -> None:
        text = "".join(self._line)
        self._line = []
        if self._pre:
            kind = "pre"
        else:
            text = text.strip()
        if not text.strip():
            return
        if self._heading:
            mark = _UNDERLINE.get(self._heading)
            if mark:
                text = f"{text}\n{mark * min(len(text), WIDTH)}"
            kind = "raw"
        if kind == "para" and self._prefix:
            kind, text = "item", self._prefix + text
        self.blocks.append((kind, text))
        self._prefix = ""

    # --- tags -----------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
            return
        if self._hidden:
            return
        attributes = dict(attrs)
        if tag in _BLOCK:
            self._flush()
        if tag in {"ul", "ol"}:
            self._lists.append([1 if tag == "ol" else 0])
        elif tag == "li":
            self._prefix = self._list_marker()
        elif tag == "pre":
            self._pre += 1
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._heading = tag
        elif tag == "a":
            self._links.append(attributes.get("href"))
            # an index into the parts, not a character offset: measuring the line at
            # every link would re-join it, quadratic in the links of one paragraph
            self._link_text_start.append(len(self._line))
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self._line.append(alt)
        elif tag in {"td", "th"}:
            self._cells.append((len(self.blocks), len(self._line)))
        elif tag in _VOID_BREAKS:
            self.handle_startendtag(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden:
            return
        if tag == "br":
            self._flush()
        elif tag == "hr":
            self._flush()
            self.blocks.append(("raw", "-" * 20))
        elif tag == "img":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
            return
        if self._hidden:
            return
        if tag == "a" and self._links:
            self._close_link()
        elif tag in {"td", "th"} and self._cells:
            self._close_cell()
            return
        elif tag == "tr":
            cells = [cell for cell in self._row if cell]
            self._row = []
            if cells:
                self._line.append(" | ".join(cells))
                self._flush("row")
        if tag in _BLOCK:
            self._flush()
        if tag in {"ul", "ol"} and self._lists:
            self._lists.pop()
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        elif tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._heading = None

    def _close_cell(self) -> None:
        """A cell of plain text joins its row (``a | b``); a layout cell holding blocks
        (paragraphs, headings) has already become those blocks."""
        blocks_at_start, line_at_start = self._cells.pop()
        if len(self.blocks) == blocks_at_start:
            self._row.append("".join(self._line[line_at_start:]).strip())
            del self._line[line_at_start:]
        else:
            self._flush()

    def _list_marker(self) -> str:
        if not self._lists:
            return "- "
        indent = "  " * (len(self._lists) - 1)
        counter = self._lists[-1]
        if counter[0] == 0:
            return f"{indent}- "
        marker = f"{indent}{counter[0]}. "
        counter[0] += 1
        return marker

    def _close_link(self) -> None:
        href = self._links.pop()
        start = self._link_text_start.pop()
        text = "".join(self._line[start:]).strip()
        url = (href or "").strip()
        if not url or url.startswith(("#", "javascript:")):
            return
        shown = url[7:] if url.lower().startswith("mailto:") else url
        if text and shown not in text:
            self._line.append(f" ({url if not url.startswith('mailto:') else shown})")
        elif not text:
            self._line.append(shown)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(html: str) -> str:
    """Readable plain text for ``html`` (see the module docstring)."""
    builder = _TextBuilder()
    builder.feed(html)
    builder.close()
    out: list[str] = []
    previous = ""
    for kind, text in builder.blocks:
        if out:
            out.append("\n" if kind == previous and kind in ("item", "row") else "\n\n")
        out.append(_wrap(text) if kind in ("para", "item") else text.rstrip("\n"))
        previous = kind
    return "".join(out) + "\n" if out else ""


def _wrap(text: str) -> str:
    indent = re.match(r"\s*(?:[-*]|\d+\.)?\s*", text)
    hang = " " * len(indent.group(0)) if indent else ""
    return textwrap.fill(
        text,
        width=WIDTH,
        subsequent_indent=hang,
        break_long_words=False,
        break_on_hyphens=False,
    )

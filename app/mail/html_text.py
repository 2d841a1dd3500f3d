"""Plain text from mail HTML, the way a mail client's "view as text" shows it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

# Elements whose content is never shown.
_HIDDEN = frozenset({"script", "style", "head", "title", "template", "noscript", "xml"})
# Elements that sit on lines of their own.
_LINE_BLOCKS = frozenset(
    {"div", "tr", "li", "dt", "dd", "section", "article", "header", "footer", "center", "form"}
)
# Elements with a blank line around them.
_PARAGRAPH_BLOCKS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "pre", "hr", "address"}
)
_CELLS = frozenset({"td", "th"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr"})
_WHITESPACE = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Readable text from HTML: block elements become line breaks, ``<blockquote>``
    content is prefixed with ``> `` per level, list items with ``- ``, links keep
    their text. Never raises on malformed HTML.
    """
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return extractor.text()


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._lines: list[str] = []
        self._current: list[str] = []
        self._hidden_depth = 0
        self._quote_depth = 0
        self._pre_depth = 0
        self._cell_open = False
        self._in_outlook_line = False

    def text(self) -> str:
        self._end_line()
        text = "\n".join(self._lines)
        return _BLANK_RUNS.sub("\n\n", text).strip("\n").rstrip()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            if tag not in _VOID:
                self._hidden_depth += 1
            return
        if tag == "br":
            self._end_line(force=True)
        elif tag == "blockquote":
            self._blank_line()
            self._quote_depth += 1
        elif tag == "p" and _is_outlook_line(attrs):
            # Outlook writes every line as <p class=MsoNormal> with zero margins, and
            # an empty line as an empty one.
            self._end_line()
            self._in_outlook_line = True
        elif tag in _PARAGRAPH_BLOCKS:
            self._blank_line()
            if tag == "pre":
                self._pre_depth += 1
        elif tag in _LINE_BLOCKS:
            self._end_line()
            if tag == "li":
                self._current.append("- ")
            if tag == "tr":
                self._cell_open = False
        elif tag in _CELLS:
            if self._cell_open:
                self._current.append(" ")
            self._cell_open = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
            return
        if tag == "blockquote":
            self._end_line()
            self._quote_depth = max(0, self._quote_depth - 1)
            self._blank_line()
        elif tag == "p" and self._in_outlook_line:
            self._end_line(force=True)
            self._in_outlook_line = False
        elif tag in _PARAGRAPH_BLOCKS:
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)
            self._blank_line()
        elif tag in _LINE_BLOCKS:
            self._end_line()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        if self._pre_depth:
            first, *rest = data.replace("\r\n", "\n").split("\n")
            self._current.append(first)
            for line in rest:
                self._end_line(force=True)
                self._current.append(line)
            return
        text = _WHITESPACE.sub(" ", data)
        if not self._current or self._current[-1].endswith(" "):
            text = text.lstrip()
        if text:
            self._current.append(text)

    def _end_line(self, *, force: bool = False) -> None:
        line = "".join(self._current).rstrip()
        self._current = []
        if line.strip() or force:
            self._lines.append(self._prefix(line))

    def _blank_line(self) -> None:
        self._end_line()
        if not self._lines:
            return
        if self._lines[-1].strip("> "):
            self._lines.append(self._prefix(""))
        elif len(self._prefix("")) < len(self._lines[-1]):
            # Leaving a quote: the separating blank line belongs to the outer level.
            self._lines[-1] = self._prefix("")

    def _prefix(self, line: str) -> str:
        if not self._quote_depth:
            return line
        return f"{'> ' * self._quote_depth}{line}".rstrip()


def _is_outlook_line(attrs: list[tuple[str, str | None]]) -> bool:
    classes = next((value or "" for name, value in attrs if name == "class"), "")
    return "msonormal" in classes.lower().split()

"""The new text of a reply, with the quoted history and the signature cut off.

Hand-written rather than a library: `email-reply-parser` misses German and French
clients, `mail-parser-reply` keeps ``>`` quotes and signatures and its patterns
take seconds on a few long lines (inbound mail is untrusted input), `talon` needs
scikit-learn. Every pattern here is anchored to one line of bounded length, so
the cost is linear in the size of the message.

What ends the new text (first match wins):
- an attribution line, possibly wrapped over up to three lines:
  "On <date> <name> wrote:" (Gmail, Apple Mail, Thunderbird), "Am … schrieb …:",
  "Le … a écrit :", "El … escribió:", "Il … ha scritto:", "Op … schreef …:",
  "Em … escreveu:";
- an Outlook header block: "From:" followed by "Sent:"/"Date:"/"To:"/"Subject:"
  lines (and the German, French, Spanish, Italian, Dutch and Portuguese ones);
- "-----Original Message-----" and its translations, and forwarded-message markers;
- the signature delimiter "-- ".
Lines quoted with ``>`` are dropped wherever they are, which also handles
bottom-posting and inline replies.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from app.mail.html_text import html_to_text

__all__ = ["reply_text_from", "strip_quoted", "strip_quoted_html"]

# Attribution lines longer than this are prose, not a client's header.
_MAX_ATTRIBUTION = 400
# Gmail wraps a long "On ... wrote:" line; three lines cover a long name and address.
_MAX_ATTRIBUTION_LINES = 3

_ATTRIBUTION = re.compile(
    r"""^(?:
        (?:on|em)\b.{0,350}\b(?:wrote|escreveu)
      | am\b.{0,350}\bschrieb\b.{0,200}
      | le\b.{0,350}\ba\s+écrit
      | el\b.{0,350}\bescribió
      | il\b.{0,350}\bha\s+scritto
      | op\b.{0,350}\bschreef\b.{0,200}
    )\s*:$""",
    re.IGNORECASE | re.VERBOSE,
)
_ATTRIBUTION_START = re.compile(r"^(?:on|em|am|le|el|il|op)\b", re.IGNORECASE)

_HEADER_FROM = re.compile(r"^(?:from|von|de|da|van)\s*:\s*\S", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"^(?:sent|date|to|cc|subject"  # en
    r"|gesendet|datum|an|betreff"  # de
    r"|envoyé|à|objet"  # fr
    r"|enviado|fecha|para|asunto|assunto"  # es, pt
    r"|inviato|data|a|oggetto"  # it
    r"|verzonden|aan|onderwerp)\s*:",  # nl
    re.IGNORECASE,
)
# How far below "From:" the other header lines may sit (wrapped To: lists).
_HEADER_WINDOW = 8
_SEPARATOR = re.compile(
    r"""^(?:
        -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine|
                 mensaje\s+original|messaggio\s+originale|oorspronkelijk\s+bericht|
                 mensagem\s+original|forwarded\s+message|weitergeleitete\s+nachricht|
                 message\s+transféré)\s*-{2,}
      | begin\s+forwarded\s+message:
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_RULE = re.compile(r"^_{10,}$")
_BLANK_RUNS = re.compile(r"\n{3,}")


def strip_quoted(text: str) -> str:
    """The new text of a plain-text reply (see the module docstring)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    has_content = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_quoted(line):
            index += 1
            continue
        if line.rstrip() == "--" or _SEPARATOR.match(line.strip()):
            break
        if _starts_header_block(lines, index):
            break
        attribution_length = _attribution_length(lines, index)
        if attribution_length:
            if has_content:
                break
            # Bottom-posting: the quote comes first, the new text after it.
            index += attribution_length
            continue
        kept.append(line.rstrip())
        has_content = has_content or bool(line.strip())
        index += 1
    return _BLANK_RUNS.sub("\n\n", "\n".join(kept)).strip()


def strip_quoted_html(html: str) -> str:
    """The new text of an HTML reply, as plain text.

    Cuts the HTML where a client's quote container starts (Gmail's
    ``div.gmail_quote``, ``blockquote[type=cite]`` of Apple Mail and Thunderbird,
    Outlook's ``#divRplyFwdMsg`` / ``#appendonsend`` / top-bordered header div,
    Yahoo's ``.yahoo_quoted``), then applies `strip_quoted` to the text.
    """
    cut = _QuoteFinder.find(html)
    if cut is not None:
        reply = strip_quoted(html_to_text(html[:cut]))
        if reply:
            return reply
    # No marker, or the quote comes first (bottom-posting): blockquotes become
    # "> " lines in the text, which strip_quoted drops.
    return strip_quoted(html_to_text(html))


def reply_text_from(text: str | None, html: str | None) -> str:
    """The new text of a reply from whichever bodies it has (text first)."""
    if text and text.strip():
        reply = strip_quoted(text)
        if reply or not html:
            return reply
    if html:
        return strip_quoted_html(html)
    return ""


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_length(lines: list[str], index: int) -> int:
    """How many lines the attribution starting at ``index`` spans (0: none)."""
    first = lines[index].strip()
    if not _ATTRIBUTION_START.match(first):
        return 0
    joined = first
    for count in range(1, _MAX_ATTRIBUTION_LINES + 1):
        if len(joined) > _MAX_ATTRIBUTION:
            return 0
        # A real attribution carries a date or time, which prose rarely does.
        if _ATTRIBUTION.match(joined) and any(char.isdigit() for char in joined):
            return count
        if index + count >= len(lines) or not lines[index + count].strip():
            return 0
        joined = f"{joined} {lines[index + count].strip()}"
    return 0


def _starts_header_block(lines: list[str], index: int) -> bool:
    """Outlook's "From: / Sent: / To: / Subject:" block, optionally under a rule."""
    start = index + 1 if _RULE.match(lines[index].strip()) else index
    if start >= len(lines) or not _HEADER_FROM.match(_unbold(lines[start])):
        return False
    window = lines[start + 1 : start + 1 + _HEADER_WINDOW]
    return sum(1 for line in window if _HEADER_OTHER.match(_unbold(line))) >= 2


def _unbold(line: str) -> str:
    # Outlook's HTML header block turns into "*From:* Name" in some text versions.
    return line.strip().replace("*", "")


class _QuoteFinder(HTMLParser):
    """Finds the offset in the HTML source where the quoted history starts."""

    _CLASSES = frozenset(
        {"gmail_quote", "gmail_quote_container", "yahoo_quoted", "moz-cite-prefix"}
    )
    _IDS = frozenset({"divrplyfwdmsg", "appendonsend", "olk_src_body_section"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.position: tuple[int, int] | None = None

    @classmethod
    def find(cls, html: str) -> int | None:
        finder = cls()
        finder.feed(html)
        finder.close()
        if finder.position is None:
            return None
        line, column = finder.position
        line_starts = [0, *(match.end() for match in re.finditer("\n", html))]
        return line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.position is None and self._is_quote_start(tag, dict(attrs)):
            self.position = self.getpos()

    def _is_quote_start(self, tag: str, attrs: dict[str, str | None]) -> bool:
        classes = set((attrs.get("class") or "").lower().split())
        if classes & self._CLASSES:
            return True
        if (attrs.get("id") or "").lower() in self._IDS:
            return True
        if tag == "blockquote" and (attrs.get("type") or "").lower() == "cite":
            return True
        style = re.sub(r"\s+", "", (attrs.get("style") or "").lower())
        # Outlook desktop's separator: <div style="border:none;border-top:solid #E1E1E1 1.0pt;...">
        return tag == "div" and "border:none" in style and "border-top:solid" in style

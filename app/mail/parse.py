"""Reading received messages: headers, bodies and attachment metadata.

Incoming mail is whatever the world sends, so nothing here raises on a broken
message: undecodable headers fall back to their raw text, unknown or wrong
charsets to a best-effort decoding, unparseable dates to ``None``.
"""

from __future__ import annotations

import codecs
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from app.mail.addresses import Address
from app.mail.conversation import parse_message_ids
from app.mail.html_text import html_to_text

__all__ = ["Attachment", "ParsedMessage", "decode_text", "parse_message"]

# Labels that mail software writes but which name a narrower charset than the one
# really used (the WHATWG encoding standard makes the same substitutions).
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "tis-620": "cp874",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
}
# Encodings whose bytes can pass for UTF-8 (or ASCII) although they mean other text.
_DECLARED_FIRST = ("utf_16", "utf_32", "iso2022", "utf_7")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A non-body part. ``size`` counts decoded bytes; ``inline`` parts are shown in the
    body (usually images referenced as ``cid:<content_id>``)."""

    filename: str | None
    mime_type: str
    size: int
    inline: bool
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """A received message. ``body_html`` is the sender's HTML, unsanitised; pass it
    through `sanitize_html` before showing it. ``body_text`` is derived from the
    HTML when the message has no text part."""

    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    body_text: str
    body_html: str | None
    attachments: tuple[Attachment, ...]


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse RFC 5322 bytes (Gmail's ``format=raw``, an SMTP DATA payload)."""
    message = _read(raw)
    text_part, html_part = _body_parts(message)
    body_html = _part_text(html_part) if html_part is not None else None
    if text_part is not None:
        body_text = _part_text(text_part)
    elif body_html is not None:
        body_text = html_to_text(body_html)
    else:
        body_text = ""
    senders = _addresses(message, "from")
    message_ids = parse_message_ids(_header(message, "message-id"))
    in_reply_to = parse_message_ids(_header(message, "in-reply-to"))
    return ParsedMessage(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(parse_message_ids(_header(message, "references"))),
        subject=" ".join((_header(message, "subject") or "").split()),
        from_=senders[0] if senders else None,
        reply_to=tuple(_addresses(message, "reply-to")),
        to=tuple(_addresses(message, "to")),
        cc=tuple(_addresses(message, "cc")),
        date=_date(_header(message, "date")),
        body_text=body_text,
        body_html=body_html,
        attachments=tuple(_attachments(message, {id(text_part), id(html_part)})),
    )


def _read(raw: bytes) -> Message:
    # compat32 keeps headers as text: the structured parser of the newer policies
    # raises on malformed headers even while reading the message.
    parser = BytesParser(policy=policy.compat32)
    for headers_only in (False, True):
        # The MIME structure can be unreadable (an RFC 2231 boundary in a bogus
        # charset); read headers-only, the whole body becomes the message's text.
        with suppress(Exception):
            return parser.parsebytes(raw, headersonly=headers_only)
    fallback = Message()
    fallback.set_payload(raw.decode("ascii", "surrogateescape"))
    return fallback


def decode_text(data: bytes, declared_charset: str | None) -> str:
    """Bytes of a text part as a string, whatever charset was (mis)declared.

    Valid UTF-8 wins over a declared 8-bit charset: mail labelled latin-1 but
    written in UTF-8 is common, while text in a legacy charset is practically never
    valid UTF-8. Then the declared charset, with windows-1252 standing in for
    latin-1 and ASCII as every browser does; then windows-1252; latin-1 last, as it
    decodes anything. Charsets whose bytes can look like UTF-8 (UTF-16/32, the
    7-bit ISO-2022 and UTF-7) are tried before UTF-8.
    """
    declared = _codec_name(declared_charset)
    if declared in {"ascii", "iso8859_1", "latin_1"}:
        declared = "cp1252"
    if data.isascii() and not (declared and declared.startswith(_DECLARED_FIRST)):
        return data.decode("ascii")
    attempts = ["utf-8", "cp1252"]
    if declared is not None:
        attempts.insert(0 if declared.startswith(_DECLARED_FIRST) else 1, declared)
    for codec in attempts:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _codec_name(charset: str | None) -> str | None:
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _SUPERSETS.get(label, label)
    try:
        codec = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # codecs also knows bytes-to-bytes transforms ("base64", "zlib"): not charsets.
    return codec.name.replace("-", "_") if getattr(codec, "_is_text_encoding", True) else None


def _header(message: Message, name: str) -> str | None:
    """A header's value with RFC 2047 encoded-words and raw 8-bit text decoded."""
    value = message.get(name)
    return None if value is None else _decode_header_value(value)


def _decode_header_value(value: str | Header) -> str:
    try:
        chunks = decode_header(value)
    except Exception:  # malformed encoded-words: keep the text as it is
        return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    decoded: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            decoded.append(chunk)
        else:
            # "unknown-8bit" is what email calls raw bytes in a header: mostly UTF-8.
            declared = None if charset in (None, "unknown-8bit") else charset
            decoded.append(decode_text(chunk, declared))
    return "".join(decoded)


def _addresses(message: Message, name: str) -> list[Address]:
    values = message.get_all(name) or []
    # Encoded-words are decoded after splitting, so that a comma inside one ("=2C")
    # cannot split an address; raw 8-bit headers have to be decoded first.
    raw = [value if isinstance(value, str) else _decode_header_value(value) for value in values]
    return [
        Address(address=address.strip(), name=" ".join(_decode_header_value(display).split()))
        for display, address in getaddresses(raw)
        if address.strip()
    ]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" means "zone unknown" (RFC 5322 §3.3); UTC is the honest reading.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _body_parts(message: Message) -> tuple[Message | None, Message | None]:
    """The first text/plain and text/html parts that are the message's own text.

    Walks multiparts depth first (which puts the alternatives of the main body
    first) but not into attached messages, and skips parts that are files.
    """
    text_part: Message | None = None
    html_part: Message | None = None
    stack: list[Message] = [message]
    while stack and (text_part is None or html_part is None):
        part = stack.pop()
        mime_type = _content_type(part)
        if part.is_multipart():
            if mime_type != "message/rfc822":
                stack.extend(reversed(_children(part)))
            continue
        if _disposition(part) == "attachment" or _filename(part) is not None:
            continue
        if mime_type == "text/plain" and text_part is None:
            text_part = part
        elif mime_type == "text/html" and html_part is None:
            html_part = part
        elif part is message and mime_type.startswith(("text/", "multipart/")):
            # A single part of another text type, or a multipart whose boundary never
            # came: its payload is the only text there is.
            text_part = part
    return text_part, html_part


def _children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return (
        [child for child in payload if isinstance(child, Message)]
        if isinstance(payload, list)
        else []
    )


def _part_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # broken transfer encoding
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # unparseable Content-Type parameters
        charset = None
    text = decode_text(_part_bytes(part), charset)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _attachments(message: Message, body_part_ids: set[int]) -> list[Attachment]:
    found: list[Attachment] = []
    stack: list[Message] = [message]
    while stack:
        part = stack.pop()
        mime_type = _content_type(part)
        if part.is_multipart():
            if mime_type == "message/rfc822":
                found.append(_attachment(part, mime_type))
            else:
                stack.extend(reversed(_children(part)))
            continue
        if mime_type.startswith("multipart/"):
            continue  # a multipart whose boundary never came: structure, not a file
        if id(part) in body_part_ids or _is_unnamed_inline_text(part, mime_type):
            # An unnamed text part that is not the chosen body (a list footer, Apple
            # Mail's text-image-text) belongs to the message, not a file.
            continue
        found.append(_attachment(part, mime_type))
    return found


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # unparseable Content-Type
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # unparseable Content-Disposition
        return None


def _is_unnamed_inline_text(part: Message, mime_type: str) -> bool:
    return (
        mime_type in {"text/plain", "text/html"}
        and _filename(part) is None
        and _disposition(part) != "attachment"
    )


def _attachment(part: Message, mime_type: str) -> Attachment:
    size = _rfc822_size(part) if mime_type == "message/rfc822" else len(_part_bytes(part))
    content_id = (_header(part, "content-id") or "").strip().strip("<>").strip() or None
    disposition = _disposition(part)
    return Attachment(
        filename=_filename(part),
        mime_type=mime_type,
        size=size,
        # An undispositioned part with a Content-ID is an image the HTML refers to.
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        content_id=content_id,
    )


def _rfc822_size(part: Message) -> int:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        try:
            return len(payload[0].as_bytes(policy=policy.compat32))
        except Exception:  # a message that cannot be re-serialised
            return 0
    return len(_part_bytes(part))


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # unparseable parameters
        return None
    if not name:
        return None
    # Outlook and others put RFC 2047 encoded-words in filename parameters.
    return _decode_header_value(name) if "=?" in name else name

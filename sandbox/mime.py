"""RFC 822 handling: parse, patch headers byte-exactly, render Gmail's JSON parts, build replies."""

from __future__ import annotations

import base64
import html
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any

_PARSER = BytesParser(policy=policy.default)
_MSGID = re.compile(r"<[^<>\s]+>")
_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def parse(raw: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def b64url(data: bytes) -> str:
    """base64url with padding, as Gmail writes `raw` and `data`."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Tolerant: either alphabet, padding optional."""
    cleaned = text.strip().replace("+", "-").replace("/", "_")
    cleaned += "=" * (-len(cleaned) % 4)
    return base64.urlsafe_b64decode(cleaned)


def message_ids(value: str | None) -> list[str]:
    return _MSGID.findall(value or "")


def normalize_subject(subject: str | None) -> str:
    return _SPACE.sub(" ", _PREFIX.sub("", subject or "")).strip().lower()


def header(message: Message, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else str(value)


def addresses(message: Message, *names: str) -> list[str]:
    values: list[str] = []
    for name in names:
        values.extend(str(v) for v in message.get_all(name, []))
    return [addr.lower() for _, addr in getaddresses(values) if addr]


def new_message_id(domain: str = "mail.gmail.com") -> str:
    return f"<CA+{secrets.token_urlsafe(24)}@{domain}>"


# --- byte-level header edits: the body and existing headers stay exactly as sent -------------


def _split_head(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (header block, separator, body); the newline style is whatever the sender used."""
    found = [(raw.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if raw.find(sep) != -1]
    if not found:
        return raw, b"", b""
    index, separator = min(found)
    return raw[:index], separator, raw[index + len(separator) :]


def _newline(raw: bytes) -> bytes:
    return b"\r\n" if b"\r\n" in raw[:4096] else b"\n"


def prepend_headers(raw: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    newline = _newline(raw)
    prefix = b"".join(f"{name}: {value}".encode() + newline for name, value in headers)
    return prefix + raw


def remove_headers(raw: bytes, names: Iterable[str]) -> bytes:
    """Drop every occurrence (with folded continuation lines) of the named headers."""
    wanted = {name.lower().encode() for name in names}
    head, separator, body = _split_head(raw)
    newline = _newline(raw)
    kept: list[bytes] = []
    skipping = False
    for line in head.split(newline):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in wanted
        if not skipping:
            kept.append(line)
    return newline.join(kept) + separator + body


def split_multipart(body: bytes, boundary: str) -> list[tuple[bytes, bytes]]:
    """(headers, content) of each part, byte for byte: an uploaded message must not be
    re-serialised on its way in."""
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, _, content = _split_head(chunk)
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        parts.append((head, content))
    return parts


# --- Gmail's JSON view of a message ----------------------------------------------------------


def _escape_snippet(text: str) -> str:
    # Gmail writes numeric entities for quotes (&#39;), which html.escape does not.
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _is_attachment(part: Message) -> bool:
    if part.is_multipart():
        return False
    if part.get_filename():
        return True
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment":
        return True
    return part.get_content_maintype() not in ("text", "message")


def _body_text(message: EmailMessage) -> str:
    plain: str | None = None
    rich: str | None = None
    for part in message.walk():
        if part.is_multipart() or _is_attachment(part):
            continue
        try:
            content = part.get_content()
        except (LookupError, ValueError):
            continue
        if not isinstance(content, str):
            continue
        if part.get_content_type() == "text/plain" and plain is None:
            plain = content
        elif part.get_content_type() == "text/html" and rich is None:
            rich = html.unescape(_TAG.sub(" ", content))
    return plain if plain is not None else (rich or "")


def snippet(message: EmailMessage, limit: int = 200) -> str:
    text = _SPACE.sub(" ", _body_text(message)).strip()
    if len(text) > limit:
        cut = text[:limit]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return _escape_snippet(text)


def _headers_json(part: Message, only: set[str] | None) -> list[dict[str, str]]:
    items = []
    for name, value in part.items():
        if only is not None and name.lower() not in only:
            continue
        items.append({"name": name, "value": str(value)})
    return items


def _decoded(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


MintAttachmentId = Callable[[str], str]


def payload_json(message: EmailMessage, mint_attachment_id: MintAttachmentId) -> dict[str, Any]:
    """The `format=full` payload tree with Gmail's partId numbering."""

    def render(part: Message, part_id: str) -> dict[str, Any]:
        node: dict[str, Any] = {
            "partId": part_id,
            "mimeType": part.get_content_type(),
            "filename": part.get_filename() or "",
        }
        headers = _headers_json(part, None)
        if headers:
            node["headers"] = headers
        if part.is_multipart():
            node["body"] = {"size": 0}
            children = part.get_payload()
            assert isinstance(children, list)
            prefix = f"{part_id}." if part_id else ""
            node["parts"] = [render(child, f"{prefix}{i}") for i, child in enumerate(children)]
            return node
        data = _decoded(part)
        if _is_attachment(part):
            node["body"] = {"attachmentId": mint_attachment_id(part_id), "size": len(data)}
        elif data:
            node["body"] = {"size": len(data), "data": b64url(data)}
        else:
            node["body"] = {"size": 0}
        return node

    return render(message, "")


def metadata_payload(message: EmailMessage, only: Iterable[str] | None) -> dict[str, Any]:
    wanted = {name.lower() for name in only} if only else None
    node: dict[str, Any] = {"mimeType": message.get_content_type()}
    headers = _headers_json(message, wanted)
    if headers:
        node["headers"] = headers
    return node


def find_part(message: EmailMessage, part_id: str) -> Message | None:
    part: Message = message
    if part_id == "":
        return part
    for index in part_id.split("."):
        children = part.get_payload()
        if not part.is_multipart() or not isinstance(children, list):
            return None
        position = int(index)
        if position >= len(children):
            return None
        child = children[position]
        if not isinstance(child, Message):
            return None
        part = child
    return part


def part_data(part: Message) -> bytes:
    return _decoded(part)


# --- building mail the way a person's mail client would --------------------------------------


@dataclass(frozen=True)
class Attachment:
    filename: str
    mime_type: str
    content: bytes


def _gmail_date(moment: datetime) -> str:
    # Gmail's attribution line: "On Tue, Dec 3, 2024 at 6:49 PM".
    hour = moment.strftime("%I").lstrip("0") or "12"
    return (
        f"{moment.strftime('%a')}, {moment.strftime('%b')} {moment.day}, {moment.year} at "
        f"{hour}:{moment.strftime('%M %p')}"
    )


def _quote_text(text: str) -> str:
    return "\n".join(">" if not line else f"> {line}" for line in text.splitlines())


def build_message(
    *,
    sender: str,
    to: list[str],
    subject: str,
    text: str,
    html_body: str | None,
    date: datetime,
    message_id: str,
    cc: list[str] | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    attachments: list[Attachment] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    for name, value in (extra_headers or {}).items():
        message[name] = value
    message["MIME-Version"] = "1.0"
    message.set_content(text)
    if html_body is not None:
        message.add_alternative(html_body, subtype="html")
    for attachment in attachments or []:
        maintype, _, subtype = attachment.mime_type.partition("/")
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return message.as_bytes()


@dataclass(frozen=True)
class ReplyParts:
    to: list[str]
    cc: list[str]
    subject: str
    in_reply_to: str | None
    references: str | None
    text: str
    html_body: str


def reply_parts(
    parent: EmailMessage,
    *,
    replier: str,
    text: str,
    html_body: str | None,
    reply_all: bool,
    parent_date: datetime,
) -> ReplyParts:
    """Recipients, threading headers and a quoted body as Gmail's web client writes them."""
    parent_from = header(parent, "From") or ""
    reply_to = header(parent, "Reply-To")
    author_name, author_addr = parseaddr(parent_from)
    to_values = addresses(parent, "Reply-To") if reply_to else [author_addr.lower()]
    me = replier.lower()
    if author_addr.lower() == me:
        # Replying to one's own message goes to its original recipients, as Gmail does.
        to_values = addresses(parent, "To")
    cc_values: list[str] = []
    if reply_all:
        others = addresses(parent, "To", "Cc")
        cc_values = [a for a in others if a != me and a not in to_values]
    parent_id = header(parent, "Message-ID")
    parent_refs = header(parent, "References")
    if parent_refs is None:
        in_reply = message_ids(header(parent, "In-Reply-To"))
        parent_refs = in_reply[0] if len(in_reply) == 1 else None
    references = " ".join(v for v in (parent_refs, parent_id) if v) or None
    subject = header(parent, "Subject") or ""
    if not re.match(r"^\s*re\s*:", subject, re.IGNORECASE):
        subject = f"Re: {subject}"
    attribution_who = f"{author_name} <{author_addr}>" if author_name else f"<{author_addr}>"
    attribution = f"On {_gmail_date(parent_date)} {attribution_who} wrote:"
    parent_text = _body_text(parent)
    parent_html = _parent_html(parent) or html.escape(parent_text).replace("\n", "<br>\n")
    quoted_text = f"{text.rstrip()}\n\n{attribution}\n\n{_quote_text(parent_text.rstrip())}\n"
    own_html = html_body if html_body is not None else html.escape(text).replace("\n", "<br>\n")
    quoted_html = (
        f'<div dir="ltr">{own_html}</div><br><div class="gmail_quote">'
        f'<div dir="ltr" class="gmail_attr">{html.escape(attribution)}<br></div>'
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
        f"{parent_html}</blockquote></div>\n"
    )
    return ReplyParts(
        to=to_values,
        cc=cc_values,
        subject=subject,
        in_reply_to=parent_id,
        references=references,
        text=quoted_text,
        html_body=quoted_html,
    )


def _parent_html(parent: EmailMessage) -> str | None:
    for part in parent.walk():
        if part.get_content_type() == "text/html" and not _is_attachment(part):
            try:
                content = part.get_content()
            except (LookupError, ValueError):
                return None
            return content if isinstance(content, str) else None
    return None

"""Building outgoing MIME messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as _HeaderAddress
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from app.mail.addresses import Address, parse_address, parse_address_list, reject_header_injection
from app.mail.conversation import validate_message_id

__all__ = ["build_message", "to_bytes"]


class _MessageIdListHeader(UnstructuredHeader, BaseHeader):
    """In-Reply-To / References: folded between ids, never RFC 2047-encoded.

    The stock policy treats these headers as unstructured text and encodes any id
    longer than a line (Gmail's are ~70 characters) as an encoded-word, which
    breaks threading in every client.
    """

    def fold(self, *, policy: Any) -> str:
        max_length = policy.max_line_length or 998
        lines: list[str] = []
        current = f"{self.name}:"
        for message_id in str(self).split():
            if (
                len(current) + 1 + len(message_id) > max_length
                and current.strip() != f"{self.name}:"
            ):
                lines.append(current)
                current = ""
            current += f" {message_id}"
        lines.append(current)
        return str(policy.linesep.join(lines) + policy.linesep)


def _header_registry() -> HeaderRegistry:
    registry = HeaderRegistry(base_class=BaseHeader, default_class=UnstructuredHeader)
    registry.map_to_type("in-reply-to", _MessageIdListHeader)
    registry.map_to_type("references", _MessageIdListHeader)
    return registry


# CRLF line ends, headers RFC 2047-encoded, bodies 7-bit (quoted-printable or base64
# as needed), so that the bytes pass any SMTP server, 8BITMIME or not.
_OUTGOING = policy.SMTP.clone(cte_type="7bit", header_factory=_header_registry())


def build_message(
    *,
    from_address: str,
    from_name: str | None,
    to: Sequence[str | Address],
    cc: Sequence[str | Address] = (),
    bcc: Sequence[str | Address] = (),
    subject: str,
    body_text: str | None,
    body_html: str | None,
    message_id: str,
    reply_to: str | Address | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    date: datetime | None = None,
    include_bcc_header: bool = False,
) -> EmailMessage:
    """A complete message ready for `to_bytes`.

    Text and HTML make a multipart/alternative; one of them a single part. Every
    header value is checked for CR/LF/NUL and every address validated
    (`MailInputError`). ``include_bcc_header`` is for Gmail's send API, which takes
    recipients from the headers and strips Bcc itself; over SMTP leave it off and
    give the Bcc addresses to the envelope instead.
    """
    sender = parse_address("from", from_address)
    sender_name = reject_header_injection("from", from_name or "")
    to_list = parse_address_list("to", to)
    cc_list = parse_address_list("cc", cc)
    bcc_list = parse_address_list("bcc", bcc)
    if not (to_list or cc_list or bcc_list):
        raise ValueError("a message needs at least one recipient")
    reject_header_injection("subject", subject)

    message = EmailMessage(policy=_OUTGOING)
    message["From"] = _header_address(Address(sender.address, sender_name))
    if to_list:
        message["To"] = [_header_address(item) for item in to_list]
    if cc_list:
        message["Cc"] = [_header_address(item) for item in cc_list]
    if bcc_list and include_bcc_header:
        message["Bcc"] = [_header_address(item) for item in bcc_list]
    if reply_to is not None:
        message["Reply-To"] = _header_address(parse_address_list("reply_to", [reply_to])[0])
    message["Subject"] = subject
    message["Date"] = format_datetime(_aware(date or datetime.now(UTC)))
    message["Message-ID"] = validate_message_id("message_id", message_id)
    if in_reply_to is not None:
        message["In-Reply-To"] = validate_message_id("in_reply_to", in_reply_to)
    if references:
        message["References"] = " ".join(
            validate_message_id("references", item) for item in references
        )
    _set_body(message, body_text, body_html)
    return message


def to_bytes(message: EmailMessage) -> bytes:
    """The message as SMTP-safe bytes: CRLF line ends, 7-bit clean, lines under 998."""
    return message.as_bytes(policy=_OUTGOING)


def _set_body(message: EmailMessage, body_text: str | None, body_html: str | None) -> None:
    if body_html is None:
        message.set_content(body_text or "", subtype="plain", charset="utf-8")
        return
    if body_text is None:
        message.set_content(body_html, subtype="html", charset="utf-8")
        return
    message.set_content(body_text, subtype="plain", charset="utf-8")
    message.add_alternative(body_html, subtype="html", charset="utf-8")
    for part in message.iter_parts():
        # add_alternative stamps MIME-Version on the sub-part; it belongs on the top only.
        del part["MIME-Version"]


def _header_address(address: Address) -> _HeaderAddress:
    return _HeaderAddress(display_name=address.name, addr_spec=address.address)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the Date of a message must be timezone-aware")
    return moment

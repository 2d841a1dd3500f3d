"""Mail addresses: validation of what users type, and header-injection checks.

Everything a user supplies that ends up in a header goes through here, so that a
CR/LF (a new header, or the body) or a NUL can never be smuggled into a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from email_validator import EmailNotValidError, validate_email

__all__ = [
    "Address",
    "MailInputError",
    "parse_address",
    "parse_address_list",
    "reject_header_injection",
]

# CR and LF end a header line; NUL is refused by many MTAs and truncates in C code.
_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
# "Name <local@domain>"; the name may be empty or quoted.
# RFC 5322 "specials" force a display name into a quoted-string.
_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')
_NAME_ADDR = re.compile(r"^(?P<name>.*?)\s*<(?P<addr>[^<>]*)>$", re.DOTALL)


class MailInputError(ValueError):
    """A user-supplied value cannot go into a mail header (a `422`, not a bug)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: an optional display name and an addr-spec."""

    address: str
    name: str = ""

    def __str__(self) -> str:
        """The address as one writes it: ``"Müller, Jürgen" <j@x.de>`` (unencoded)."""
        if not self.name:
            return self.address
        name = self.name
        if _NEEDS_QUOTES.search(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.address}>"


def reject_header_injection(field: str, value: str) -> str:
    """Return ``value`` unchanged, or raise `MailInputError` if it holds CR, LF or NUL."""
    if _FORBIDDEN_IN_HEADER.search(value):
        raise MailInputError(field, "must not contain line breaks or NUL characters")
    return value


def parse_address(field: str, value: str) -> Address:
    """Validate ``"Name <a@b.com>"`` or ``a@b.com`` and return it normalised.

    The domain is lower-cased and IDNA-encoded (what goes on the wire); local
    parts must be ASCII, since messages are sent without SMTPUTF8.
    """
    reject_header_injection(field, value)
    text = value.strip()
    name = ""
    addr = text
    match = _NAME_ADDR.match(text)
    if match:
        name = _unquote_display_name(match.group("name").strip())
        addr = match.group("addr").strip()
        if "<" in name or ">" in name:
            raise MailInputError(field, f"{value!r} is not a valid address")
    if not addr:
        raise MailInputError(field, "address is empty")
    try:
        validated = validate_email(addr, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise MailInputError(field, f"{addr!r} is not a valid address: {error}") from None
    return Address(address=validated.ascii_email or validated.normalized, name=name)


def parse_address_list(field: str, values: Iterable[str | Address]) -> list[Address]:
    """Validate every item of a To/Cc/Bcc list; `Address` items are re-checked too."""
    addresses: list[Address] = []
    for value in values:
        if isinstance(value, Address):
            reject_header_injection(field, value.name)
            addresses.append(replace(parse_address(field, value.address), name=value.name))
        else:
            addresses.append(parse_address(field, value))
    return addresses


def _unquote_display_name(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name

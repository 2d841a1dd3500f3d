"""Threading helpers per RFC 5322 §3.6.4/§3.6.5: Message-IDs, References, reply subjects."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence

from app.mail.addresses import MailInputError, reject_header_injection

__all__ = [
    "MAX_REFERENCES",
    "build_references",
    "make_message_id",
    "normalize_subject",
    "parse_message_ids",
    "reply_subject",
    "validate_message_id",
]

# A long conversation would otherwise grow References without bound; the first id
# (the conversation root) and the most recent ones are what clients thread on.
MAX_REFERENCES = 20

_MESSAGE_ID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")

# Reply prefixes across common locales: Re, Aw (de), Sv (sv/da/no), Vs (fi), Antw (nl),
# Réf/Ref (fr), Rif (it), Res (pt), Odp (pl); an optional counter as in "Re[2]:";
# the colon may be a full-width one (CJK clients).
_REPLY_PREFIX = r"(?:re|aw|sv|vs|antw|antwort|r[ée]f|rif|res|odp)"
_FORWARD_PREFIX = r"(?:fwd?|wg|tr|enc|rv)"
_LEADING_REPLY = re.compile(
    rf"^\s*{_REPLY_PREFIX}\s*(?:\[\d+\]|\(\d+\))?\s*[:\uff1a]\s*", re.IGNORECASE
)
_LEADING_ANY = re.compile(
    rf"^\s*(?:{_REPLY_PREFIX}|{_FORWARD_PREFIX})\s*(?:\[\d+\]|\(\d+\))?\s*[:\uff1a]\s*",
    re.IGNORECASE,
)


def make_message_id(domain: str) -> str:
    """A fresh, globally unique ``<random@domain>`` (128 random bits; no host or pid leaked)."""
    if not _DOMAIN.match(domain):
        raise ValueError(f"not a usable Message-ID domain: {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain}>"


def validate_message_id(field: str, value: str) -> str:
    """Return ``value`` if it is one ``<left@right>`` id, else raise `MailInputError`."""
    reject_header_injection(field, value)
    if not _MESSAGE_ID.fullmatch(value.strip()):
        raise MailInputError(field, f"{value!r} is not a Message-ID of the form <left@right>")
    return value.strip()


def parse_message_ids(value: str | None) -> list[str]:
    """Every ``<id>`` in a Message-ID / In-Reply-To / References header value, in order.

    Tolerates what real clients send: comments, commas, folding, and bare ids
    without angle brackets (which are given their brackets back).
    """
    if not value:
        return []
    ids = _MESSAGE_ID.findall(value)
    if ids:
        return ids
    return [f"<{token}>" for token in re.split(r"[\s,]+", value) if _bare_id(token)]


def build_references(
    parent_references: Sequence[str],
    parent_message_id: str,
    *,
    parent_in_reply_to: Sequence[str] = (),
    limit: int = MAX_REFERENCES,
) -> list[str]:
    """The ``References`` of a reply to a parent message (RFC 5322 §3.6.4).

    The parent's References followed by its Message-ID; without References, a
    single-id In-Reply-To stands in for them. Duplicates are dropped, and past
    ``limit`` ids the first (the conversation root) and the latest ones are kept.
    """
    if limit < 2:
        raise ValueError("limit must keep at least the root and the parent")
    ancestors = _flatten_ids(parent_references)
    if not ancestors:
        in_reply_to = _flatten_ids(parent_in_reply_to)
        if len(in_reply_to) == 1:
            ancestors = in_reply_to
    parent = parse_message_ids(parent_message_id)
    if len(parent) != 1:
        raise ValueError(f"not a single Message-ID: {parent_message_id!r}")
    # The parent must come last even if a broken client already listed it.
    chain = [*_dedupe(ancestors, exclude=parent[0]), parent[0]]
    if len(chain) > limit:
        chain = [chain[0], *chain[-(limit - 1) :]]
    return chain


def reply_subject(original: str) -> str:
    """``Re: <original>`` without stacking ("RE: AW: x" becomes "Re: x")."""
    base = _strip_prefixes(original, _LEADING_REPLY)
    return f"Re: {base}" if base else "Re:"


def normalize_subject(subject: str) -> str:
    """The subject without any reply/forward prefixes and with whitespace collapsed.

    What Outlook calls the thread topic: equal for every message of a conversation.
    """
    return _strip_prefixes(subject, _LEADING_ANY)


def _strip_prefixes(subject: str, prefix: re.Pattern[str]) -> str:
    text = " ".join(subject.split())
    while True:
        stripped = prefix.sub("", text, count=1)
        if stripped == text:
            return text
        text = stripped


def _flatten_ids(values: Iterable[str]) -> list[str]:
    return [message_id for value in values for message_id in parse_message_ids(value)]


def _dedupe(ids: Iterable[str], *, exclude: str) -> list[str]:
    seen = {exclude}
    unique: list[str] = []
    for message_id in ids:
        if message_id not in seen:
            seen.add(message_id)
            unique.append(message_id)
    return unique


def _bare_id(token: str) -> bool:
    left, at, right = token.partition("@")
    return bool(
        at and left and right and "@" not in right and "<" not in token and ">" not in token
    )

"""Mailboxes: messages as RFC 822 bytes, Gmail's threading rules, labels and history records."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any

from sandbox import mime
from sandbox.clock import Clock

HEX_ID = re.compile(r"^[0-9a-f]{1,32}$")

# Labels every Gmail account has; user labels may be added freely through the control API.
SYSTEM_LABELS = (
    "INBOX",
    "SENT",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "TRASH",
    "SPAM",
    "DRAFT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    label_ids: list[str]
    internal_date: int
    history_id: int
    rfc822_id: str | None
    parsed: EmailMessage

    @property
    def subject(self) -> str:
        return mime.header(self.parsed, "Subject") or ""

    def ref(self) -> dict[str, str]:
        return {"id": self.id, "threadId": self.thread_id}

    def summary(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "threadId": self.thread_id}
        if self.label_ids:
            item["labelIds"] = list(self.label_ids)
        return item


@dataclass
class HistoryRecord:
    id: int
    at: float
    message: dict[str, Any]
    kind: str | None  # messageAdded, messageDeleted, labelAdded, labelRemoved; None = messages only
    label_ids: list[str] = field(default_factory=list)

    def json(self, types: set[str] | None) -> dict[str, Any] | None:
        ref = {"id": self.message["id"], "threadId": self.message["threadId"]}
        record: dict[str, Any] = {"id": str(self.id), "messages": [ref]}
        if self.kind is None:
            return None if types else record
        if types is not None and self.kind not in types:
            return None
        if self.kind == "messageAdded":
            record["messagesAdded"] = [{"message": self.message}]
        elif self.kind == "messageDeleted":
            record["messagesDeleted"] = [{"message": self.message}]
        elif self.kind == "labelAdded":
            record["labelsAdded"] = [{"message": self.message, "labelIds": self.label_ids}]
        else:
            record["labelsRemoved"] = [{"message": self.message, "labelIds": self.label_ids}]
        return record


@dataclass
class Mailbox:
    email: str
    name: str | None
    history_id: int
    history_floor: int
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    threads: dict[str, list[str]] = field(default_factory=dict)
    by_rfc822: dict[str, list[str]] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    user_labels: set[str] = field(default_factory=set)
    # Set by the control API: the account has no Gmail (400 failedPrecondition on every call).
    gmail_disabled: bool = False

    def display(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

    def thread_messages(self, thread_id: str) -> list[StoredMessage]:
        return [self.messages[m] for m in self.threads.get(thread_id, []) if m in self.messages]


@dataclass
class OutgoingMail:
    """One message handed to the outside world: via the Gmail API, a control route or SMTP."""

    seq: int
    via: str
    envelope_from: str
    rcpt_tos: list[str]
    delivered_to: list[str]
    external: list[str]
    raw: bytes
    at: float

    def json(self) -> dict[str, Any]:
        parsed = mime.parse(self.raw)
        return {
            "seq": self.seq,
            "via": self.via,
            "envelope_from": self.envelope_from,
            "rcpt_tos": self.rcpt_tos,
            "delivered_to": self.delivered_to,
            "external": self.external,
            "message_id": mime.header(parsed, "Message-ID"),
            "subject": mime.header(parsed, "Subject"),
            "raw": self.raw.decode("utf-8", errors="replace"),
            "raw_b64": mime.b64url(self.raw),
            "at": datetime.fromtimestamp(self.at, tz=UTC).isoformat(),
        }


ChangeListener = Callable[[Mailbox, int, list[str]], None]


class MailStore:
    """All mailboxes. Callers hold the sandbox lock; every change fires `on_change`."""

    def __init__(self, clock: Clock, rng: random.Random, messages_only_rate: float) -> None:
        self._clock = clock
        self._rng = rng
        self._messages_only_rate = messages_only_rate
        self._listeners: list[ChangeListener] = []
        self.accounts: dict[str, Mailbox] = {}
        self.outgoing: list[OutgoingMail] = []
        self._last_id = 0

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def reset(self) -> None:
        self.accounts.clear()
        self.outgoing.clear()

    # --- accounts ---------------------------------------------------------------------------

    def account(self, email: str) -> Mailbox | None:
        return self.accounts.get(email.strip().lower())

    def create_account(self, email: str, name: str | None = None) -> tuple[Mailbox, bool]:
        key = email.strip().lower()
        existing = self.accounts.get(key)
        if existing is not None:
            if name and not existing.name:
                existing.name = name
            return existing, False
        start = self._rng.randint(1_000, 900_000)
        mailbox = Mailbox(email=key, name=name, history_id=start, history_floor=start)
        self.accounts[key] = mailbox
        return mailbox, True

    # --- ids and history ----------------------------------------------------------------------

    def _new_message_id(self) -> str:
        # Gmail ids are hex, time-ordered: milliseconds in the high bits, a counter below.
        candidate = (self._clock.now_ms() << 20) | self._rng.getrandbits(20)
        self._last_id = max(candidate, self._last_id + 1)
        return format(self._last_id, "x")

    def _record(
        self,
        mailbox: Mailbox,
        message: StoredMessage,
        kind: str | None,
        label_ids: list[str] | None = None,
    ) -> HistoryRecord:
        if kind is not None and self._rng.random() < self._messages_only_rate:
            # Gmail sometimes writes records that carry only `messages` (changes of other kinds).
            self._append(mailbox, message, None, None)
        return self._append(mailbox, message, kind, label_ids)

    def _append(
        self,
        mailbox: Mailbox,
        message: StoredMessage,
        kind: str | None,
        label_ids: list[str] | None,
    ) -> HistoryRecord:
        mailbox.history_id += self._rng.randint(1, 12)
        message.history_id = mailbox.history_id
        record = HistoryRecord(
            id=mailbox.history_id,
            at=self._clock.now(),
            message=message.summary(),
            kind=kind,
            label_ids=list(label_ids or []),
        )
        mailbox.history.append(record)
        labels = list(message.label_ids) + list(label_ids or [])
        for listener in self._listeners:
            listener(mailbox, record.id, labels)
        return record

    def prune_history(self, mailbox: Mailbox, retention: float) -> None:
        cutoff = self._clock.now() - retention
        keep_from = 0
        while keep_from < len(mailbox.history) and mailbox.history[keep_from].at < cutoff:
            keep_from += 1
        if keep_from:
            mailbox.history_floor = max(mailbox.history_floor, mailbox.history[keep_from - 1].id)
            del mailbox.history[:keep_from]

    def expire_history(self, mailbox: Mailbox, before: int | None = None) -> int:
        """Forget records up to `before` (default: all); older start ids then give 404."""
        limit = mailbox.history_id if before is None else before
        mailbox.history = [r for r in mailbox.history if r.id > limit]
        mailbox.history_floor = max(mailbox.history_floor, limit)
        return mailbox.history_floor

    # --- messages -----------------------------------------------------------------------------

    def insert(
        self,
        mailbox: Mailbox,
        raw: bytes,
        labels: list[str],
        thread_id: str | None,
        *,
        internal_date: int | None = None,
    ) -> StoredMessage:
        parsed = mime.parse(raw)
        message_id = self._new_message_id()
        rfc822_id = mime.header(parsed, "Message-ID")
        message = StoredMessage(
            id=message_id,
            thread_id=thread_id or message_id,
            raw=raw,
            label_ids=_unique(labels),
            internal_date=internal_date if internal_date is not None else self._clock.now_ms(),
            history_id=mailbox.history_id,
            rfc822_id=rfc822_id.strip() if rfc822_id else None,
            parsed=parsed,
        )
        mailbox.messages[message.id] = message
        mailbox.threads.setdefault(message.thread_id, []).append(message.id)
        for ref in mime.message_ids(message.rfc822_id):
            mailbox.by_rfc822.setdefault(ref, []).append(message.id)
        self._record(mailbox, message, "messageAdded")
        return message

    def modify_labels(
        self, mailbox: Mailbox, message: StoredMessage, add: list[str], remove: list[str]
    ) -> None:
        added = [label for label in _unique(add) if label not in message.label_ids]
        removed = [label for label in _unique(remove) if label in message.label_ids]
        for label in added:
            message.label_ids.append(label)
            if label not in SYSTEM_LABELS:
                mailbox.user_labels.add(label)
        for label in removed:
            message.label_ids.remove(label)
        if added:
            self._record(mailbox, message, "labelAdded", added)
        if removed:
            self._record(mailbox, message, "labelRemoved", removed)

    def touch(self, mailbox: Mailbox, message: StoredMessage) -> HistoryRecord:
        return self._append(mailbox, message, None, None)

    def delete(self, mailbox: Mailbox, message: StoredMessage) -> None:
        del mailbox.messages[message.id]
        thread = mailbox.threads.get(message.thread_id, [])
        if message.id in thread:
            thread.remove(message.id)
        if not thread:
            mailbox.threads.pop(message.thread_id, None)
        for ref in mime.message_ids(message.rfc822_id):
            ids = mailbox.by_rfc822.get(ref, [])
            if message.id in ids:
                ids.remove(message.id)
        self._record(mailbox, message, "messageDeleted")

    # --- threading ----------------------------------------------------------------------------

    def api_thread(
        self, mailbox: Mailbox, parsed: EmailMessage, thread_id: str | None
    ) -> str | None:
        """Gmail's rule for `messages.send`: threadId, plus matching References or Subject."""
        if thread_id is None:
            return None
        members = mailbox.thread_messages(thread_id)
        refs = set(mime.message_ids(mime.header(parsed, "References")))
        refs |= set(mime.message_ids(mime.header(parsed, "In-Reply-To")))
        member_ids = {m.rfc822_id for m in members if m.rfc822_id}
        subject = mime.normalize_subject(mime.header(parsed, "Subject"))
        same_subject = any(mime.normalize_subject(m.subject) == subject for m in members)
        if refs & member_ids or same_subject:
            return thread_id
        return None

    def incoming_thread(self, mailbox: Mailbox, parsed: EmailMessage) -> str | None:
        """Gmail's rule for received mail: References naming a Message-ID in one of our threads,
        and an unchanged (normalised) subject."""
        refs = mime.message_ids(mime.header(parsed, "References"))
        if not refs:
            refs = mime.message_ids(mime.header(parsed, "In-Reply-To"))
        subject = mime.normalize_subject(mime.header(parsed, "Subject"))
        for ref in reversed(refs):
            for gmail_id in mailbox.by_rfc822.get(ref, []):
                known = mailbox.messages.get(gmail_id)
                if known is not None and mime.normalize_subject(known.subject) == subject:
                    return known.thread_id
        return None

    # --- sending and delivery -------------------------------------------------------------------

    def send(
        self, mailbox: Mailbox, raw: bytes, thread_id: str | None, *, via: str = "gmail"
    ) -> StoredMessage:
        """What `messages.send` does: complete the headers, store in SENT, deliver copies."""
        parsed = mime.parse(raw)
        additions: list[tuple[str, str]] = []
        if parsed.get("Message-ID") is None:
            additions.append(("Message-ID", mime.new_message_id()))
        if parsed.get("Date") is None:
            additions.append(("Date", format_datetime(self._clock.now_datetime())))
        if parsed.get("From") is None:
            additions.append(("From", mailbox.display()))
        if additions:
            raw = mime.prepend_headers(raw, additions)
            parsed = mime.parse(raw)
        recipients = _unique(mime.addresses(parsed, "To", "Cc", "Bcc"))
        chosen = self.api_thread(mailbox, parsed, thread_id)
        labels = ["SENT"]
        if mailbox.email in recipients:
            labels += ["INBOX", "UNREAD"]
        stored = self.insert(mailbox, raw, labels, chosen)
        others = [r for r in recipients if r != mailbox.email]
        if others:
            self.deliver(raw, mailbox.email, others, via=via)
        return stored

    def deliver(
        self, raw: bytes, envelope_from: str, rcpt_tos: list[str], *, via: str
    ) -> OutgoingMail:
        """Hand mail to its recipients: sandbox accounts get it in INBOX, others are logged."""
        visible = mime.remove_headers(raw, ["Bcc"])
        delivered: list[str] = []
        external: list[str] = []
        for rcpt in _unique(address.lower() for address in rcpt_tos):
            mailbox = self.accounts.get(rcpt)
            if mailbox is None:
                external.append(rcpt)
                continue
            self.receive(mailbox, visible, envelope_from)
            delivered.append(rcpt)
        entry = OutgoingMail(
            seq=len(self.outgoing) + 1,
            via=via,
            envelope_from=envelope_from,
            rcpt_tos=list(rcpt_tos),
            delivered_to=delivered,
            external=external,
            raw=visible,
            at=self._clock.now(),
        )
        self.outgoing.append(entry)
        return entry

    def receive(
        self, mailbox: Mailbox, raw: bytes, envelope_from: str, labels: list[str] | None = None
    ) -> StoredMessage:
        stamp = format_datetime(self._clock.now_datetime())
        traced = mime.prepend_headers(
            raw,
            [
                ("Delivered-To", mailbox.email),
                (
                    "Received",
                    f"by sandbox.mail.local with SMTP id {self._rng.getrandbits(48):x}; {stamp}",
                ),
                ("Return-Path", f"<{envelope_from}>"),
            ],
        )
        parsed = mime.parse(traced)
        thread_id = self.incoming_thread(mailbox, parsed)
        return self.insert(mailbox, traced, labels or ["INBOX", "UNREAD"], thread_id)

    def find_by_rfc822(self, rfc822_id: str) -> tuple[Mailbox, StoredMessage] | None:
        for mailbox in self.accounts.values():
            for gmail_id in mailbox.by_rfc822.get(rfc822_id, []):
                message = mailbox.messages.get(gmail_id)
                if message is not None:
                    return mailbox, message
        return None

    def find_outgoing(self, rfc822_id: str) -> OutgoingMail | None:
        for entry in reversed(self.outgoing):
            parsed = mime.parse(entry.raw)
            if rfc822_id in mime.message_ids(mime.header(parsed, "Message-ID")):
                return entry
        return None


def sender_address(parsed: EmailMessage) -> str:
    return parseaddr(mime.header(parsed, "From") or "")[1].lower()


def all_recipients(parsed: EmailMessage) -> list[str]:
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in parsed.get_all(name, [])]
    return [a.lower() for _, a in getaddresses(values) if a]


def _unique(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)

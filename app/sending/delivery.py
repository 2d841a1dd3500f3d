"""Sending, phase two: put a committed `queued` row on the wire and record the outcome.

`deliver_message` runs like a job: it never holds a database transaction across a
network call (on SQLite that would hold the one write lock for seconds, and
`MailboxAccess` needs it to mark a mailbox disconnected), so each state change is a
short `session_scope` of its own. The request and the reconciler both call it.

Routes:
- `gmail`: `users.messages.send` from the mailbox, retried on rate limits and 5xx
  within `RetryPolicy`; a 401 costs one token refresh (`MailboxAccess.call`).
- `default`: SMTP through `DEFAULT_SMTP_URL`, From `DEFAULT_FROM_ADDRESS`, Reply-To the
  rep. Taken when there is no usable mailbox, and when the mailbox's refresh token is
  refused during this very send (the switch is committed before the SMTP call, so a
  crash in between is never mistaken for a Gmail send).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import session_scope, utcnow
from app.google import GmailSession, GoogleError, RateLimited, Unavailable
from app.mail.addresses import MailInputError, parse_address
from app.mail.compose import build_message, to_bytes
from app.mail.conversation import parse_message_ids
from app.mailboxes.access import MailboxAccess, MailboxDisconnected
from app.mailboxes.models import Mailbox, MailboxStatus
from app.metrics import SENDS
from app.sending.repository import SendingRepository
from app.sending.retry import RetryPolicy
from app.sending.smtp import DefaultSender, SmtpDeliveryError
from app.threads.models import Message, MessageStatus, SentVia, Thread

__all__ = [
    "Delivery",
    "GmailIds",
    "default_sender_from",
    "deliver_message",
    "delivery_for",
    "find_in_gmail",
    "read_back_message_id",
    "record_failed",
    "record_gmail_sent",
]

logger = logging.getLogger("leadmail.sending")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a send needs besides its row: the database, Gmail, the default relay, patience."""

    sessionmaker: async_sessionmaker[AsyncSession]
    access: MailboxAccess
    default_sender: DefaultSender | None
    policy: RetryPolicy


@dataclass(frozen=True, slots=True)
class GmailIds:
    id: str
    thread_id: str


def delivery_for(state: Any) -> Delivery:
    """The delivery context of a running app (`app.state`, set up by its lifespan)."""
    return Delivery(
        sessionmaker=state.sessionmaker,
        access=state.mailbox_access,
        default_sender=getattr(state, "default_sender", None),
        policy=RetryPolicy.from_settings(state.settings),
    )


def default_sender_from(settings: Settings) -> DefaultSender | None:
    """The configured default sender, or None when either of its settings is missing.

    Raises ValueError for a malformed `DEFAULT_SMTP_URL` or `DEFAULT_FROM_ADDRESS`
    (call it at startup).
    """
    if not settings.default_smtp_url or not settings.default_from_address:
        return None
    try:
        from_address = parse_address("DEFAULT_FROM_ADDRESS", settings.default_from_address)
    except MailInputError as exc:
        raise ValueError(str(exc)) from exc
    return DefaultSender(
        settings.default_smtp_url,
        from_address.address,
        timeout=settings.smtp_timeout_seconds,
    )


async def deliver_message(delivery: Delivery, message_id: str) -> Message:
    """Send a `queued` message and return its row, now `sent` or `failed` (a row that is
    not `queued` any more is returned as it is)."""
    async with session_scope(delivery.sessionmaker) as session:
        message = await SendingRepository(session).get_message(message_id)
        if message is None:
            raise LookupError(f"message {message_id} does not exist")
        if message.status != MessageStatus.QUEUED:
            return message
        mailbox = await session.get(Mailbox, message.mailbox_id) if message.mailbox_id else None
        thread = await session.get(Thread, message.thread_id) if message.thread_id else None
        gmail_thread_id = (
            thread.gmail_thread_id
            if thread is not None and mailbox is not None and thread.mailbox_id == mailbox.id
            else None
        )
    # No catch-all here: a row left `queued` by an unexpected error is what the
    # reconciler exists for, and it checks Gmail before sending anything again.
    if message.sent_via == SentVia.GMAIL:
        if mailbox is not None and mailbox.status == MailboxStatus.ACTIVE:
            try:
                return await _deliver_via_gmail(delivery, message, mailbox, gmail_thread_id)
            except MailboxDisconnected as exc:
                reason = exc.reason
        else:
            reason = "the mailbox is not connected"
        message = await _switch_to_default(delivery, message.id, reason)
        if message.status != MessageStatus.QUEUED:
            return message
    return await _deliver_via_default(delivery, message)


async def find_in_gmail(
    access: MailboxAccess, mailbox: Mailbox, rfc822_message_id: str
) -> GmailIds | None:
    """The mailbox's copy of a message we sent, looked up by its Message-ID.

    Raises GoogleError / MailboxDisconnected when Gmail cannot answer.
    """
    bare = rfc822_message_id.strip().strip("<>")

    async def search(gmail: GmailSession) -> Any:
        return await gmail.list_message_ids(
            q=f"rfc822msgid:{bare}", include_spam_trash=True, max_results=10
        )

    page = await access.call(mailbox, search)
    for ref in page.messages:
        return GmailIds(ref.id, ref.thread_id)
    return None


async def read_back_message_id(
    access: MailboxAccess, mailbox: Mailbox, gmail_message_id: str, ours: str
) -> str:
    """The Message-ID Gmail actually gave the sent message (it may replace ours).

    Best effort: on any failure ours is kept, since Gmail keeps a given Message-ID in
    practice and the send itself already succeeded.
    """

    async def fetch(gmail: GmailSession) -> Any:
        return await gmail.get_message(gmail_message_id, "metadata", ["Message-ID"])

    try:
        fetched = await access.call(mailbox, fetch)
    except (GoogleError, MailboxDisconnected) as exc:
        logger.warning(
            "sending.gmail.message_id_unread",
            extra={"gmail_message_id": gmail_message_id, "error": str(exc)},
        )
        return ours
    ids = parse_message_ids(fetched.header("Message-ID"))
    return ids[0] if ids else ours


async def record_gmail_sent(
    delivery: Delivery,
    message_id: str,
    mailbox_id: str,
    sent: GmailIds,
    rfc822_message_id: str,
    attempts: int,
) -> Message:
    async with session_scope(delivery.sessionmaker) as session:
        repository = SendingRepository(session)
        message = await repository.get_message(message_id)
        assert message is not None
        if message.status != MessageStatus.QUEUED:
            logger.warning("sending.already_resolved", extra={"message_id": message_id})
            return message
        duplicate = await repository.message_by_gmail_id(mailbox_id, sent.id)
        if duplicate is not None and duplicate.id != message.id:
            # The sync saw our own send in a known thread before we recorded it; ours
            # is the row that carries the sender, the key and the request.
            await _drop_duplicate(session, duplicate)
        now = utcnow()
        message.status = MessageStatus.SENT
        message.sent_via = SentVia.GMAIL
        message.mailbox_id = mailbox_id
        message.sent_at = now
        message.gmail_message_id = sent.id
        message.gmail_thread_id = sent.thread_id
        message.rfc822_message_id = rfc822_message_id
        message.attempts = (message.attempts or 0) + attempts
        message.error = None
        message.updated_at = now
        thread = await session.get(Thread, message.thread_id) if message.thread_id else None
        if thread is not None:
            await _register_gmail_thread(repository, thread, mailbox_id, sent.thread_id)
    SENDS.labels(SentVia.GMAIL, "sent").inc()
    logger.info(
        "sending.sent",
        extra={"message_id": message_id, "sent_via": SentVia.GMAIL, "gmail_id": sent.id},
    )
    return message


async def record_failed(delivery: Delivery, message_id: str, error: str) -> Message:
    """Mark a still-queued row failed with `error` (for the reconciler, too)."""
    return await _record_failed(delivery, message_id, error, 0)


async def _deliver_via_gmail(
    delivery: Delivery, message: Message, mailbox: Mailbox, gmail_thread_id: str | None
) -> Message:
    assert message.rfc822_message_id is not None
    raw = to_bytes(
        _compose(message, from_address=mailbox.email_address, reply_to=None, for_gmail=True)
    )
    attempts = 0
    waited = 0.0
    while True:
        attempts += 1
        try:
            sent = await _gmail_send(delivery.access, mailbox, raw, gmail_thread_id)
            break
        except (RateLimited, Unavailable) as exc:
            found = None
            if isinstance(exc, Unavailable):
                # A 5xx or a dropped connection may come after Gmail took the message:
                # look before sending it again.
                found = await _find_quietly(delivery.access, mailbox, message.rfc822_message_id)
            if found is not None:
                sent = found
                break
            retry_at = exc.retry_at if isinstance(exc, RateLimited) else None
            delay = delivery.policy.delay_before(
                attempts + 1, waited=waited, retry_at=retry_at, now=utcnow()
            )
            if delay is None:
                return await _record_failed(
                    delivery, message.id, _gmail_error(exc, attempts), attempts
                )
            logger.info(
                "sending.gmail.retry",
                extra={"message_id": message.id, "error": str(exc), "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)
            waited += delay
        except GoogleError as exc:
            return await _record_failed(delivery, message.id, _gmail_error(exc, attempts), attempts)
    rfc822_id = await read_back_message_id(
        delivery.access, mailbox, sent.id, message.rfc822_message_id
    )
    return await record_gmail_sent(delivery, message.id, mailbox.id, sent, rfc822_id, attempts)


async def _gmail_send(
    access: MailboxAccess, mailbox: Mailbox, raw: bytes, thread_id: str | None
) -> GmailIds:
    async def send(gmail: GmailSession) -> Any:
        return await gmail.send(raw, thread_id)

    sent = await access.call(mailbox, send)
    return GmailIds(sent.id, sent.thread_id)


async def _find_quietly(
    access: MailboxAccess, mailbox: Mailbox, rfc822_message_id: str
) -> GmailIds | None:
    try:
        return await find_in_gmail(access, mailbox, rfc822_message_id)
    except GoogleError as exc:
        logger.warning(
            "sending.gmail.lookup_failed", extra={"mailbox_id": mailbox.id, "error": str(exc)}
        )
        return None


async def _switch_to_default(delivery: Delivery, message_id: str, reason: str) -> Message:
    sender = delivery.default_sender
    async with session_scope(delivery.sessionmaker) as session:
        message = await SendingRepository(session).get_message(message_id)
        assert message is not None
        if message.status != MessageStatus.QUEUED:
            return message
        message.sent_via = SentVia.DEFAULT
        message.mailbox_id = None
        message.from_address = sender.from_address if sender is not None else None
        message.updated_at = utcnow()
        thread = await session.get(Thread, message.thread_id) if message.thread_id else None
        if thread is not None and thread.gmail_thread_id is None and thread.message_count <= 1:
            # The conversation this send was opening is a default-sender one after all.
            thread.mailbox_id = None
            thread.sent_via = SentVia.DEFAULT
    logger.warning("sending.fallback", extra={"message_id": message_id, "reason": reason})
    return message


async def _deliver_via_default(delivery: Delivery, message: Message) -> Message:
    sender = delivery.default_sender
    if sender is None:
        return await _record_failed(
            delivery,
            message.id,
            "no usable Gmail mailbox and no default sender configured "
            "(DEFAULT_SMTP_URL, DEFAULT_FROM_ADDRESS)",
            0,
        )
    mime = _compose(
        message, from_address=sender.from_address, reply_to=message.reply_to, for_gmail=False
    )
    recipients = [
        parse_address(field, value).address
        for field, values in (("to", message.to), ("cc", message.cc), ("bcc", message.bcc))
        for value in values or []
    ]
    attempts = 0
    waited = 0.0
    while True:
        attempts += 1
        try:
            refused = await sender.send(mime, recipients)
            break
        except SmtpDeliveryError as exc:
            delay = (
                delivery.policy.delay_before(
                    attempts + 1, waited=waited, retry_at=None, now=utcnow()
                )
                if exc.retryable
                else None
            )
            if delay is None:
                error = f"the default sender failed after {attempts} attempt(s): {exc}"
                return await _record_failed(delivery, message.id, error, attempts)
            logger.info(
                "sending.smtp.retry",
                extra={"message_id": message.id, "error": str(exc), "delay": round(delay, 3)},
            )
            await asyncio.sleep(delay)
            waited += delay
    note = None
    if refused:
        note = "the relay refused: " + "; ".join(f"{k} ({v})" for k, v in refused.items())
    async with session_scope(delivery.sessionmaker) as session:
        row = await SendingRepository(session).get_message(message.id)
        assert row is not None
        if row.status != MessageStatus.QUEUED:
            return row
        now = utcnow()
        row.status = MessageStatus.SENT
        row.sent_via = SentVia.DEFAULT
        row.from_address = sender.from_address
        row.sent_at = now
        row.attempts = (row.attempts or 0) + attempts
        row.error = note
        row.updated_at = now
    SENDS.labels(SentVia.DEFAULT, "sent").inc()
    logger.info("sending.sent", extra={"message_id": message.id, "sent_via": SentVia.DEFAULT})
    return row


def _compose(
    message: Message, *, from_address: str, reply_to: str | None, for_gmail: bool
) -> EmailMessage:
    assert message.rfc822_message_id is not None
    return build_message(
        from_address=from_address,
        from_name=message.from_name,
        to=message.to or [],
        cc=message.cc or [],
        bcc=message.bcc or [],
        subject=message.subject,
        body_text=message.body_text,
        body_html=message.body_html,
        message_id=message.rfc822_message_id,
        reply_to=reply_to,
        in_reply_to=message.in_reply_to,
        references=message.references or [],
        # Gmail takes the recipients from the headers and strips Bcc itself; over SMTP
        # they go in the envelope only.
        include_bcc_header=for_gmail,
    )


async def _record_failed(delivery: Delivery, message_id: str, error: str, attempts: int) -> Message:
    async with session_scope(delivery.sessionmaker) as session:
        message = await SendingRepository(session).get_message(message_id)
        assert message is not None
        if message.status != MessageStatus.QUEUED:
            return message
        message.status = MessageStatus.FAILED
        message.error = error
        message.attempts = (message.attempts or 0) + attempts
        message.updated_at = utcnow()
        route = message.sent_via or SentVia.DEFAULT
    SENDS.labels(route, "failed").inc()
    logger.warning("sending.failed", extra={"message_id": message_id, "error": error})
    return message


async def _register_gmail_thread(
    repository: SendingRepository, thread: Thread, mailbox_id: str, gmail_thread_id: str
) -> None:
    """Make the Gmail thread a known thread of the lead, so sync stores the replies."""
    if thread.mailbox_id == mailbox_id and thread.gmail_thread_id == gmail_thread_id:
        return
    if thread.gmail_thread_id is None:
        holder = await repository.thread_by_gmail_id(mailbox_id, gmail_thread_id)
        if holder is None or holder.id == thread.id:
            thread.mailbox_id = mailbox_id
            thread.gmail_thread_id = gmail_thread_id
            return
        logger.warning(
            "sending.thread.gmail_thread_taken",
            extra={"thread_id": thread.id, "other_thread_id": holder.id},
        )
        return
    # Gmail started a new thread (a changed subject), or the conversation lives in
    # another mailbox: the thread keeps the Gmail thread it already follows.
    logger.warning(
        "sending.thread.gmail_thread_differs",
        extra={
            "thread_id": thread.id,
            "known": thread.gmail_thread_id,
            "returned": gmail_thread_id,
        },
    )


async def _drop_duplicate(session: AsyncSession, duplicate: Message) -> None:
    if duplicate.thread_id is not None:
        other_thread = await session.get(Thread, duplicate.thread_id)
        if other_thread is not None and other_thread.message_count > 0:
            other_thread.message_count -= 1
    await session.delete(duplicate)
    await session.flush()


def _gmail_error(exc: GoogleError, attempts: int) -> str:
    text = f"Gmail refused the message after {attempts} attempt(s): {exc}"
    retry_at = getattr(exc, "retry_at", None)
    if retry_at is not None:
        text += f" (Gmail asks to retry after {retry_at.isoformat()})"
    return text

"""Storing one Gmail message into one of our threads, exactly once.

Direction comes from the sender: mail from the mailbox's own address (or carrying
Gmail's SENT label) is the rep's, `outbound` and `sent`; anything else is `inbound`.
The service's own sends are already stored by the sending path: they are matched by
Gmail id or RFC 822 Message-ID and only completed, never stored twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.google import GmailMessage
from app.mail import ParsedMessage, parse_message, reply_text_from, sanitize_html
from app.mailboxes.models import Mailbox
from app.metrics import MESSAGES_STORED
from app.threads.models import Direction, Message, MessageStatus, SentVia, Thread
from app.threads.repository import MessageRepository, ThreadRepository

logger = logging.getLogger("leadmail.sync.ingest")

SENT_LABEL = "SENT"
DRAFT_LABEL = "DRAFT"


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing did: `message` is the new row, or None when nothing new was stored
    (already there, or our own send matched to its row)."""

    message: Message | None
    matched_own_send: bool = False


def message_id_forms(ids: list[str] | tuple[str, ...]) -> list[str]:
    """Message-IDs as stored: normally `<left@right>`; bare forms tolerated too."""
    forms: list[str] = []
    for value in ids:
        bare = value.strip().strip("<>")
        if bare:
            forms += [f"<{bare}>", bare]
    return list(dict.fromkeys(forms))


class MessageStore:
    """Stores fetched Gmail messages of one mailbox in the caller's transaction."""

    def __init__(self, session: AsyncSession, mailbox: Mailbox) -> None:
        self.session = session
        self.mailbox = mailbox
        self.threads = ThreadRepository(session)
        self.messages = MessageRepository(session)

    async def store(
        self, thread: Thread, gmail: GmailMessage, *, match_reason: str | None = None
    ) -> Stored:
        if gmail.raw is None:
            raise ValueError("store() needs a message fetched with format=raw")
        if await self.messages.by_gmail_id(self.mailbox.id, gmail.id) is not None:
            return Stored(None)
        parsed = parse_message(gmail.raw)
        outbound = self._is_own(parsed, gmail)
        if outbound and await self._complete_own_send(thread, gmail, parsed):
            return Stored(None, matched_own_send=True)

        at = gmail.internal_date or parsed.date or utcnow()
        message = self._new_row(thread, gmail, parsed, outbound, at, match_reason)
        try:
            # A savepoint: a concurrent writer that stored the same Gmail message first
            # (an expired lease, the sending path) must not undo the rest of the pass.
            async with self.session.begin_nested():
                self.session.add(message)
        except IntegrityError:
            logger.info("gmail.sync.already_stored", extra={"gmail_message_id": gmail.id})
            return Stored(None)
        await self.threads.count_message(thread, at)
        MESSAGES_STORED.labels(message.direction).inc()
        return Stored(message)

    def _is_own(self, parsed: ParsedMessage, gmail: GmailMessage) -> bool:
        if SENT_LABEL in gmail.label_ids:
            return True
        sender = parsed.from_.address if parsed.from_ is not None else ""
        return sender.casefold() == self.mailbox.email_address.casefold()

    async def _complete_own_send(
        self, thread: Thread, gmail: GmailMessage, parsed: ParsedMessage
    ) -> bool:
        """True when this Gmail message is the sent copy of a message we already hold."""
        if not parsed.message_id:
            return False
        rows = await self.messages.outbound_by_rfc822_ids(
            thread.org_id, message_id_forms([parsed.message_id])
        )
        mine = [row for row in rows if row.mailbox_id in (None, self.mailbox.id)]
        if not mine:
            return False
        row = mine[0]
        if row.gmail_message_id is None:
            row.gmail_message_id = gmail.id
            row.mailbox_id = row.mailbox_id or self.mailbox.id
        if row.gmail_thread_id is None:
            row.gmail_thread_id = gmail.thread_id
        if row.thread_id is None:
            row.thread_id = thread.id
        await self.session.flush()
        return True

    def _new_row(
        self,
        thread: Thread,
        gmail: GmailMessage,
        parsed: ParsedMessage,
        outbound: bool,
        at: datetime,
        match_reason: str | None,
    ) -> Message:
        body_html = sanitize_html(parsed.body_html) if parsed.body_html else None
        return Message(
            org_id=thread.org_id,
            thread_id=thread.id,
            lead_id=thread.lead_id,
            mailbox_id=self.mailbox.id,
            user_id=self.mailbox.user_id if outbound else None,
            direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
            status=MessageStatus.SENT if outbound else MessageStatus.RECEIVED,
            sent_via=SentVia.GMAIL if outbound else None,
            from_address=parsed.from_.address if parsed.from_ else None,
            from_name=(parsed.from_.name or None) if parsed.from_ else None,
            reply_to=parsed.reply_to[0].address if parsed.reply_to else None,
            to=[address.address for address in parsed.to],
            cc=[address.address for address in parsed.cc],
            bcc=[],
            subject=parsed.subject,
            body_text=parsed.body_text,
            body_html=body_html,
            reply_text=reply_text_from(parsed.body_text, parsed.body_html),
            attachments=[
                {
                    "filename": attachment.filename or "",
                    "mime_type": attachment.mime_type,
                    "size": attachment.size,
                }
                for attachment in parsed.attachments
            ],
            gmail_message_id=gmail.id,
            gmail_thread_id=gmail.thread_id,
            rfc822_message_id=parsed.message_id,
            in_reply_to=parsed.in_reply_to,
            references=list(parsed.references),
            match_reason=match_reason,
            # Synced mail is ordered by when Gmail took it, not by when we saw it: gap
            # recovery can store an old message late.
            created_at=at,
            sent_at=at if outbound else None,
            received_at=None if outbound else at,
            updated_at=utcnow(),
        )

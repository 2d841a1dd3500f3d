"""Small async factories for sync and thread tests: rows written as the other paths would."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.mailboxes.models import Mailbox, MailboxStatus
from app.threads.models import Direction, Message, MessageStatus, SentVia, Thread
from tests.support import unique


async def make_mailbox(
    sessionmaker: async_sessionmaker[AsyncSession],
    email: str | None = None,
    *,
    org_id: str | None = None,
    user_id: str | None = None,
    cursor: int | None = 100,
    status: str = MailboxStatus.ACTIVE,
) -> Mailbox:
    mailbox = Mailbox(
        org_id=org_id or unique("org"),
        user_id=user_id or unique("user"),
        email_address=email or f"{unique('rep')}@example.com",
        status=status,
        history_cursor=cursor,
        granted_scopes="",
        sync_requested=False,
        recovered_messages=0,
    )
    async with sessionmaker() as session:
        session.add(mailbox)
        await session.commit()
    return mailbox


async def load_mailbox(sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str) -> Mailbox:
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


async def make_thread(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    org_id: str,
    lead_id: str,
    mailbox_id: str | None = None,
    gmail_thread_id: str | None = None,
    subject: str = "Hello",
    messages: int = 0,
    start: datetime | None = None,
    sent_via: str | None = SentVia.GMAIL,
) -> Thread:
    """A thread with `messages` alternating outbound/inbound messages, a minute apart."""
    start = start or utcnow() - timedelta(hours=1)
    thread = Thread(
        org_id=org_id,
        lead_id=lead_id,
        mailbox_id=mailbox_id,
        gmail_thread_id=gmail_thread_id,
        subject=subject,
        sent_via=sent_via,
        message_count=messages,
        created_at=start,
        last_message_at=start + timedelta(minutes=max(messages - 1, 0)),
    )
    async with sessionmaker() as session:
        session.add(thread)
        await session.flush()
        for index in range(messages):
            at = start + timedelta(minutes=index)
            outbound = index % 2 == 0
            session.add(
                Message(
                    org_id=org_id,
                    thread_id=thread.id,
                    lead_id=lead_id,
                    mailbox_id=mailbox_id,
                    direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
                    status=MessageStatus.SENT if outbound else MessageStatus.RECEIVED,
                    sent_via=sent_via if outbound else None,
                    from_address="rep@example.com" if outbound else "lead@example.org",
                    to=["lead@example.org"] if outbound else ["rep@example.com"],
                    subject=subject if index == 0 else f"Re: {subject}",
                    body_text=f"message {index}",
                    attachments=[],
                    references=[],
                    rfc822_message_id=f"<{unique('m')}@example.com>",
                    created_at=at,
                    sent_at=at if outbound else None,
                    received_at=None if outbound else at,
                )
            )
        await session.commit()
    return thread


def push_envelope(email: str, history_id: int | str, **message: Any) -> dict[str, Any]:
    """A wrapped Pub/Sub push body as Google sends it."""
    data = json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message.pop("message_id", unique("msg")),
            "publishTime": "2026-12-03T19:13:55.749Z",
            **message,
        },
        "subscription": "projects/sandbox-project/subscriptions/gmail-push",
    }

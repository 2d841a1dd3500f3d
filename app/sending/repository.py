"""Every query the sending capability runs: messages, the outbox, and the threads a send joins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import newest_first
from app.threads.models import Direction, Message, MessageStatus, Thread


class SendingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_message(self, message_id: str) -> Message | None:
        return await self.session.get(Message, message_id)

    async def get_by_idempotency_key(self, org_id: str, key: str) -> Message | None:
        result = await self.session.scalars(
            select(Message).where(Message.org_id == org_id, Message.idempotency_key == key)
        )
        return result.first()

    async def add(self, *rows: Thread | Message) -> None:
        self.session.add_all(rows)
        await self.session.flush()

    async def get_thread(self, org_id: str, lead_id: str, thread_id: str) -> Thread | None:
        result = await self.session.scalars(
            select(Thread).where(
                Thread.org_id == org_id, Thread.lead_id == lead_id, Thread.id == thread_id
            )
        )
        return result.first()

    async def thread_by_gmail_id(self, mailbox_id: str, gmail_thread_id: str) -> Thread | None:
        result = await self.session.scalars(
            select(Thread).where(
                Thread.mailbox_id == mailbox_id, Thread.gmail_thread_id == gmail_thread_id
            )
        )
        return result.first()

    async def message_by_gmail_id(self, mailbox_id: str, gmail_message_id: str) -> Message | None:
        result = await self.session.scalars(
            select(Message).where(
                Message.mailbox_id == mailbox_id, Message.gmail_message_id == gmail_message_id
            )
        )
        return result.first()

    async def conversation(self, thread_id: str) -> list[Message]:
        """The thread's messages that exist on the wire (sent or received), oldest first."""
        when = func.coalesce(Message.sent_at, Message.received_at, Message.created_at)
        rows = await self.session.scalars(
            select(Message)
            .where(
                Message.thread_id == thread_id,
                Message.status.in_([MessageStatus.SENT, MessageStatus.RECEIVED]),
                Message.rfc822_message_id.is_not(None),
            )
            .order_by(when, Message.id)
        )
        return list(rows)

    async def outbox(
        self,
        org_id: str,
        *,
        user_id: str | None,
        status: str | None,
        mailbox_id: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Message]:
        query = select(Message).where(
            Message.org_id == org_id, Message.direction == Direction.OUTBOUND
        )
        if user_id is not None:
            query = query.where(Message.user_id == user_id)
        if status is not None:
            query = query.where(Message.status == status)
        if mailbox_id is not None:
            query = query.where(Message.mailbox_id == mailbox_id)
        query = newest_first(query, Message.created_at, Message.id, after, limit)
        return list(await self.session.scalars(query))

    async def stale_queued(self, before: datetime, limit: int) -> Sequence[tuple[str, datetime]]:
        """Outbound rows still `queued` since before `before`: (id, updated_at), oldest first."""
        rows = await self.session.execute(
            select(Message.id, Message.updated_at)
            .where(
                Message.status == MessageStatus.QUEUED,
                Message.direction == Direction.OUTBOUND,
                Message.updated_at < before,
            )
            .order_by(Message.updated_at)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in rows]

    async def claim_queued(self, message_id: str, seen_updated_at: datetime, now: datetime) -> bool:
        """Take a stale row for one reconciliation pass.

        A single conditional UPDATE: of several replicas that saw the same row, exactly one
        matches `updated_at` and wins; the new `updated_at` also keeps the row out of the
        next passes until it is stale again.
        """
        result = await self.session.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.status == MessageStatus.QUEUED,
                Message.updated_at == seen_updated_at,
            )
            .values(updated_at=now, attempts=Message.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

"""Every query on conversations and their messages."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import newest_first
from app.threads.models import Direction, Message, Thread


class ThreadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, org_id: str, thread_id: str) -> Thread | None:
        thread: Thread | None = await self.session.scalar(
            select(Thread).where(Thread.org_id == org_id, Thread.id == thread_id)
        )
        return thread

    async def list_for_lead(
        self, org_id: str, lead_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Thread]:
        """Most recent activity first; keyset on (last_message_at, id)."""
        query = select(Thread).where(Thread.org_id == org_id, Thread.lead_id == lead_id)
        query = newest_first(query, Thread.last_message_at, Thread.id, after, limit)
        return list(await self.session.scalars(query))

    async def messages_of(self, thread_ids: Collection[str]) -> dict[str, list[Message]]:
        """The messages of these threads, each list oldest first."""
        grouped: dict[str, list[Message]] = {thread_id: [] for thread_id in thread_ids}
        if not grouped:
            return grouped
        rows = await self.session.scalars(
            select(Message)
            .where(Message.thread_id.in_(grouped))
            .order_by(Message.thread_id, Message.created_at, Message.id)
        )
        for message in rows:
            if message.thread_id is not None:
                grouped[message.thread_id].append(message)
        return grouped

    async def known_gmail_threads(
        self, mailbox_id: str, gmail_thread_ids: Collection[str]
    ) -> dict[str, Thread]:
        """Our threads among these Gmail thread ids of one mailbox, by Gmail thread id."""
        if not gmail_thread_ids:
            return {}
        rows = await self.session.scalars(
            select(Thread).where(
                Thread.mailbox_id == mailbox_id, Thread.gmail_thread_id.in_(list(gmail_thread_ids))
            )
        )
        return {thread.gmail_thread_id: thread for thread in rows if thread.gmail_thread_id}

    async def gmail_threads_of_mailbox(self, mailbox_id: str) -> list[Thread]:
        """Every known Gmail thread of a mailbox (gap recovery re-reads exactly these)."""
        rows = await self.session.scalars(
            select(Thread)
            .where(Thread.mailbox_id == mailbox_id, Thread.gmail_thread_id.is_not(None))
            .order_by(Thread.last_message_at.desc())
        )
        return list(rows)

    async def by_id(self, thread_id: str) -> Thread | None:
        return await self.session.get(Thread, thread_id)

    async def add(self, thread: Thread) -> Thread:
        self.session.add(thread)
        await self.session.flush()
        return thread

    async def count_message(self, thread: Thread, at: datetime) -> None:
        """One more message in the thread; its last activity moves forward only."""
        await self.session.execute(
            update(Thread)
            .where(Thread.id == thread.id)
            .values(message_count=Thread.message_count + 1)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(
            update(Thread)
            .where(Thread.id == thread.id, Thread.last_message_at < at)
            .values(last_message_at=at)
            .execution_options(synchronize_session=False)
        )


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def stored_gmail_ids(
        self, mailbox_id: str, gmail_message_ids: Collection[str]
    ) -> set[str]:
        if not gmail_message_ids:
            return set()
        rows = await self.session.scalars(
            select(Message.gmail_message_id).where(
                Message.mailbox_id == mailbox_id,
                Message.gmail_message_id.in_(list(gmail_message_ids)),
            )
        )
        return {value for value in rows if value}

    async def by_gmail_id(self, mailbox_id: str, gmail_message_id: str) -> Message | None:
        message: Message | None = await self.session.scalar(
            select(Message).where(
                Message.mailbox_id == mailbox_id, Message.gmail_message_id == gmail_message_id
            )
        )
        return message

    async def outbound_by_rfc822_ids(
        self, org_id: str, rfc822_message_ids: Sequence[str]
    ) -> list[Message]:
        """Messages we sent whose Message-ID is one of these, oldest first."""
        if not rfc822_message_ids:
            return []
        rows = await self.session.scalars(
            select(Message)
            .where(
                Message.org_id == org_id,
                Message.rfc822_message_id.in_(list(rfc822_message_ids)),
                Message.direction == Direction.OUTBOUND,
            )
            .order_by(Message.created_at, Message.id)
        )
        return list(rows)

    async def add(self, message: Message) -> Message:
        self.session.add(message)
        await self.session.flush()
        return message

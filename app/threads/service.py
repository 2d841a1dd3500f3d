"""Reading a lead's conversations, scoped to the caller's organization."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.errors import NotFound
from app.pagination import Page, decode_cursor, encode_cursor
from app.threads.repository import ThreadRepository
from app.threads.schemas import ThreadOut


async def list_lead_threads(
    session: AsyncSession, principal: Principal, lead_id: str, limit: int, cursor: str | None
) -> Page[ThreadOut]:
    """The lead's threads, most recent activity first, each with its messages oldest first."""
    repository = ThreadRepository(session)
    after = decode_cursor(cursor) if cursor else None
    threads = await repository.list_for_lead(principal.org_id, lead_id, limit + 1, after)
    page = threads[:limit]
    messages = await repository.messages_of([thread.id for thread in page])
    next_cursor = None
    if len(threads) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last.last_message_at, last.id)
    return Page[ThreadOut](
        items=[ThreadOut.from_model(thread, messages[thread.id]) for thread in page],
        next_cursor=next_cursor,
    )


async def get_thread(session: AsyncSession, principal: Principal, thread_id: str) -> ThreadOut:
    repository = ThreadRepository(session)
    thread = await repository.get(principal.org_id, thread_id)
    if thread is None:
        raise NotFound("no such thread")
    messages = await repository.messages_of([thread.id])
    return ThreadOut.from_model(thread, messages[thread.id])

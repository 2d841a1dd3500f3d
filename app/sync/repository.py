"""Every query on a mailbox's sync state: pending notifications, cursor, retries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, and_, case, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.mailboxes.models import Mailbox, MailboxStatus

# Gmail's history ids are uint64 on the wire; the column is a signed BIGINT.
MAX_HISTORY_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NotifiedMailbox:
    """A mailbox row touched by a notification, as it is after the update."""

    id: str
    email_address: str
    status: str
    history_cursor: int | None


class SyncStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def raise_pending(
        self, history_ids: Mapping[str, int], now: datetime
    ) -> list[NotifiedMailbox]:
        """Mark every mailbox with one of these addresses as notified up to its history id.

        One statement for the whole batch. The pending id only ever rises and only active
        mailboxes take it; every matching row records the push time (the watch is alive).
        """
        if not history_ids:
            return []
        new_id = case(
            {email: literal(value, BigInteger) for email, value in history_ids.items()},
            value=Mailbox.email_address,
        )
        raised = case(
            (
                and_(
                    Mailbox.status == MailboxStatus.ACTIVE,
                    or_(Mailbox.pending_history_id.is_(None), Mailbox.pending_history_id < new_id),
                ),
                new_id,
            ),
            else_=Mailbox.pending_history_id,
        )
        result = await self.session.execute(
            update(Mailbox)
            .where(Mailbox.email_address.in_(list(history_ids)))
            .values(pending_history_id=raised, last_push_at=now)
            .returning(Mailbox.id, Mailbox.email_address, Mailbox.status, Mailbox.history_cursor)
            .execution_options(synchronize_session=False)
        )
        return [NotifiedMailbox(*row) for row in result.all()]

    async def due_mailbox_ids(self, now: datetime, limit: int) -> list[str]:
        """Active mailboxes with work: a notification beyond the cursor, or a requested
        sync, whose back-off (if any) has passed. Oldest sync first."""
        rows = await self.session.scalars(
            select(Mailbox.id)
            .where(
                Mailbox.status == MailboxStatus.ACTIVE,
                or_(
                    Mailbox.sync_requested.is_(True),
                    and_(
                        Mailbox.pending_history_id.is_not(None),
                        or_(
                            Mailbox.history_cursor.is_(None),
                            Mailbox.pending_history_id > Mailbox.history_cursor,
                        ),
                    ),
                ),
                or_(Mailbox.sync_retry_at.is_(None), Mailbox.sync_retry_at <= now),
            )
            .order_by(Mailbox.last_synced_at.asc().nulls_first())
            .limit(limit)
        )
        return list(rows)

    async def get(self, mailbox_id: str) -> Mailbox | None:
        mailbox: Mailbox | None = await self.session.get(
            Mailbox, mailbox_id, populate_existing=True
        )
        return mailbox

    async def max_cursor_lag(self) -> int:
        lag = await self.session.scalar(
            select(
                func.max(Mailbox.pending_history_id - func.coalesce(Mailbox.history_cursor, 0))
            ).where(Mailbox.status == MailboxStatus.ACTIVE, Mailbox.pending_history_id.is_not(None))
        )
        return max(int(lag or 0), 0)

    async def save_progress(
        self,
        mailbox_id: str,
        *,
        cursor: int,
        done: bool,
        now: datetime,
        retry_at: datetime | None,
        error: str | None,
    ) -> None:
        """Move the cursor forward (never back) and record how the pass ended.

        `done` means the pass reached the mailbox's current history id: a requested
        sync is then satisfied.
        """
        values: dict[str, object] = {
            "history_cursor": case(
                (
                    or_(Mailbox.history_cursor.is_(None), Mailbox.history_cursor < cursor),
                    literal(cursor, BigInteger),
                ),
                else_=Mailbox.history_cursor,
            ),
            "sync_retry_at": retry_at,
            "sync_error": error,
        }
        if done:
            values["sync_requested"] = False
            values["last_synced_at"] = now
        await self.session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def record_recovery(
        self, mailbox_id: str, *, cursor: int, recovered: int, now: datetime
    ) -> None:
        """After gap recovery: the cursor taken from getProfile before the threads were
        re-read, and the count of messages that recovery stored."""
        await self.session.execute(
            update(Mailbox)
            .where(Mailbox.id == mailbox_id)
            .values(
                history_cursor=cursor,
                recovered_messages=Mailbox.recovered_messages + recovered,
                last_recovery_at=now,
                last_synced_at=now,
                sync_requested=False,
                sync_retry_at=None,
                sync_error=None,
            )
            .execution_options(synchronize_session=False)
        )

    async def ids_by_address(self, addresses: Sequence[str]) -> list[str]:
        rows = await self.session.scalars(
            select(Mailbox.id).where(Mailbox.email_address.in_(list(addresses)))
        )
        return list(rows)

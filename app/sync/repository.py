"""Every query on a mailbox's sync state: pending notifications, cursor, retries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    String,
    Table,
    and_,
    bindparam,
    case,
    column,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import UTCDateTime
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


_mailboxes = cast(Table, Mailbox.__table__)


def _raised_pending(history_id: ColumnElement[int]) -> ColumnElement[int]:
    """The pending id after a notification: only ever up, only on active mailboxes."""
    return case(
        (
            and_(
                _mailboxes.c.status == MailboxStatus.ACTIVE,
                or_(
                    _mailboxes.c.pending_history_id.is_(None),
                    _mailboxes.c.pending_history_id < history_id,
                ),
            ),
            history_id,
        ),
        else_=_mailboxes.c.pending_history_id,
    )


_NOTIFIED_COLUMNS = (
    _mailboxes.c.id,
    _mailboxes.c.email_address,
    _mailboxes.c.status,
    _mailboxes.c.history_cursor,
)

# Built once: the intake runs these for every batch of pushes, and building and keying
# a statement would cost more CPU than running it.
#
# PostgreSQL: the whole batch in one statement over two arrays; on a connection in
# autocommit that is one round trip, and durable when it returns.
_pushed = (
    func.unnest(
        bindparam("b_emails", type_=ARRAY(String)), bindparam("b_ids", type_=ARRAY(BigInteger))
    )
    .table_valued(column("email", String), column("history_id", BigInteger))
    .render_derived(name="pushed")
)
_RAISE_PENDING_ARRAYS = (
    update(_mailboxes)
    .where(_mailboxes.c.email_address == _pushed.c.email)
    .values(
        last_push_at=bindparam("b_now", type_=UTCDateTime()),
        pending_history_id=_raised_pending(_pushed.c.history_id),
    )
    .returning(*_NOTIFIED_COLUMNS)
)
# Elsewhere (SQLite): one UPDATE for many parameter sets, then one SELECT.
_RAISE_PENDING = (
    update(_mailboxes)
    .where(_mailboxes.c.email_address == bindparam("b_email"))
    .values(
        last_push_at=bindparam("b_now", type_=UTCDateTime()),
        pending_history_id=_raised_pending(bindparam("b_history", type_=BigInteger)),
    )
)
_NOTIFIED = select(*_NOTIFIED_COLUMNS).where(
    _mailboxes.c.email_address.in_(bindparam("b_emails", expanding=True))
)


def _raised_cursor(cursor: int) -> ColumnElement[int]:
    """The stored cursor moved up to `cursor`, never down."""
    return case(
        (
            or_(Mailbox.history_cursor.is_(None), Mailbox.history_cursor < cursor),
            literal(cursor, BigInteger),
        ),
        else_=Mailbox.history_cursor,
    )


class NotificationRepository:
    """The push intake's statements. They run on a session or on a bare connection: the
    intake's group commit uses the latter, which costs less per transaction."""

    def __init__(self, executor: AsyncSession | AsyncConnection) -> None:
        self.executor = executor

    async def raise_pending(
        self, history_ids: Mapping[str, int], now: datetime
    ) -> list[NotifiedMailbox]:
        """Mark every mailbox with one of these addresses as notified up to its history
        id, and return the rows as they are now.

        The pending id only ever rises and only active mailboxes take it; every matching
        row records the push time (the watch is alive).
        """
        if not history_ids:
            return []
        if self._dialect() == "postgresql":
            result = await self.executor.execute(
                _RAISE_PENDING_ARRAYS,
                {"b_emails": list(history_ids), "b_ids": list(history_ids.values()), "b_now": now},
            )
            return [NotifiedMailbox(*row) for row in result.all()]
        await self.executor.execute(
            _RAISE_PENDING,
            [
                {"b_email": email, "b_history": value, "b_now": now}
                for email, value in history_ids.items()
            ],
        )
        result = await self.executor.execute(_NOTIFIED, {"b_emails": list(history_ids)})
        return [NotifiedMailbox(*row) for row in result.all()]

    def _dialect(self) -> str:
        if isinstance(self.executor, AsyncConnection):
            return self.executor.dialect.name
        return self.executor.get_bind().dialect.name


class SyncStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
        cursor: int | None,
        done: bool,
        now: datetime,
        retry_at: datetime | None,
        error: str | None,
    ) -> None:
        """Move the cursor forward (never back; None: leave it) and record how the pass
        ended.

        `done` means the pass reached the mailbox's current history id: a requested
        sync is then satisfied.
        """
        values: dict[str, object] = {"sync_retry_at": retry_at, "sync_error": error}
        if cursor is not None:
            values["history_cursor"] = _raised_cursor(cursor)
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
                history_cursor=_raised_cursor(cursor),
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

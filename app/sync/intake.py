"""Taking in Gmail notifications: record them durably, wake the sync, answer fast.

A notification is a hint: it raises the mailbox's `pending_history_id` (never lowers
it) and the sync engine does the Gmail work later. `record_notification` is the unit of
work for any transport (push webhook, streaming pull); `NotificationRecorder` runs it
with group commit, so concurrent pushes share one transaction and each caller returns
only once its notification is committed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.mailboxes.models import MailboxStatus
from app.sync.repository import MAX_HISTORY_ID, NotifiedMailbox, SyncStateRepository

logger = logging.getLogger("leadmail.sync.intake")


class PushOutcome(enum.StrEnum):
    """What became of one notification; the `outcome` label of leadmail_pushes_total."""

    RECORDED = "recorded"  # a sync is due up to this history id
    STALE = "stale"  # at or below the cursor: nothing new
    UNKNOWN_MAILBOX = "unknown_mailbox"
    DISCONNECTED = "disconnected"
    UNDECODABLE = "undecodable"
    UNAUTHENTICATED = "unauthenticated"  # answered 401
    FORBIDDEN = "forbidden"  # answered 403
    UNAVAILABLE = "unavailable"  # database or certs down: answered 503


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: PushOutcome
    # Mailboxes that now have work; wake their sync once the transaction is committed.
    mailbox_ids: tuple[str, ...] = ()


def address_keys(email_address: str) -> tuple[str, ...]:
    """The stored forms an address may have: as Google sent it, and lower-cased."""
    lowered = email_address.lower()
    return (email_address,) if lowered == email_address else (email_address, lowered)


async def record_notifications(
    session: AsyncSession, notifications: Sequence[tuple[str, int]]
) -> list[IntakeResult]:
    """Record a batch of (emailAddress, historyId) in the session; flush only.

    One UPDATE for the whole batch; the caller commits.
    """
    highest: dict[str, int] = {}
    for email_address, history_id in notifications:
        if 0 < history_id <= MAX_HISTORY_ID:
            for key in address_keys(email_address):
                highest[key] = max(highest.get(key, 0), history_id)
    rows = await SyncStateRepository(session).raise_pending(highest, utcnow())
    by_address: dict[str, list[NotifiedMailbox]] = {}
    for row in rows:
        by_address.setdefault(row.email_address, []).append(row)
    results = []
    for email_address, history_id in notifications:
        if not 0 < history_id <= MAX_HISTORY_ID:
            results.append(IntakeResult(PushOutcome.UNDECODABLE))
            continue
        matches = [row for key in address_keys(email_address) for row in by_address.get(key, ())]
        results.append(_classify(matches, history_id))
    return results


async def record_notification(
    session: AsyncSession, email_address: str, history_id: int
) -> IntakeResult:
    """Record one notification in the session (flush only; the caller commits)."""
    (result,) = await record_notifications(session, [(email_address, history_id)])
    return result


def _classify(rows: Sequence[NotifiedMailbox], history_id: int) -> IntakeResult:
    active = [row for row in rows if row.status == MailboxStatus.ACTIVE]
    if not active:
        return IntakeResult(PushOutcome.DISCONNECTED if rows else PushOutcome.UNKNOWN_MAILBOX)
    behind = tuple(
        row.id for row in active if row.history_cursor is None or row.history_cursor < history_id
    )
    if not behind:
        return IntakeResult(PushOutcome.STALE)
    return IntakeResult(PushOutcome.RECORDED, behind)


class RecordFailed(Exception):
    """The transaction that carried a notification did not commit."""


@dataclass(eq=False)
class _Waiting:
    email_address: str
    history_id: int
    future: asyncio.Future[IntakeResult] = field(repr=False)


class NotificationRecorder:
    """Group commit for notifications.

    Callers that arrive while a transaction is being committed wait for the next one,
    which carries all of them; under load one commit serves many pushes, and each
    `record()` still returns only after its own notification is durable. A failed
    transaction fails every caller in it (they answer 503 and Pub/Sub redelivers).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        on_recorded: Callable[[Sequence[str]], None] | None = None,
        *,
        max_batch: int = 500,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._on_recorded = on_recorded
        self._max_batch = max_batch
        self._queue: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, email_address: str, history_id: int) -> IntakeResult:
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(email_address, history_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="push-intake-commit")
        return await future

    async def _flush_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results = await self._commit(batch)
            except Exception as exc:
                if len(batch) == 1:
                    self._fail(batch, exc)
                    continue
                # One bad row must not fail the others: each alone, in its own transaction.
                results = []
                for item in batch:
                    try:
                        results += await self._commit([item])
                    except Exception as single_exc:
                        self._fail([item], single_exc)
                        results.append(None)
            woken = sorted(
                {mailbox_id for result in results if result for mailbox_id in result.mailbox_ids}
            )
            if woken and self._on_recorded is not None:
                self._on_recorded(woken)
            for item, result in zip(batch, results, strict=True):
                if result is not None and not item.future.done():
                    item.future.set_result(result)

    async def _commit(self, batch: Sequence[_Waiting]) -> list[IntakeResult | None]:
        async with self._sessionmaker() as session:
            results = await record_notifications(
                session, [(item.email_address, item.history_id) for item in batch]
            )
            await session.commit()
        return list(results)

    @staticmethod
    def _fail(batch: Sequence[_Waiting], exc: Exception) -> None:
        logger.error(
            "gmail.push.record_failed", extra={"error": type(exc).__name__, "batch": len(batch)}
        )
        for item in batch:
            if not item.future.done():
                item.future.set_exception(RecordFailed(type(exc).__name__))

"""Taking in Gmail notifications: record them durably, wake the sync, answer fast.

A notification is a hint: it raises the mailbox's `pending_history_id` (never lowers
it) and the sync engine does the Gmail work later. `record_notification` is the unit of
work for any transport (push webhook, streaming pull); `NotificationRecorder` runs it
with group commit, so concurrent pushes share one transaction and each caller returns
only once its notification is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.db import utcnow
from app.mailboxes.models import MailboxStatus
from app.sync.repository import MAX_HISTORY_ID, NotificationRepository, NotifiedMailbox

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
    session: AsyncSession | AsyncConnection, notifications: Sequence[tuple[str, int]]
) -> list[IntakeResult]:
    """Record a batch of (emailAddress, historyId) in the session (or connection).

    One UPDATE for the whole batch; the caller commits.
    """
    highest: dict[str, int] = {}
    for email_address, history_id in notifications:
        if 0 < history_id <= MAX_HISTORY_ID:
            for key in address_keys(email_address):
                highest[key] = max(highest.get(key, 0), history_id)
    # Rows are locked in address order, so concurrent batches cannot deadlock.
    ordered = {key: highest[key] for key in sorted(highest)}
    rows = await NotificationRepository(session).raise_pending(ordered, utcnow())
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
    session: AsyncSession | AsyncConnection, email_address: str, history_id: int
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

    Pushes that arrive together share a transaction: a flusher takes what has queued,
    commits it in one transaction and only then answers each caller, so `record()`
    returns once its own notification is durable. While one commit waits for the
    disk, the pushes arriving meanwhile queue up for the next, so batches grow with the
    load without anyone waiting on a timer (`gather_seconds`, off by default: a push's
    answer is bound by the commit's latency, not by CPU). Up to `max_in_flight`
    flushers run at once, so new pushes need not wait for the commit in
    progress. A failed transaction is retried push by push, so one bad row fails only
    its own caller (answered 503; Pub/Sub redelivers).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        on_recorded: Callable[[Sequence[str]], None] | None = None,
        *,
        max_batch: int = 500,
        gather_seconds: float = 0.0,
        max_in_flight: int = 4,
    ) -> None:
        self._engine = engine
        self._on_recorded = on_recorded
        self._max_batch = max_batch
        self._gather_seconds = gather_seconds
        self._max_in_flight = max_in_flight
        self._queue: list[_Waiting] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def record(self, email_address: str, history_id: int) -> IntakeResult:
        future: asyncio.Future[IntakeResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(email_address, history_id, future))
        self._start_flusher()
        return await future

    def _start_flusher(self) -> None:
        if self._queue and len(self._flushers) < self._max_in_flight:
            flusher = asyncio.create_task(self._flush_all(), name="push-intake-commit")
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flusher_done)

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        self._flushers.discard(flusher)
        # Pushes that queued while this flusher was giving up its connection (or after a
        # failed batch) would otherwise wait for the next push to come along.
        self._start_flusher()

    async def _flush_all(self) -> None:
        try:
            # One connection for as long as pushes keep coming, not one per batch.
            async with self._engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    # Each batch is one statement (see NotificationRepository): its own
                    # transaction, committed before the database answers.
                    await connection.execution_options(isolation_level="AUTOCOMMIT")
                await self._flush_on(connection)
        except Exception as exc:
            # No connection at all (the database is down): nobody waiting can succeed.
            waiting, self._queue = self._queue, []
            self._fail(waiting, exc)

    async def _flush_on(self, connection: AsyncConnection) -> None:
        while self._queue:
            if len(self._queue) < self._max_batch and self._gather_seconds > 0:
                # A moment for concurrent pushes to join: under load the transaction's
                # fixed cost is then shared by many, which is where the CPU goes.
                await asyncio.sleep(self._gather_seconds)
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            if not batch:
                return
            try:
                results = await self._commit(connection, batch)
            except Exception as exc:
                await self._retry_alone(connection, batch, exc)
                # The connection may be what failed: the next flusher takes a new one.
                return
            self._answer(batch, results)

    async def _retry_alone(
        self, connection: AsyncConnection, batch: list[_Waiting], exc: Exception
    ) -> None:
        """One bad row must not fail the others: each alone, in its own transaction."""
        with contextlib.suppress(Exception):
            await connection.rollback()
        if len(batch) == 1:
            self._fail(batch, exc)
            return
        results: list[IntakeResult | None] = []
        for item in batch:
            try:
                results += await self._commit(connection, [item])
            except Exception as single_exc:
                with contextlib.suppress(Exception):
                    await connection.rollback()
                self._fail([item], single_exc)
                results.append(None)
        self._answer(batch, results)

    def _answer(self, batch: list[_Waiting], results: Sequence[IntakeResult | None]) -> None:
        woken = sorted(
            {mailbox_id for result in results if result for mailbox_id in result.mailbox_ids}
        )
        if woken and self._on_recorded is not None:
            self._on_recorded(woken)
        for item, result in zip(batch, results, strict=True):
            if result is not None and not item.future.done():
                item.future.set_result(result)

    @staticmethod
    async def _commit(
        connection: AsyncConnection, batch: Sequence[_Waiting]
    ) -> list[IntakeResult | None]:
        results = await record_notifications(
            connection, [(item.email_address, item.history_id) for item in batch]
        )
        await connection.commit()
        return list(results)

    @staticmethod
    def _fail(batch: Sequence[_Waiting], exc: Exception) -> None:
        logger.error(
            "gmail.push.record_failed", extra={"error": type(exc).__name__, "batch": len(batch)}
        )
        for item in batch:
            if not item.future.done():
                item.future.set_exception(RecordFailed(type(exc).__name__))

"""Finishing sends that a crash or a lost connection left `queued`.

A row is `queued` only between its commit and the end of its delivery, which takes
seconds (`RetryPolicy.budget` bounds the waits). One still queued after
`SEND_STALE_AFTER_SECONDS` was interrupted, and it may or may not have gone out:

- Gmail route, mailbox active: look the Message-ID up in the mailbox
  (`q=rfc822msgid:`). Found: record it as sent with Gmail's ids. Not found: it never
  left, so deliver it now (the normal path, fallback included). Gmail unreachable:
  leave it for the next pass.
- Gmail route, mailbox disconnected meanwhile: nothing can be checked, so it is marked
  failed rather than risk sending it twice.
- Default route: SMTP keeps no record to ask, so likewise failed, never re-sent.

Each row is claimed with a conditional UPDATE first, so several replicas running this
at once never handle the same row twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from app.db import session_scope, utcnow
from app.google import GoogleError
from app.mailboxes.access import MailboxDisconnected
from app.mailboxes.models import Mailbox, MailboxStatus
from app.sending.delivery import (
    Delivery,
    deliver_message,
    find_in_gmail,
    read_back_message_id,
    record_failed,
    record_gmail_sent,
)
from app.sending.repository import SendingRepository
from app.threads.models import MessageStatus, SentVia

__all__ = ["ReconcileReport", "reconcile_message", "reconcile_outbox", "run_reconciler"]

logger = logging.getLogger("leadmail.sending")

# A row Gmail could not be asked about for this long is given up on.
GIVE_UP_AFTER = timedelta(days=1)

Outcome = Literal["found", "resent", "failed", "deferred", "resolved"]


@dataclass(slots=True)
class ReconcileReport:
    claimed: int = 0
    found: int = 0  # had gone out through Gmail: recorded as sent
    resent: int = 0  # had not gone out: delivered now
    failed: int = 0  # outcome unknowable: marked failed, not re-sent
    deferred: int = 0  # Gmail did not answer: left for the next pass

    def count(self, outcome: Outcome) -> None:
        if outcome != "resolved":
            setattr(self, outcome, getattr(self, outcome) + 1)


async def reconcile_outbox(
    delivery: Delivery,
    *,
    stale_after: timedelta,
    limit: int = 100,
    now: datetime | None = None,
) -> ReconcileReport:
    """One pass over rows queued since before `now - stale_after` (oldest first)."""
    now = now or utcnow()
    report = ReconcileReport()
    async with session_scope(delivery.sessionmaker) as session:
        stale = await SendingRepository(session).stale_queued(now - stale_after, limit)
    for message_id, seen_updated_at in stale:
        async with session_scope(delivery.sessionmaker) as session:
            claimed = await SendingRepository(session).claim_queued(
                message_id, seen_updated_at, utcnow()
            )
        if not claimed:
            continue
        report.claimed += 1
        report.count(await reconcile_message(delivery, message_id))
    if report.claimed:
        logger.info("sending.reconcile.pass", extra=_counts(report))
    return report


async def reconcile_message(delivery: Delivery, message_id: str) -> Outcome:
    """Settle one interrupted send (the caller has claimed it)."""
    async with session_scope(delivery.sessionmaker) as session:
        message = await SendingRepository(session).get_message(message_id)
        if message is None or message.status != MessageStatus.QUEUED:
            return "resolved"
        mailbox = await session.get(Mailbox, message.mailbox_id) if message.mailbox_id else None

    if message.sent_via != SentVia.GMAIL:
        await record_failed(
            delivery,
            message_id,
            "interrupted while handing the message to the default sender; whether it went "
            "out cannot be known, so it was not sent again",
        )
        return "failed"
    if mailbox is None or mailbox.status != MailboxStatus.ACTIVE:
        await record_failed(delivery, message_id, _unknowable("the mailbox is disconnected"))
        return "failed"

    assert message.rfc822_message_id is not None
    try:
        found = await find_in_gmail(delivery.access, mailbox, message.rfc822_message_id)
    except MailboxDisconnected as exc:
        await record_failed(delivery, message_id, _unknowable(exc.reason))
        return "failed"
    except GoogleError as exc:
        if utcnow() - message.created_at > GIVE_UP_AFTER:
            await record_failed(delivery, message_id, _unknowable(f"Gmail keeps failing: {exc}"))
            return "failed"
        logger.warning(
            "sending.reconcile.deferred", extra={"message_id": message_id, "error": str(exc)}
        )
        return "deferred"

    if found is not None:
        rfc822_id = await read_back_message_id(
            delivery.access, mailbox, found.id, message.rfc822_message_id
        )
        await record_gmail_sent(delivery, message_id, mailbox.id, found, rfc822_id, 0)
        logger.info("sending.reconcile.found", extra={"message_id": message_id})
        return "found"
    logger.info("sending.reconcile.resend", extra={"message_id": message_id})
    await deliver_message(delivery, message_id)
    return "resent"


async def run_reconciler(
    get_delivery: Callable[[], Delivery | None],
    *,
    interval: float,
    stale_after: timedelta,
    stop: asyncio.Event,
) -> None:
    """Reconcile every `interval` seconds until `stop` is set; errors are logged, not fatal."""
    while not stop.is_set():
        delivery = get_delivery()
        if delivery is not None:
            try:
                await reconcile_outbox(delivery, stale_after=stale_after)
            except Exception:
                logger.exception("sending.reconcile.failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


@asynccontextmanager
async def reconciler_running(
    get_delivery: Callable[[], Delivery | None], *, interval: float, stale_after: timedelta
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_reconciler(get_delivery, interval=interval, stale_after=stale_after, stop=stop),
        name="sending.reconciler",
    )
    try:
        yield
    finally:
        stop.set()
        await task


def _counts(report: ReconcileReport) -> dict[str, int]:
    return {
        "claimed": report.claimed,
        "found": report.found,
        "resent": report.resent,
        "failed": report.failed,
        "deferred": report.deferred,
    }


def _unknowable(why: str) -> str:
    return (
        f"interrupted while sending through Gmail, and {why}: whether it went out cannot be "
        "checked, so it was not sent again"
    )

"""Periodic work in the service process, safe with several replicas.

Each pass:
- renews ``users.watch`` for every active mailbox whose last renewal is older than
  ``watch_renew_after_seconds`` (daily) or whose watch expires within a day;
- marks for a safety sync (``Mailbox.sync_requested``) every active mailbox that has
  had no push and no sync for ``safety_sync_after_seconds``, since Google may drop or
  delay notifications;
- refreshes the mailboxes-by-status gauge and forgets expired consents.

A mailbox's renewal runs under a database lease named after it, so two replicas never
renew the same watch at once and a crashed holder blocks nobody beyond the lease's
time to live. Tests drive one pass with ``await run_duties_once(app, now=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import session_scope, utcnow
from app.leases import acquire_lease, release_lease
from app.mailboxes.access import MailboxAccess, update_mailbox_gauge
from app.mailboxes.repository import MailboxRepository, OAuthStateRepository
from app.mailboxes.service import RenewalOutcome, RenewalPolicy, renew_watch

logger = logging.getLogger("leadmail.duties")

# Longer than one watch call with its token refresh; a crashed holder's lease lapses then.
RENEWAL_LEASE_TTL = timedelta(minutes=5)
SWEEP_LEASE_TTL = timedelta(minutes=1)
RENEWALS_PER_PASS = 500
# Renewals in flight at once: Gmail limits concurrent requests per user and project.
RENEWAL_CONCURRENCY = 4
# After a failed renewal a mailbox waits before the next try: 1 min, doubling to 1 h.
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)
OAUTH_STATE_KEEP = timedelta(days=1)


@dataclass
class DutyReport:
    """What one pass did, by mailbox id."""

    renewed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)
    leased_elsewhere: list[str] = field(default_factory=list)
    sync_requested: list[str] = field(default_factory=list)


class Duties:
    """The background loop of one service process (one lease holder)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        access: MailboxAccess,
        *,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.access = access
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.policy = RenewalPolicy(
            renew_after=timedelta(seconds=settings.watch_renew_after_seconds)
        )
        self._task: asyncio.Task[None] | None = None
        # mailbox id -> (failures so far, not before): kept per process, which is enough
        # to keep a broken topic or permission from costing a watch call every pass.
        self._backoff: dict[str, tuple[int, datetime]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="leadmail-duties")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def run_once(self, now: datetime | None = None) -> DutyReport:
        """One pass of every duty; ``now`` (default: the wall clock) is the time the
        pass judges by, so a test can drive it by the sandbox's clock."""
        now = now or utcnow()
        report = DutyReport()
        await self._renew_watches(now, report)
        await self._request_safety_syncs(now, report)
        await self._housekeeping(now)
        return report

    async def _loop(self) -> None:
        interval = self.settings.duty_interval_seconds
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad pass (the database restarting, say) must not end the duties.
                logger.exception("duties.pass_failed")
            await asyncio.sleep(interval)

    async def _renew_watches(self, now: datetime, report: DutyReport) -> None:
        renewed_before, expiring_before = self.policy.bounds(now)
        async with self.sessionmaker() as session:
            due = await MailboxRepository(session).due_for_watch_renewal(
                renewed_before, expiring_before, RENEWALS_PER_PASS
            )
        due = [mailbox_id for mailbox_id in due if self._may_try(mailbox_id, now)]
        slots = asyncio.Semaphore(RENEWAL_CONCURRENCY)

        async def renew(mailbox_id: str) -> None:
            async with slots:
                await self._renew_one(mailbox_id, now, report)

        async with asyncio.TaskGroup() as group:
            for mailbox_id in due:
                group.create_task(renew(mailbox_id))

    async def _renew_one(self, mailbox_id: str, now: datetime, report: DutyReport) -> None:
        lease = f"watch-renewal:{mailbox_id}"
        if not await acquire_lease(self.sessionmaker, lease, self.holder, RENEWAL_LEASE_TTL):
            report.leased_elsewhere.append(mailbox_id)
            return
        outcome: RenewalOutcome = "failed"
        try:
            outcome = await renew_watch(
                self.sessionmaker, self.access, mailbox_id, now=now, policy=self.policy
            )
        except Exception:
            logger.exception("duties.watch_renewal_crashed", extra={"mailbox_id": mailbox_id})
        finally:
            await release_lease(self.sessionmaker, lease, self.holder)
        if outcome == "renewed":
            self._backoff.pop(mailbox_id, None)
            report.renewed.append(mailbox_id)
        elif outcome == "failed":
            self._note_failure(mailbox_id, now)
            report.failed.append(mailbox_id)
        elif outcome == "disconnected":
            self._backoff.pop(mailbox_id, None)
            report.disconnected.append(mailbox_id)

    def _may_try(self, mailbox_id: str, now: datetime) -> bool:
        entry = self._backoff.get(mailbox_id)
        return entry is None or entry[1] <= now

    def _note_failure(self, mailbox_id: str, now: datetime) -> None:
        failures = self._backoff.get(mailbox_id, (0, now))[0] + 1
        delay = min(RETRY_FIRST * 2 ** (failures - 1), RETRY_MAX)
        self._backoff[mailbox_id] = (failures, now + delay)

    async def _request_safety_syncs(self, now: datetime, report: DutyReport) -> None:
        lease = "safety-sync-sweep"
        if not await acquire_lease(self.sessionmaker, lease, self.holder, SWEEP_LEASE_TTL):
            return
        try:
            quiet_since = now - timedelta(seconds=self.settings.safety_sync_after_seconds)
            async with session_scope(self.sessionmaker) as session:
                marked = await MailboxRepository(session).request_safety_sync(quiet_since)
        finally:
            await release_lease(self.sessionmaker, lease, self.holder)
        if marked:
            logger.info("mailbox.safety_sync_requested", extra={"mailboxes": len(marked)})
        report.sync_requested.extend(marked)

    async def _housekeeping(self, now: datetime) -> None:
        async with session_scope(self.sessionmaker) as session:
            await update_mailbox_gauge(MailboxRepository(session))
            await OAuthStateRepository(session).delete_expired(now - OAUTH_STATE_KEEP)


async def run_duties_once(app: FastAPI, *, now: datetime | None = None) -> DutyReport:
    """One pass of the running app's duties (``app.state.duties``), awaited in place."""
    duties: Duties = app.state.duties
    return await duties.run_once(now)

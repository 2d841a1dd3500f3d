"""The sync engine: runs mailbox syncs in the background of the service.

- Woken at once, in this process, by the notifications it records; every
  `poll_interval` it also asks the database which mailboxes have work (notifications
  recorded by other replicas, requested safety syncs, back-offs that ended).
- One sync per mailbox at a time across replicas: a lease row per mailbox.
- Notifications that arrive during a sync fold into the next pass of the same run, so
  a burst costs one or two passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.leases import acquire_lease, release_lease
from app.mailboxes.models import Mailbox, MailboxStatus
from app.metrics import CURSOR_LAG, SYNC_LAG, SYNC_PASSES
from app.sync.access import GmailAccess
from app.sync.repository import SyncStateRepository
from app.sync.service import MailboxSyncer, PassOutcome, PassReport

logger = logging.getLogger("leadmail.sync.engine")


@dataclass(slots=True)
class SyncRun:
    """What one `sync_mailbox` call did."""

    mailbox_id: str
    passes: list[PassReport] = field(default_factory=list)
    busy: bool = False  # another holder had the lease

    @property
    def stored(self) -> int:
        return sum(report.stored for report in self.passes)


@dataclass(slots=True)
class _Ahead:
    """A notification naming history that Gmail does not show yet."""

    pending: int
    attempts: int
    not_before: float


class SyncEngine:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        access: GmailAccess,
        *,
        match_by_references: bool = False,
        poll_interval: float = 2.0,
        max_concurrent_mailboxes: int = 8,
        fetch_concurrency: int = 4,
        lease_ttl: timedelta = timedelta(seconds=120),
        max_passes: int = 4,
        ahead_attempts: int = 6,
        not_found_grace: timedelta = timedelta(minutes=10),
        holder: str | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self.syncer = MailboxSyncer(
            sessionmaker,
            access,
            match_by_references=match_by_references,
            fetch_concurrency=fetch_concurrency,
            not_found_grace=not_found_grace,
        )
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._poll_interval = poll_interval
        self._slots = asyncio.Semaphore(max_concurrent_mailboxes)
        self._lease_ttl = lease_ttl
        self._max_passes = max_passes
        self._ahead_attempts = ahead_attempts
        self._event = asyncio.Event()
        self._woken: set[str] = set()
        self._again: set[str] = set()
        self._busy_retries: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._ahead: dict[str, _Ahead] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    # -- control --------------------------------------------------------------

    def wake(self, mailbox_ids: Iterable[str]) -> None:
        """Sync these mailboxes soon (call after the notification is committed)."""
        self._woken.update(mailbox_ids)
        self._event.set()

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name="sync-engine")

    async def stop(self) -> None:
        tasks = [task for task in (self._loop_task, *self._tasks.values()) if task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._tasks.clear()

    async def idle(self) -> None:
        """Wait until no sync is running (tests and the benchmark use it)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def run_once(self) -> list[SyncRun]:
        """Sync every mailbox that has work now, and wait for them."""
        async with self._sessionmaker() as session:
            due = await SyncStateRepository(session).due_mailbox_ids(utcnow(), limit=1000)
        woken, self._woken = self._woken, set()
        ids = list(dict.fromkeys([*due, *woken]))

        async def bounded(mailbox_id: str) -> SyncRun:
            async with self._slots:
                return await self.sync_mailbox(mailbox_id)

        return list(await asyncio.gather(*(bounded(mailbox_id) for mailbox_id in ids)))

    # -- one mailbox ------------------------------------------------------------

    async def sync_mailbox(self, mailbox_id: str) -> SyncRun:
        """Run passes for one mailbox while it has work, holding its lease."""
        run = SyncRun(mailbox_id)
        lease = f"sync:{mailbox_id}"
        if not await acquire_lease(self._sessionmaker, lease, self.holder, self._lease_ttl):
            run.busy = True
            return run
        heartbeat = asyncio.create_task(self._keep_lease(lease, asyncio.current_task()))
        try:
            await self._passes(run)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await release_lease(self._sessionmaker, lease, self.holder)
        return run

    async def _passes(self, run: SyncRun) -> None:
        for _ in range(self._max_passes):
            async with self._sessionmaker() as session:
                mailbox = await SyncStateRepository(session).get(run.mailbox_id)
            if mailbox is None or not self._due(mailbox):
                return
            pending_before = mailbox.pending_history_id
            cursor_before = mailbox.history_cursor
            report = await self.syncer.run_pass(mailbox, self._attempts.get(mailbox.id, 0))
            SYNC_PASSES.labels(report.outcome.value).inc()
            run.passes.append(report)
            if report.outcome is PassOutcome.DISCONNECTED:
                return
            if report.outcome in (PassOutcome.FAILED, PassOutcome.PARTIAL):
                self._attempts[mailbox.id] = self._attempts.get(mailbox.id, 0) + 1
                return
            self._attempts.pop(mailbox.id, None)
            if (
                pending_before is not None
                and mailbox.last_push_at is not None
                and (cursor_before is None or pending_before > cursor_before)
            ):
                SYNC_LAG.observe(max((utcnow() - mailbox.last_push_at).total_seconds(), 0.0))
            if (
                pending_before is not None
                and report.cursor is not None
                and pending_before > report.cursor
            ):
                await self._note_ahead(mailbox.id, pending_before, report.cursor)
            else:
                self._ahead.pop(mailbox.id, None)

    def _due(self, mailbox: Mailbox) -> bool:
        if mailbox.status != MailboxStatus.ACTIVE:
            return False
        if mailbox.sync_retry_at is not None and mailbox.sync_retry_at > utcnow():
            return False
        pending = mailbox.pending_history_id
        behind = pending is not None and (
            mailbox.history_cursor is None or pending > mailbox.history_cursor
        )
        if not (behind or mailbox.sync_requested or mailbox.history_cursor is None):
            return False
        ahead = self._ahead.get(mailbox.id)
        # A notification ahead of Gmail's history waits out its back-off, unless a
        # newer one arrived.
        return not (
            ahead is not None
            and pending == ahead.pending
            and not mailbox.sync_requested
            and time.monotonic() < ahead.not_before
        )

    async def _note_ahead(self, mailbox_id: str, pending: int, cursor: int) -> None:
        """The pass reached Gmail's current history id, yet a notification names a later
        one: Gmail may not show a change in history yet. Retry with back-off; after a
        few tries wait for a newer notification or the safety sync. The pending id stays
        as it is (it only ever rises), so the hint is parked, not lost."""
        ahead = self._ahead.get(mailbox_id)
        attempts = ahead.attempts + 1 if ahead and ahead.pending == pending else 1
        if attempts > self._ahead_attempts:
            self._ahead[mailbox_id] = _Ahead(pending, attempts, math.inf)
            logger.warning(
                "gmail.history.notification_parked",
                extra={"mailbox_id": mailbox_id, "pending": pending, "cursor": cursor},
            )
            return
        delay = self.syncer.backoff(attempts).total_seconds()
        self._ahead[mailbox_id] = _Ahead(pending, attempts, time.monotonic() + delay)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self.wake, [mailbox_id])

    async def _keep_lease(self, lease: str, owner: asyncio.Task[object] | None) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl.total_seconds() / 3)
            try:
                kept = await acquire_lease(self._sessionmaker, lease, self.holder, self._lease_ttl)
            except Exception:
                logger.exception("sync.lease.renew_failed", extra={"lease": lease})
                continue
            if not kept and owner is not None:
                # Someone else runs this mailbox now: stop before writing anything.
                logger.error("sync.lease.lost", extra={"lease": lease})
                owner.cancel()
                return

    # -- background loop ----------------------------------------------------------

    async def _loop(self) -> None:
        next_poll = 0.0
        while True:
            timeout = max(0.0, next_poll - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
            self._event.clear()
            ids, self._woken = self._woken, set()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._poll_interval
                ids |= set(await self._poll())
            for mailbox_id in ids:
                self._spawn(mailbox_id)

    async def _poll(self) -> list[str]:
        try:
            async with self._sessionmaker() as session:
                repository = SyncStateRepository(session)
                due = await repository.due_mailbox_ids(utcnow(), limit=500)
                CURSOR_LAG.set(await repository.max_cursor_lag())
            return due
        except Exception:
            logger.exception("sync.poll_failed")
            return []

    def _spawn(self, mailbox_id: str) -> None:
        if mailbox_id in self._tasks:
            self._again.add(mailbox_id)
            return
        self._tasks[mailbox_id] = asyncio.create_task(
            self._run_mailbox(mailbox_id), name=f"sync:{mailbox_id}"
        )

    async def _run_mailbox(self, mailbox_id: str) -> None:
        try:
            async with self._slots:
                run = await self.sync_mailbox(mailbox_id)
            if run.busy:
                self._retry_busy(mailbox_id)
            else:
                self._busy_retries.pop(mailbox_id, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("sync.mailbox_failed", extra={"mailbox_id": mailbox_id})
        finally:
            self._tasks.pop(mailbox_id, None)
        if mailbox_id in self._again:
            self._again.discard(mailbox_id)
            self._spawn(mailbox_id)

    def _retry_busy(self, mailbox_id: str) -> None:
        """Another replica holds the mailbox. It re-reads the pending id before letting
        go, but it may have just looked: look again shortly, a few times, then leave it
        to the poll."""
        tries = self._busy_retries.get(mailbox_id, 0) + 1
        if tries > 10:
            self._busy_retries.pop(mailbox_id, None)
            return
        self._busy_retries[mailbox_id] = tries
        asyncio.get_running_loop().call_later(0.2, self.wake, [mailbox_id])

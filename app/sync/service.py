"""One sync pass over one mailbox: history -> known threads -> fetch -> store -> cursor.

Notifications are hints; the stored cursor is the truth. A pass walks every page of
`history.list` after the cursor, keeps the messages whose Gmail thread is one of ours
(decided from the history records alone, so other mail is never fetched), fetches those
with bounded concurrency, stores them and moves the cursor in the same transaction.
Work that could not be done (a rate limit, a message not readable yet) keeps the cursor
before it; the pass then names when to try again.

When Gmail no longer knows the cursor (history 404) the pass recovers instead: it takes
a new cursor from getProfile first, re-reads only our known threads and stores what is
missing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import session_scope, utcnow
from app.google import (
    BadRequest,
    GmailMessage,
    GmailSession,
    GmailThread,
    GoogleError,
    HistoryRecord,
    HistoryType,
    MalformedResponse,
    MessageRef,
    NotFound,
    RateLimited,
)
from app.mail import parse_message_ids
from app.mailboxes.access import MailboxDisconnected
from app.mailboxes.models import Mailbox
from app.metrics import RECOVERED_MESSAGES
from app.sync.access import GmailAccess
from app.sync.ingest import DRAFT_LABEL, MessageStore, message_id_forms
from app.sync.repository import SyncStateRepository
from app.threads.models import Message, Thread
from app.threads.repository import MessageRepository, ThreadRepository

logger = logging.getLogger("leadmail.sync")

T = TypeVar("T")

HISTORY_TYPES: tuple[HistoryType, ...] = (
    "messageAdded",
    "messageDeleted",
    "labelAdded",
    "labelRemoved",
)
REFERENCE_HEADERS = ("Message-ID", "In-Reply-To", "References", "Subject")


class PassOutcome(enum.StrEnum):
    """How a pass ended; the `outcome` label of leadmail_sync_passes_total."""

    SYNCED = "synced"  # reached the mailbox's current history id
    PARTIAL = "partial"  # stopped before unfinished work; retry later
    RECOVERED = "recovered"  # history was gone; known threads re-read
    INITIALIZED = "initialized"  # no cursor yet: took one from getProfile
    FAILED = "failed"  # nothing done; retry later
    DISCONNECTED = "disconnected"  # the grant is gone: nothing to do until relinked


@dataclass(slots=True)
class PassReport:
    outcome: PassOutcome
    cursor: int | None = None
    stored: int = 0
    recovered: int = 0
    retry_at: datetime | None = None
    error: str | None = None


@dataclass(slots=True)
class _Touch:
    """A message the history names, with the first record that named it."""

    record_id: int
    ref: MessageRef
    labels: tuple[str, ...]
    added: bool


@dataclass(slots=True)
class _Plan:
    touches: dict[str, _Touch] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    record_ids: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, records: Sequence[HistoryRecord]) -> _Plan:
        plan = cls()
        for record in records:
            plan.record_ids.append(record.id)
            plan.deleted.update(ref.id for ref in record.messages_deleted)
            named = [(ref, ref.label_ids, True) for ref in record.messages_added]
            named += [
                (change.message, change.message.label_ids, False)
                for change in (*record.labels_added, *record.labels_removed)
            ]
            for ref, labels, added in named:
                touch = plan.touches.get(ref.id)
                if touch is None:
                    plan.touches[ref.id] = _Touch(record.id, ref, labels, added)
                else:
                    # The latest labels tell whether it is still a draft.
                    touch.labels = labels or touch.labels
                    touch.added = touch.added or added
        return plan

    def live(self) -> list[_Touch]:
        """Messages still there and not drafts, in history order."""
        return [
            touch
            for touch in self.touches.values()
            if touch.ref.id not in self.deleted and DRAFT_LABEL not in touch.labels
        ]


@dataclass(slots=True)
class _Match:
    """A new Gmail thread whose first message answers one of our messages."""

    ours: Message
    reason: str
    subject: str


@dataclass(slots=True)
class _Fetched:
    messages: dict[str, GmailMessage] = field(default_factory=dict)
    failures: dict[str, GoogleError] = field(default_factory=dict)


class MailboxSyncer:
    """Runs passes; holds no per-pass state except how long messages have been missing."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        access: GmailAccess,
        *,
        match_by_references: bool = False,
        fetch_concurrency: int = 4,
        not_found_grace: timedelta = timedelta(minutes=10),
        max_backoff: timedelta = timedelta(minutes=5),
    ) -> None:
        self._sessionmaker = sessionmaker
        self._access = access
        self._match_by_references = match_by_references
        self._fetch_concurrency = fetch_concurrency
        self._not_found_grace = not_found_grace
        self._max_backoff = max_backoff
        # (mailbox id, message id) -> when a get first answered 404 without a deletion
        # in history: Gmail may show a message in history before it can be read.
        self._missing_since: dict[tuple[str, str], float] = {}

    def backoff(self, attempt: int) -> timedelta:
        """Jittered exponential delay for the n-th consecutive unfinished pass."""
        base = min(2.0 ** max(attempt, 0) * 0.5, self._max_backoff.total_seconds())
        return timedelta(seconds=base * random.uniform(0.8, 1.2))

    async def run_pass(self, mailbox: Mailbox, attempt: int = 0) -> PassReport:
        """One pass; never raises for Google's answers (they become the report)."""
        try:
            return await self._run_pass(mailbox, attempt)
        except MailboxDisconnected as exc:
            logger.warning(
                "gmail.sync.mailbox_disconnected",
                extra={"mailbox_id": mailbox.id, "reason": exc.reason},
            )
            # Normally the mailbox is now disconnected and never due again; should the
            # row still say active, it must not be retried at every poll.
            retry_at = utcnow() + self._max_backoff
            async with session_scope(self._sessionmaker) as session:
                await SyncStateRepository(session).save_progress(
                    mailbox.id,
                    cursor=mailbox.history_cursor,
                    done=False,
                    now=utcnow(),
                    retry_at=retry_at,
                    error=exc.reason[:2000],
                )
            return PassReport(PassOutcome.DISCONNECTED, retry_at=retry_at, error=exc.reason)

    async def _run_pass(self, mailbox: Mailbox, attempt: int) -> PassReport:
        if mailbox.history_cursor is None:
            return await self._initialize(mailbox, attempt)
        start = mailbox.history_cursor
        try:
            records, current = await self._walk(mailbox, start)
        except NotFound:
            logger.warning(
                "gmail.history.cursor_expired", extra={"mailbox_id": mailbox.id, "cursor": start}
            )
            return await self.recover(mailbox, attempt)
        except GoogleError as exc:
            return await self._give_up(mailbox, start, exc, attempt)

        plan = _Plan.of(records)
        live = plan.live()
        async with self._sessionmaker() as session:
            known = await ThreadRepository(session).known_gmail_threads(
                mailbox.id, {touch.ref.thread_id for touch in live}
            )
            stored = await MessageRepository(session).stored_gmail_ids(
                mailbox.id, [touch.ref.id for touch in live]
            )
        matches: dict[str, _Match] = {}
        failures: dict[str, GoogleError] = {}
        if self._match_by_references:
            matches, failures = await self._match_new_threads(mailbox, live, known)
        wanted = [
            touch
            for touch in live
            if (touch.ref.thread_id in known or touch.ref.thread_id in matches)
            and touch.ref.id not in stored
        ]
        fetched = await self._fetch(mailbox, [touch.ref.id for touch in wanted], "raw")
        failures.update(fetched.failures)

        unfinished = [
            touch.record_id
            for touch in live
            if touch.ref.id in failures and not self._may_skip(mailbox, touch, failures)
        ]
        now = utcnow()
        stored_count = 0
        async with session_scope(self._sessionmaker) as session:
            store = MessageStore(session, mailbox)
            threads = dict(known)
            for gmail_thread_id, match in matches.items():
                first = fetched.messages.get(gmail_thread_id)
                if first is not None:
                    threads[gmail_thread_id] = await self._join_lead_thread(
                        session, mailbox, match, first
                    )
            for touch in wanted:
                message = fetched.messages.get(touch.ref.id)
                thread = threads.get(touch.ref.thread_id)
                if message is None or thread is None or DRAFT_LABEL in message.label_ids:
                    continue
                joined = matches.get(touch.ref.thread_id)
                reason = joined.reason if joined and touch.ref.id == touch.ref.thread_id else None
                result = await store.store(thread, message, match_reason=reason)
                stored_count += result.message is not None
            if unfinished:
                first_gap = min(unfinished)
                cursor = max((rid for rid in plan.record_ids if rid < first_gap), default=start)
                retry_at = self._retry_at(failures.values(), attempt, now)
                error = _describe(failures.values())
            else:
                cursor, retry_at, error = current, None, None
            await SyncStateRepository(session).save_progress(
                mailbox.id,
                cursor=max(cursor, start),
                done=not unfinished,
                now=now,
                retry_at=retry_at,
                error=error,
            )
        for touch in live:
            if touch.ref.id in fetched.messages:
                self._missing_since.pop((mailbox.id, touch.ref.id), None)
        outcome = PassOutcome.PARTIAL if unfinished else PassOutcome.SYNCED
        return PassReport(
            outcome,
            cursor=max(cursor, start),
            stored=stored_count,
            retry_at=retry_at,
            error=error,
        )

    async def recover(self, mailbox: Mailbox, attempt: int = 0) -> PassReport:
        """Re-read our known threads of the mailbox and store what is missing.

        The new cursor is taken before reading, so whatever arrives meanwhile is in
        the next pass's history. Nothing is skipped: if any read fails transiently,
        nothing is saved and the whole recovery runs again later.
        """
        try:
            profile = await self._call(mailbox, lambda gmail: gmail.get_profile())
        except GoogleError as exc:
            return await self._give_up(mailbox, mailbox.history_cursor, exc, attempt)
        async with self._sessionmaker() as session:
            threads = await ThreadRepository(session).gmail_threads_of_mailbox(mailbox.id)
        try:
            listed = await self._read_threads(mailbox, threads)
        except GoogleError as exc:
            return await self._give_up(mailbox, mailbox.history_cursor, exc, attempt)
        async with self._sessionmaker() as session:
            stored = await MessageRepository(session).stored_gmail_ids(
                mailbox.id, [m.id for gt in listed.values() for m in gt.messages]
            )
        missing = [
            message.id
            for gmail_thread in listed.values()
            for message in gmail_thread.messages
            if message.id not in stored and DRAFT_LABEL not in message.label_ids
        ]
        fetched = await self._fetch(mailbox, missing, "raw")
        transient = [exc for exc in fetched.failures.values() if exc.retryable]
        if transient:
            return await self._give_up(mailbox, mailbox.history_cursor, transient[0], attempt)

        by_gmail_id = {thread.gmail_thread_id: thread for thread in threads}
        recovered = 0
        now = utcnow()
        async with session_scope(self._sessionmaker) as session:
            store = MessageStore(session, mailbox)
            for message_id in missing:
                message = fetched.messages.get(message_id)
                thread = by_gmail_id.get(message.thread_id) if message else None
                if message is None or thread is None or DRAFT_LABEL in message.label_ids:
                    continue  # gone since the thread was read: nothing to recover
                result = await store.store(thread, message)
                recovered += result.message is not None
            await SyncStateRepository(session).record_recovery(
                mailbox.id, cursor=profile.history_id, recovered=recovered, now=now
            )
        RECOVERED_MESSAGES.inc(recovered)
        logger.info(
            "gmail.history.recovered",
            extra={"mailbox_id": mailbox.id, "threads": len(threads), "recovered": recovered},
        )
        return PassReport(
            PassOutcome.RECOVERED, cursor=profile.history_id, stored=recovered, recovered=recovered
        )

    async def _initialize(self, mailbox: Mailbox, attempt: int) -> PassReport:
        try:
            profile = await self._call(mailbox, lambda gmail: gmail.get_profile())
        except GoogleError as exc:
            return await self._give_up(mailbox, None, exc, attempt)
        async with session_scope(self._sessionmaker) as session:
            await SyncStateRepository(session).save_progress(
                mailbox.id,
                cursor=profile.history_id,
                done=True,
                now=utcnow(),
                retry_at=None,
                error=None,
            )
        return PassReport(PassOutcome.INITIALIZED, cursor=profile.history_id)

    async def _walk(self, mailbox: Mailbox, start: int) -> tuple[list[HistoryRecord], int]:
        """Every record after `start` and the mailbox's current history id."""
        records: list[HistoryRecord] = []
        page_token: str | None = None
        while True:
            page = await self._call(
                mailbox,
                lambda gmail, token=page_token: gmail.list_history(  # type: ignore[misc]
                    start, page_token=token, history_types=HISTORY_TYPES
                ),
            )
            records.extend(page.records)
            if not page.next_page_token:
                return records, page.history_id
            page_token = page.next_page_token

    async def _match_new_threads(
        self, mailbox: Mailbox, live: Sequence[_Touch], known: dict[str, Thread]
    ) -> tuple[dict[str, _Match], dict[str, GoogleError]]:
        """Read the headers of each new Gmail thread's first message; keep those that
        answer a message we sent."""
        firsts = [
            touch.ref.id
            for touch in live
            if touch.added
            and touch.ref.id == touch.ref.thread_id
            and touch.ref.thread_id not in known
        ]
        fetched = await self._fetch(mailbox, firsts, "metadata")
        matches: dict[str, _Match] = {}
        if not fetched.messages:
            return matches, fetched.failures
        async with self._sessionmaker() as session:
            repository = MessageRepository(session)
            for message in fetched.messages.values():
                in_reply_to = parse_message_ids(message.header("In-Reply-To"))
                references = parse_message_ids(message.header("References"))
                ours = await repository.outbound_by_rfc822_ids(
                    mailbox.org_id, message_id_forms([*in_reply_to, *references])
                )
                if not ours:
                    continue
                named = {form for mid in in_reply_to for form in message_id_forms([mid])}
                direct = [row for row in ours if row.rfc822_message_id in named]
                chosen = (direct or ours)[-1]
                matches[message.thread_id] = _Match(
                    chosen,
                    "in_reply_to" if direct else "references",
                    " ".join((message.header("Subject") or "").split()),
                )
        return matches, fetched.failures

    async def _join_lead_thread(
        self, session: AsyncSession, mailbox: Mailbox, match: _Match, first: GmailMessage
    ) -> Thread:
        """The thread the new Gmail thread joins: the matched message's own thread when it
        has no Gmail thread yet (sent through the default sender), else a new thread of
        the same lead (the customer changed the subject, so Gmail split it)."""
        threads = ThreadRepository(session)
        ours = match.ours.thread_id and await threads.by_id(match.ours.thread_id)
        if ours and ours.gmail_thread_id is None:
            ours.mailbox_id = mailbox.id
            ours.gmail_thread_id = first.thread_id
            await session.flush()
            return ours
        at = first.internal_date or utcnow()
        return await threads.add(
            Thread(
                org_id=match.ours.org_id,
                lead_id=match.ours.lead_id,
                mailbox_id=mailbox.id,
                gmail_thread_id=first.thread_id,
                subject=match.subject or (ours.subject if ours else ""),
                sent_via=None,
                created_by=None,
                message_count=0,
                created_at=at,
                last_message_at=at,
            )
        )

    async def _read_threads(
        self, mailbox: Mailbox, threads: Sequence[Thread]
    ) -> dict[str, GmailThread]:
        """threads.get (ids and labels only) for each known thread; a deleted thread
        is skipped, a transient failure raises."""
        semaphore = asyncio.Semaphore(self._fetch_concurrency)
        listed: dict[str, GmailThread] = {}

        async def read(gmail_thread_id: str) -> None:
            async with semaphore:
                try:
                    listed[gmail_thread_id] = await self._call(
                        mailbox,
                        lambda gmail: gmail.get_thread(gmail_thread_id, format="minimal"),
                    )
                except (NotFound, BadRequest):
                    return

        await _gather_or_raise(
            read(thread.gmail_thread_id) for thread in threads if thread.gmail_thread_id
        )
        return listed

    async def _fetch(self, mailbox: Mailbox, message_ids: Sequence[str], format: str) -> _Fetched:
        """messages.get for each id, a few at a time; after a rate limit or outage the
        remaining ids are not tried (they stay unfinished)."""
        result = _Fetched()
        if not message_ids:
            return result
        semaphore = asyncio.Semaphore(self._fetch_concurrency)
        stop: list[GoogleError] = []

        async def fetch(message_id: str) -> None:
            async with semaphore:
                if stop:
                    result.failures[message_id] = stop[0]
                    return
                try:
                    if format == "metadata":
                        result.messages[message_id] = await self._call(
                            mailbox,
                            lambda gmail: gmail.get_message(
                                message_id, "metadata", REFERENCE_HEADERS
                            ),
                        )
                    else:
                        result.messages[message_id] = await self._call(
                            mailbox, lambda gmail: gmail.get_message(message_id, "raw")
                        )
                except GoogleError as exc:
                    result.failures[message_id] = exc
                    if exc.retryable:
                        stop.append(exc)

        await asyncio.gather(*(fetch(message_id) for message_id in dict.fromkeys(message_ids)))
        return result

    def _may_skip(self, mailbox: Mailbox, touch: _Touch, failures: dict[str, GoogleError]) -> bool:
        """Whether a failed message may be left behind for good.

        Only message-specific refusals qualify (404, 400, an unreadable body), and only
        once they have lasted `not_found_grace`: a message can be named by history
        before it can be read. Rate limits and outages never qualify.
        """
        exc = failures[touch.ref.id]
        if not isinstance(exc, NotFound | BadRequest | MalformedResponse):
            return False
        key = (mailbox.id, touch.ref.id)
        first = self._missing_since.setdefault(key, time.monotonic())
        if time.monotonic() - first < self._not_found_grace.total_seconds():
            return False
        self._missing_since.pop(key, None)
        logger.warning(
            "gmail.sync.message_skipped",
            extra={"mailbox_id": mailbox.id, "gmail_message_id": touch.ref.id, "error": str(exc)},
        )
        return True

    def _retry_at(self, failures: Iterable[GoogleError], attempt: int, now: datetime) -> datetime:
        retry_at = now + self.backoff(attempt)
        for exc in failures:
            if isinstance(exc, RateLimited) and exc.retry_at is not None:
                retry_at = max(retry_at, exc.retry_at)
        return retry_at

    async def _give_up(
        self, mailbox: Mailbox, cursor: int | None, exc: GoogleError, attempt: int
    ) -> PassReport:
        """A pass that did nothing: keep the cursor, say when to try again."""
        now = utcnow()
        retry_at = self._retry_at([exc], attempt, now)
        if not exc.retryable:
            retry_at = max(retry_at, now + self._max_backoff)
        logger.warning(
            "gmail.history.sync_failed",
            extra={"mailbox_id": mailbox.id, "error": str(exc), "retry_at": retry_at.isoformat()},
        )
        async with session_scope(self._sessionmaker) as session:
            await SyncStateRepository(session).save_progress(
                mailbox.id,
                cursor=cursor,
                done=False,
                now=now,
                retry_at=retry_at,
                error=_describe([exc]),
            )
        return PassReport(PassOutcome.FAILED, cursor=cursor, retry_at=retry_at, error=str(exc))

    async def _call(self, mailbox: Mailbox, fn: Callable[[GmailSession], Awaitable[T]]) -> T:
        return await self._access.call(mailbox, fn)


async def _gather_or_raise(awaitables: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(item) for item in awaitables]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _describe(failures: Iterable[GoogleError]) -> str | None:
    texts = sorted({f"{type(exc).__name__}: {exc}" for exc in failures})
    return "; ".join(texts)[:2000] or None

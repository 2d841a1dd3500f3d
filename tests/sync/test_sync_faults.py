"""What a pass does when Gmail misbehaves: driven pass by pass (background sync off),
against the sandbox's faults, with pushes recorded by the real webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import session_scope, utcnow
from app.mailboxes.models import Mailbox
from app.sync.engine import SyncEngine, SyncRun
from app.sync.intake import record_notification
from app.sync.service import PassOutcome
from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sync.flows import (
    Conversation,
    gmail_gets,
    module_service,
    start_conversation,
    wait_until,
)


@pytest.fixture(scope="module")
async def live_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str
) -> AsyncIterator[LiveService]:
    async with module_service(sandbox, database_url, fernet_key) as service:
        yield service


@pytest.fixture(autouse=True)
def clear_faults(sandbox: RunningSandbox) -> Iterator[None]:
    yield
    sandbox.clear_faults()


async def load(sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str) -> Mailbox:
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


async def sync_now(service: LiveService, mailbox_id: str) -> SyncRun:
    engine = service.app.state.sync_engine
    return await service.run(engine.sync_mailbox(mailbox_id))  # type: ignore[no-any-return]


async def sync_when_due(
    service: LiveService, sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str
) -> SyncRun:
    """Wait out the mailbox's back-off, then sync it."""
    mailbox = await load(sessionmaker, mailbox_id)
    if mailbox.sync_retry_at is not None:
        await asyncio.sleep(max((mailbox.sync_retry_at - utcnow()).total_seconds(), 0) + 0.05)
    return await sync_now(service, mailbox_id)


async def notified(
    sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str, history_id: int
) -> None:
    async def recorded() -> bool:
        mailbox = await load(sessionmaker, mailbox_id)
        return (mailbox.pending_history_id or 0) >= history_id

    await wait_until(recorded)


def history_id_of(talk: Conversation, gmail_message_id: str) -> int:
    listed = talk.sandbox.messages(talk.rep)
    return int(next(m for m in listed if m["id"] == gmail_message_id)["historyId"])


async def settled_conversation(
    service: LiveService, sandbox: RunningSandbox, sessionmaker: async_sessionmaker[AsyncSession]
) -> Conversation:
    talk = await start_conversation(service, sandbox)
    sent_copy = talk.sent["gmail_message_id"]
    await notified(sessionmaker, talk.mailbox_id, history_id_of(talk, sent_copy))
    run = await sync_now(service, talk.mailbox_id)
    assert [report.outcome for report in run.passes] == [PassOutcome.SYNCED]
    assert run.stored == 0  # our own sent copy is already stored by the send
    return talk


async def reply_and_wait_for_push(
    talk: Conversation, sessionmaker: async_sessionmaker[AsyncSession], text: str
) -> tuple[str, int]:
    gmail_id = talk.reply(text)["delivered"][0]["id"]
    history_id = history_id_of(talk, gmail_id)
    await notified(sessionmaker, talk.mailbox_id, history_id)
    return gmail_id, history_id


async def test_history_gap_recovery_rereads_only_known_threads(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    untracked = sandbox.customer_new_thread(talk.customer, [talk.rep], "Other", "Unrelated.")
    gmail_id, history_id = await reply_and_wait_for_push(talk, sessionmaker, "After the gap.")
    sandbox.expire_history(talk.rep)  # our cursor is now older than Gmail keeps
    sandbox.clear_calls()

    run = await sync_now(live_service, talk.mailbox_id)

    assert [report.outcome for report in run.passes] == [PassOutcome.RECOVERED]
    assert run.passes[0].recovered == 1
    messages = (await talk.thread())["messages"]
    assert [m["gmail_message_id"] for m in messages] == [talk.sent["gmail_message_id"], gmail_id]
    mailbox = await load(sessionmaker, talk.mailbox_id)
    assert mailbox.recovered_messages == 1
    assert mailbox.last_recovery_at is not None
    assert mailbox.history_cursor is not None and mailbox.history_cursor >= history_id
    shown = await talk.mailbox()
    assert shown["recovered_messages"] == 1 and shown["last_recovery_at"] is not None
    # Only the known thread was re-read: no full import, nothing untracked fetched.
    assert len(sandbox.calls("gmail.users.threads.get", account=talk.rep)) == 1
    assert sandbox.calls("gmail.users.messages.list", account=talk.rep) == []
    assert gmail_gets(sandbox, untracked["delivered"][0]["id"]) == []

    # Afterwards incremental sync resumes from the new cursor.
    later, _ = await reply_and_wait_for_push(talk, sessionmaker, "And one more.")
    run = await sync_now(live_service, talk.mailbox_id)
    assert [report.outcome for report in run.passes] == [PassOutcome.SYNCED]
    assert (await talk.thread())["messages"][-1]["gmail_message_id"] == later
    assert (await load(sessionmaker, talk.mailbox_id)).recovered_messages == 1


@pytest.mark.parametrize("status", [429, 403])
async def test_rate_limit_on_history_backs_off_until_the_stated_time(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
    status: int,
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    cursor = (await load(sessionmaker, talk.mailbox_id)).history_cursor
    _, history_id = await reply_and_wait_for_push(talk, sessionmaker, "Rate limited?")
    sandbox.fault(
        "gmail.users.history.list", "rate_limit", account=talk.rep, retry_after=1, status=status
    )

    run = await sync_now(live_service, talk.mailbox_id)

    assert [report.outcome for report in run.passes] == [PassOutcome.FAILED]
    mailbox = await load(sessionmaker, talk.mailbox_id)
    assert mailbox.history_cursor == cursor
    assert mailbox.sync_retry_at is not None
    assert (mailbox.sync_retry_at - utcnow()).total_seconds() > 0.5  # Gmail said 1 s
    assert "RateLimited" in (mailbox.sync_error or "")
    assert (await talk.mailbox())["sync_error"] == mailbox.sync_error  # shown to the frontend
    early = await sync_now(live_service, talk.mailbox_id)
    assert early.passes == []  # not before the stated time

    run = await sync_when_due(live_service, sessionmaker, talk.mailbox_id)

    assert [report.outcome for report in run.passes] == [PassOutcome.SYNCED]
    assert (await talk.thread())["messages"][-1]["reply_text"] == "Rate limited?"
    mailbox = await load(sessionmaker, talk.mailbox_id)
    assert mailbox.history_cursor is not None and mailbox.history_cursor >= history_id
    assert mailbox.sync_retry_at is None
    assert mailbox.sync_error is None


async def test_unavailable_get_keeps_the_cursor_before_the_unfinished_message(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    gmail_id, history_id = await reply_and_wait_for_push(talk, sessionmaker, "Try again.")
    sandbox.fault("gmail.users.messages.get", "unavailable", account=talk.rep)

    run = await sync_now(live_service, talk.mailbox_id)

    assert [report.outcome for report in run.passes] == [PassOutcome.PARTIAL]
    mailbox = await load(sessionmaker, talk.mailbox_id)
    assert mailbox.history_cursor is not None and mailbox.history_cursor < history_id
    assert mailbox.sync_retry_at is not None
    assert len((await talk.thread())["messages"]) == 1

    run = await sync_when_due(live_service, sessionmaker, talk.mailbox_id)

    assert [report.outcome for report in run.passes] == [PassOutcome.SYNCED]
    messages = (await talk.thread())["messages"]
    assert [m["gmail_message_id"] for m in messages][-1] == gmail_id
    assert (await load(sessionmaker, talk.mailbox_id)).history_cursor >= history_id  # type: ignore[operator]


async def test_not_found_right_after_the_notification_is_retried(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    gmail_id, history_id = await reply_and_wait_for_push(talk, sessionmaker, "Not yet readable.")
    sandbox.fault("gmail.users.messages.get", "not_found", count=2, account=talk.rep)

    outcomes = []
    for _ in range(3):
        run = await sync_when_due(live_service, sessionmaker, talk.mailbox_id)
        outcomes += [report.outcome for report in run.passes]
        if outcomes[-1] is PassOutcome.PARTIAL:
            cursor = (await load(sessionmaker, talk.mailbox_id)).history_cursor
            assert cursor is not None and cursor < history_id  # never past undone work

    assert outcomes == [PassOutcome.PARTIAL, PassOutcome.PARTIAL, PassOutcome.SYNCED]
    assert (await talk.thread())["messages"][-1]["gmail_message_id"] == gmail_id
    assert len(gmail_gets(sandbox, gmail_id)) == 3


async def test_message_deleted_before_get_is_skipped(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    deleted, _ = await reply_and_wait_for_push(talk, sessionmaker, "Deleted soon.")
    sandbox.fault("gmail.users.messages.get", "delete_before_get", account=talk.rep)

    first = await sync_now(live_service, talk.mailbox_id)
    # The 404 might be a message not readable yet; the next walk sees it deleted.
    second = await sync_when_due(live_service, sessionmaker, talk.mailbox_id)

    assert [report.outcome for report in first.passes] == [PassOutcome.PARTIAL]
    assert [report.outcome for report in second.passes] == [PassOutcome.SYNCED]
    assert len(gmail_gets(sandbox, deleted)) == 1  # never fetched again
    kept, history_id = await reply_and_wait_for_push(talk, sessionmaker, "This one stays.")
    await sync_now(live_service, talk.mailbox_id)
    messages = (await talk.thread())["messages"]
    assert [m["gmail_message_id"] for m in messages] == [talk.sent["gmail_message_id"], kept]
    assert (await load(sessionmaker, talk.mailbox_id)).history_cursor >= history_id  # type: ignore[operator]


async def test_notification_ahead_of_history_is_retried_not_looped(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    gmail_id, _ = await reply_and_wait_for_push(talk, sessionmaker, "Lagging history.")
    sandbox.fault("gmail.users.history.list", "history_lag", account=talk.rep)
    sandbox.clear_calls()

    first = await sync_now(live_service, talk.mailbox_id)

    # History does not show the change yet: one walk, then a pause, not a busy loop.
    assert [report.outcome for report in first.passes] == [PassOutcome.SYNCED]
    assert len(sandbox.calls("gmail.users.history.list", account=talk.rep)) == 1
    assert len((await talk.thread())["messages"]) == 1

    async def visible() -> bool:
        await sync_now(live_service, talk.mailbox_id)
        messages = (await talk.thread())["messages"]
        return messages[-1]["gmail_message_id"] == gmail_id

    await wait_until(visible, timeout=5.0, interval=0.2)


async def test_a_notification_history_never_shows_is_parked_not_lowered(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    cursor = (await load(sessionmaker, talk.mailbox_id)).history_cursor
    assert cursor is not None
    phantom = cursor + 10_000  # a hint Gmail's history will not reach
    async with session_scope(sessionmaker) as session:
        await record_notification(session, talk.rep, phantom)

    async def engine_of_one_retry() -> SyncEngine:
        state = live_service.app.state
        return SyncEngine(state.sessionmaker, state.mailbox_access, ahead_attempts=1)

    engine = await live_service.run(engine_of_one_retry())

    async def sync() -> SyncRun:
        return await live_service.run(engine.sync_mailbox(talk.mailbox_id))

    sandbox.clear_calls()
    assert [r.outcome for r in (await sync()).passes] == [PassOutcome.SYNCED]
    assert (await sync()).passes == []  # backing off, not looping
    await asyncio.sleep(1.3)  # the first back-off (1 s, jittered)
    assert [r.outcome for r in (await sync()).passes] == [PassOutcome.SYNCED]
    # Given up: parked until something new arrives, and never lowered.
    assert (await sync()).passes == []
    assert len(sandbox.calls("gmail.users.history.list", account=talk.rep)) == 2
    assert (await load(sessionmaker, talk.mailbox_id)).pending_history_id == phantom

    # A newer notification (a real reply, higher still) is synced at once.
    gmail_id = talk.reply("Past the phantom.")["delivered"][0]["id"]
    async with session_scope(sessionmaker) as session:
        await record_notification(session, talk.rep, phantom + 1)
    run = await sync()
    assert run.passes and run.passes[0].outcome is PassOutcome.SYNCED
    assert (await talk.thread())["messages"][-1]["gmail_message_id"] == gmail_id


async def test_a_failed_first_sync_leaves_the_cursor_unset_not_zero(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await settled_conversation(live_service, sandbox, sessionmaker)
    async with session_scope(sessionmaker) as session:
        mailbox = await session.get(Mailbox, talk.mailbox_id)
        assert mailbox is not None
        mailbox.history_cursor = None  # as if the watch's history id was never stored
    sandbox.fault("gmail.users.getProfile", "unavailable", account=talk.rep)

    failed = await sync_now(live_service, talk.mailbox_id)
    assert [r.outcome for r in failed.passes] == [PassOutcome.FAILED]
    # Zero would send the next pass walking history from the start (a 404, then a
    # needless gap recovery); unset means "take the cursor from getProfile".
    assert (await load(sessionmaker, talk.mailbox_id)).history_cursor is None

    sandbox.clear_calls()
    again = await sync_when_due(live_service, sessionmaker, talk.mailbox_id)
    assert [r.outcome for r in again.passes] == [PassOutcome.INITIALIZED]
    current = int(sandbox.account(talk.rep)["history_id"])
    assert (await load(sessionmaker, talk.mailbox_id)).history_cursor == current
    assert sandbox.calls("gmail.users.threads.get", account=talk.rep) == []

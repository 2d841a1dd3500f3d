"""Two-way sync end to end: the service under uvicorn, the sandbox as Google, pushes over
loopback, the background sync engine on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.mailboxes.models import Mailbox
from app.threads.models import Message
from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sync.factories import push_envelope
from tests.sync.flows import gmail_gets, module_service, start_conversation, wait_until

WEBHOOK = "/v1/webhooks/gmail"


@pytest.fixture(scope="module")
async def live_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str
) -> AsyncIterator[LiveService]:
    async with module_service(
        sandbox, database_url, fernet_key, background_duties=True, sync_poll_interval_seconds=0.2
    ) as service:
        yield service


@pytest.fixture(autouse=True)
def clear_faults(sandbox: RunningSandbox) -> Iterator[None]:
    """Push faults are the sandbox's, not an account's: none may leak into the next test."""
    yield
    sandbox.clear_faults()


async def stored_copies(
    sessionmaker: async_sessionmaker[AsyncSession], gmail_message_id: str
) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.gmail_message_id == gmail_message_id)
        )
    return int(count or 0)


async def load_mailbox(sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str) -> Mailbox:
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


async def test_lead_reply_is_stored_and_visible(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    talk = await start_conversation(live_service, sandbox)

    reply = talk.reply("Thanks, sounds good.\nLena")
    delivered = reply["delivered"][0]

    messages = await talk.wait_for_messages(2)
    ours, theirs = messages
    assert ours["id"] == talk.sent["id"]  # our own sent copy was not stored again
    assert theirs["direction"] == "inbound"
    assert theirs["status"] == "received"
    assert theirs["sent_via"] is None
    assert theirs["from_address"] == talk.customer
    assert theirs["to"] == [talk.rep]
    assert theirs["gmail_message_id"] == delivered["id"]
    assert theirs["gmail_thread_id"] == talk.gmail_thread_id
    assert theirs["rfc822_message_id"] == reply["message_id"]
    assert theirs["reply_text"] == "Thanks, sounds good.\nLena"
    assert "wrote:" in theirs["body_text"]  # the quoted history stays in the full body
    assert theirs["received_at"] is not None
    assert theirs["subject"] == "Re: Our offer"
    thread = await talk.thread()
    assert thread["message_count"] == 2
    assert thread["last_message_at"] >= theirs["created_at"]
    mailbox = await talk.mailbox()
    assert mailbox["last_synced_at"] is not None
    assert mailbox["last_push_at"] is not None


async def test_html_reply_is_sanitised_and_attachments_listed(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    talk = await start_conversation(live_service, sandbox)
    talk.reply(
        "See attached.",
        html='<p onclick="steal()">See <b>attached</b>.</p><script>alert(1)</script>',
        attachments=[("quote.pdf", "application/pdf", b"%PDF-1.4 fake" * 10)],
    )

    theirs = (await talk.wait_for_messages(2))[1]
    assert "<b>attached</b>" in theirs["body_html"]
    assert "script" not in theirs["body_html"]
    assert "onclick" not in theirs["body_html"]
    assert theirs["attachments"] == [
        {"filename": "quote.pdf", "mime_type": "application/pdf", "size": 130}
    ]


async def test_reps_own_reply_written_in_gmail_is_outbound(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    talk = await start_conversation(live_service, sandbox)
    talk.reply("Can you do Tuesday?")
    await talk.wait_for_messages(2)

    sandbox.rep_reply_in_gmail(talk.rep, thread_id=talk.gmail_thread_id, text="Tuesday works.")

    mine = (await talk.wait_for_messages(3))[2]
    assert mine["direction"] == "outbound"
    assert mine["status"] == "sent"
    assert mine["sent_via"] == "gmail"
    assert mine["from_address"] == talk.rep
    assert mine["sent_at"] is not None
    assert mine["reply_text"] == "Tuesday works."


async def test_thread_started_by_the_customer_is_never_fetched_or_stored(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    talk = await start_conversation(live_service, sandbox)
    started = sandbox.customer_new_thread(
        talk.customer, [talk.rep], "Something else entirely", "Hello, new topic."
    )
    untracked = started["delivered"][0]["id"]
    # A later reply in the known thread: once it shows, the sync has walked past the
    # customer's own thread.
    talk.reply("And about the offer: yes.")
    await talk.wait_for_messages(2)

    assert gmail_gets(sandbox, untracked) == []
    threads = await talk.lead_threads()
    assert [thread["id"] for thread in threads] == [talk.thread_id]


async def test_duplicate_and_reordered_pushes_store_each_reply_once(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await start_conversation(live_service, sandbox)
    sandbox.push_fault("duplicate", count=2, email=talk.rep)
    first = talk.reply("First answer.")["delivered"][0]["id"]
    sandbox.push_fault("reorder", count=2, email=talk.rep)
    second = talk.reply("Second answer.")["delivered"][0]["id"]
    third = talk.reply("Third answer.")["delivered"][0]["id"]

    messages = await talk.wait_for_messages(4)

    assert [m["reply_text"] for m in messages[1:]] == [
        "First answer.",
        "Second answer.",
        "Third answer.",
    ]
    for gmail_id in (first, second, third):
        assert await stored_copies(sessionmaker, gmail_id) == 1


async def test_dropped_push_is_found_by_the_safety_sync(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await start_conversation(live_service, sandbox)
    await talk.quiet(cursor_of(sessionmaker, talk.mailbox_id))
    # Two: like Gmail, the sandbox now and then writes a second history record for one
    # change, and each record is pushed (the one-per-second limit is off here).
    sandbox.push_fault("drop", count=2, email=talk.rep)
    talk.reply("Did this one get lost?")
    await asyncio.sleep(0.5)
    assert len((await talk.thread())["messages"]) == 1  # no push, no sync

    # The duty that asks for a sync of mailboxes with no recent push or sync.
    duties = live_service.app.state.duties
    later = utcnow() + timedelta(seconds=live_service.settings.safety_sync_after_seconds + 60)
    report = await live_service.run(duties.run_once(now=later))
    assert talk.mailbox_id in report.sync_requested

    messages = await talk.wait_for_messages(2)
    assert messages[1]["reply_text"] == "Did this one get lost?"

    async def satisfied() -> bool:
        return not (await load_mailbox(sessionmaker, talk.mailbox_id)).sync_requested

    await wait_until(satisfied)


async def _settled(sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str) -> bool:
    mailbox = await load_mailbox(sessionmaker, mailbox_id)
    return mailbox.pending_history_id is None or (
        mailbox.history_cursor is not None and mailbox.pending_history_id <= mailbox.history_cursor
    )


def cursor_of(
    sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str
) -> Callable[[], Awaitable[int | None]]:
    async def load() -> int | None:
        return (await load_mailbox(sessionmaker, mailbox_id)).history_cursor

    return load


async def test_concurrent_burst_of_pushes_stores_once(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await start_conversation(live_service, sandbox)
    await talk.quiet(cursor_of(sessionmaker, talk.mailbox_id))
    sandbox.clear_calls()
    delivered = talk.reply("Burst.")["delivered"][0]
    history_id = int(
        next(m for m in sandbox.messages(talk.rep) if m["id"] == delivered["id"])["historyId"]
    )
    token = sandbox.push_token(audience=live_service.settings.pubsub_push_audience)
    bodies = [push_envelope(talk.rep, history_id - offset % 3) for offset in range(50)]

    responses = await asyncio.gather(
        *(
            live_service.http.post(WEBHOOK, json=body, headers={"Authorization": f"Bearer {token}"})
            for body in bodies
        )
    )

    assert {response.status_code for response in responses} == {204}
    await talk.wait_for_messages(2)
    await wait_until(lambda: _settled(sessionmaker, talk.mailbox_id))
    assert await stored_copies(sessionmaker, delivered["id"]) == 1
    assert len(gmail_gets(sandbox, delivered["id"])) == 1
    # 51 notifications (ours and the sandbox's) for one change: one or two history walks.
    assert 1 <= len(sandbox.calls("gmail.users.history.list", account=talk.rep)) <= 2

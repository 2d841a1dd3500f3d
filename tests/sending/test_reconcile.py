"""Rows a crash left `queued`: looked up in Gmail first, never blindly sent again."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import Principal
from app.db import utcnow
from app.mail import build_message, to_bytes
from app.sending.delivery import delivery_for
from app.sending.reconcile import ReconcileReport, reconcile_outbox
from app.sending.schemas import SendRequest
from app.sending.service import queue_message
from app.threads.models import Message, Thread
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, service_settings, start_service
from tests.sending.helpers import (
    DEFAULT_FROM,
    SERVICE_OVERRIDES,
    Rep,
    customer,
    gmail_calls,
    linked_rep,
    new_rep,
    outgoing_for,
)
from tests.support import unique

Sessions = async_sessionmaker[AsyncSession]
STALE = timedelta(minutes=5)


async def _queued(sessions: Sessions, rep: Rep, to: str, *, age: timedelta = STALE * 2) -> str:
    """A committed `queued` row, as a crash right after the commit leaves it."""
    principal = Principal(rep.user, rep.org, rep.email, rep.name)
    request = SendRequest(to=[to], subject="Interrupted", body_text="Did this go out?")
    async with sessions() as session:
        queued = await queue_message(
            session, principal, unique("lead"), request, default_from=DEFAULT_FROM
        )
        await session.commit()
        message_id = queued.message.id
    async with sessions() as session:
        await session.execute(
            update(Message).where(Message.id == message_id).values(updated_at=utcnow() - age)
        )
        await session.commit()
    return message_id


async def _row(sessions: Sessions, message_id: str) -> Message:
    async with sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None
        return row


async def _pass(service: LiveService) -> ReconcileReport:
    return await service.run(reconcile_outbox(delivery_for(service.app.state), stale_after=STALE))


async def test_a_send_gmail_took_before_the_crash_is_recorded_not_resent(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    message_id = await _queued(sessionmaker, rep, lead_address)
    row = await _row(sessionmaker, message_id)
    assert row.rfc822_message_id is not None
    # Gmail had accepted it when the process died: it is in the rep's mailbox, SENT.
    raw = to_bytes(
        build_message(
            from_address=rep.email,
            from_name=rep.name,
            to=row.to,
            subject=row.subject,
            body_text=row.body_text,
            body_html=None,
            message_id=row.rfc822_message_id,
        )
    )
    in_gmail = sandbox.insert_raw(rep.email, raw, labels=["SENT"])

    report = await _pass(live_service)
    assert report.found >= 1

    row = await _row(sessionmaker, message_id)
    assert (row.status, row.sent_via) == ("sent", "gmail")
    assert (row.gmail_message_id, row.gmail_thread_id) == (in_gmail["id"], in_gmail["threadId"])
    assert gmail_calls(sandbox, rep.email) == []  # looked up, never sent again
    searches = sandbox.calls("gmail.users.messages.list", account=rep.email)
    assert len(searches) == 1 and "rfc822msgid" in searches[0]["query"]
    async with sessionmaker() as session:
        thread = await session.get(Thread, row.thread_id)
        assert thread is not None
        assert (thread.mailbox_id, thread.gmail_thread_id) == (rep.mailbox_id, in_gmail["threadId"])


async def test_a_send_that_never_left_is_delivered_once(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    message_id = await _queued(sessionmaker, rep, lead_address)

    # Two replicas reconciling at the same moment: one of them claims the row.
    await asyncio.gather(_pass(live_service), _pass(live_service))

    row = await _row(sessionmaker, message_id)
    assert (row.status, row.sent_via) == ("sent", "gmail")
    assert gmail_calls(sandbox, rep.email) == [200]
    assert len(outgoing_for(sandbox, row.rfc822_message_id or "")) == 1
    assert [m["message_id"] for m in sandbox.messages(lead_address)] == [row.rfc822_message_id]


async def test_an_interrupted_default_sender_send_is_failed_not_resent(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = new_rep()  # no mailbox: the default route
    lead_address = customer(sandbox)
    message_id = await _queued(sessionmaker, rep, lead_address)
    assert (await _row(sessionmaker, message_id)).sent_via == "default"

    await _pass(live_service)

    row = await _row(sessionmaker, message_id)
    assert row.status == "failed"
    assert row.error is not None and "not sent again" in row.error
    assert outgoing_for(sandbox, row.rfc822_message_id or "") == []


async def test_a_mailbox_disconnected_since_means_failed_not_resent(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    message_id = await _queued(sessionmaker, rep, customer(sandbox))
    gone = await live_service.http.delete(f"/v1/mailboxes/{rep.mailbox_id}", headers=rep.headers)
    assert gone.status_code == 204

    await _pass(live_service)

    row = await _row(sessionmaker, message_id)
    assert row.status == "failed"
    assert row.error is not None and "cannot be checked" in row.error
    assert gmail_calls(sandbox, rep.email) == []


async def test_gmail_unreachable_leaves_the_row_for_the_next_pass(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    message_id = await _queued(sessionmaker, rep, customer(sandbox))
    sandbox.fault("gmail.users.messages.list", "unavailable", account=rep.email)

    await _pass(live_service)
    row = await _row(sessionmaker, message_id)
    assert row.status == "queued"
    assert row.updated_at > utcnow() - timedelta(minutes=1)  # claimed: not stale again yet
    assert gmail_calls(sandbox, rep.email) == []


async def test_a_fresh_queued_row_is_left_alone(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    message_id = await _queued(sessionmaker, rep, customer(sandbox), age=timedelta(seconds=5))
    await _pass(live_service)
    assert (await _row(sessionmaker, message_id)).status == "queued"
    assert gmail_calls(sandbox, rep.email) == []


async def test_the_service_reconciles_in_the_background(
    sandbox: RunningSandbox, database_url: str, fernet_key: str, sessionmaker: Sessions
) -> None:
    settings = service_settings(
        sandbox,
        database_url=database_url,
        token_encryption_keys=fernet_key,
        **{
            **SERVICE_OVERRIDES,
            "background_duties": True,
            "send_reconcile_interval_seconds": 0.1,
            "send_stale_after_seconds": 0.5,
        },
    )
    async with start_service(settings) as service:
        rep = await linked_rep(service, sandbox)
        message_id = await _queued(sessionmaker, rep, customer(sandbox), age=timedelta(0))
        deadline = time.monotonic() + 15
        while (row := await _row(sessionmaker, message_id)).status == "queued":
            assert time.monotonic() < deadline, "the background pass never came"
            await asyncio.sleep(0.1)
    assert row.status == "sent"
    assert gmail_calls(sandbox, rep.email) == [200]

"""Idempotency-Key retries, and sends that cannot go out at all (502, stored, listed)."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.threads.models import Message
from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sending.helpers import (
    customer,
    gmail_calls,
    linked_rep,
    new_rep,
    outgoing_for,
    problem,
    send,
)
from tests.support import unique

Sessions = async_sessionmaker[AsyncSession]
SEND = "gmail.users.messages.send"


async def _count(sessions: Sessions, lead: str) -> int:
    async with sessions() as session:
        total = await session.scalar(
            select(func.count()).select_from(Message).where(Message.lead_id == lead)
        )
        return int(total or 0)


async def test_a_retry_with_the_same_key_returns_the_same_message_and_sends_once(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead = unique("lead")
    body = {"to": [customer(sandbox)], "subject": "Once", "body_text": "only once"}
    key = unique("key")
    first = await send(live_service, rep, lead, body, key=key)
    again = await send(live_service, rep, lead, body, key=key)
    assert again.json() == first.json()
    assert gmail_calls(sandbox, rep.email) == [200]
    assert len(outgoing_for(sandbox, first.json()["rfc822_message_id"])) == 1
    assert await _count(sessionmaker, lead) == 1

    # Without a key, the same body is a new message.
    fresh = await send(live_service, rep, lead, body)
    assert fresh.json()["id"] != first.json()["id"]
    assert gmail_calls(sandbox, rep.email) == [200, 200]


async def test_the_same_key_with_another_body_is_409(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead = unique("lead")
    body = {"to": [customer(sandbox)], "subject": "A", "body_text": "a"}
    key = unique("key")
    await send(live_service, rep, lead, body, key=key)
    changed = await send(live_service, rep, lead, {**body, "body_text": "b"}, key=key, expect=None)
    assert "Idempotency-Key" in problem(changed, 409)["detail"]
    other_lead = await send(live_service, rep, unique("lead"), body, key=key, expect=None)
    problem(other_lead, 409)
    # A colleague reusing the key (same organization, same body) is another request too.
    colleague = new_rep(org=rep.org)
    problem(await send(live_service, colleague, lead, body, key=key, expect=None), 409)
    assert gmail_calls(sandbox, rep.email) == [200]
    assert await _count(sessionmaker, lead) == 1


async def test_keys_belong_to_one_organization(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    key = unique("key")
    lead_address = customer(sandbox)
    one = await linked_rep(live_service, sandbox)
    two = await linked_rep(live_service, sandbox)
    body = {"to": [lead_address], "subject": "s", "body_text": "b"}
    first = await send(live_service, one, unique("lead"), body, key=key)
    second = await send(live_service, two, unique("lead"), body, key=key)
    assert first.json()["id"] != second.json()["id"]
    assert gmail_calls(sandbox, one.email) == gmail_calls(sandbox, two.email) == [200]


async def test_concurrent_requests_with_one_key_send_once(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead = unique("lead")
    body = {"to": [customer(sandbox)], "subject": "Race", "body_text": "r"}
    key = unique("key")
    responses = await asyncio.gather(
        *(send(live_service, rep, lead, body, key=key, expect=None) for _ in range(4))
    )
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    # The winner answers 201; a retry that arrives while it is still sending gets 202.
    assert {r.status_code for r in responses} <= {201, 202}
    assert gmail_calls(sandbox, rep.email) == [200]
    assert await _count(sessionmaker, lead) == 1


async def test_a_send_gmail_refuses_is_stored_failed_and_answered_502(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    sandbox.fault(
        SEND, "failed_precondition", account=rep.email, message="Mail service not enabled"
    )
    lead = unique("lead")
    body = {"to": [customer(sandbox)], "subject": "s", "body_text": "b"}
    key = unique("key")
    response = await send(live_service, rep, lead, body, key=key, expect=None)
    failure = problem(response, 502)
    stored = failure["message"]
    assert stored["status"] == "failed"
    assert stored["sent_via"] == "gmail"
    assert "Mail service not enabled" in stored["error"]
    assert failure["detail"] == stored["error"]

    # Nothing is lost: the outbox lists it, and a retry with the key replays the answer.
    outbox = await live_service.http.get(
        "/v1/outbox", params={"status": "failed"}, headers=rep.headers
    )
    assert [m["id"] for m in outbox.json()["items"]] == [stored["id"]]
    replay = problem(await send(live_service, rep, lead, body, key=key, expect=None), 502)
    assert replay["message"] == stored
    assert gmail_calls(sandbox, rep.email) == [400]


async def test_an_overlong_key_is_422(live_service: LiveService, sandbox: RunningSandbox) -> None:
    rep = new_rep()
    body = {"to": ["a@outside.example"], "subject": "s", "body_text": "b"}
    problem(await send(live_service, rep, unique("lead"), body, key="k" * 256, expect=None), 422)

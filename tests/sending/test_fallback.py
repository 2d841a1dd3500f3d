"""The default sender: no mailbox, a disconnected one, or one revoked during the send."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.threads.models import Message, Thread
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, link_mailbox
from tests.sending.helpers import (
    DEFAULT_FROM,
    customer,
    gmail_calls,
    linked_rep,
    new_rep,
    outgoing_for,
    problem,
    raw_of,
    send,
)
from tests.support import unique

Sessions = async_sessionmaker[AsyncSession]


def _assert_default_sender(item: dict[str, Any], rep_name: str, reply_to: str) -> None:
    assert item["via"] == "smtp"
    assert item["envelope_from"] == DEFAULT_FROM
    mime = raw_of(item)
    [sender] = mime["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (rep_name, DEFAULT_FROM)
    [answer_to] = mime["Reply-To"].addresses
    assert answer_to.addr_spec == reply_to


def _sends(via: str, outcome: str) -> float:
    labels = {"sent_via": via, "outcome": outcome}
    return REGISTRY.get_sample_value("leadmail_sends_total", labels) or 0.0


def _refused_sends(sandbox: RunningSandbox) -> int:
    return sum(1 for c in sandbox.calls("gmail.users.messages.send") if c["status"] == 401)


async def test_no_mailbox_goes_out_through_the_default_sender(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = new_rep("Ólafur Rep")  # never linked a mailbox
    lead_address = customer(sandbox)
    counted = _sends("default", "sent")
    response = await send(
        live_service,
        rep,
        unique("lead"),
        {
            "to": [lead_address],
            "bcc": ["boss@outside.example"],
            "subject": "Hello from us",
            "body_text": "Hi",
            "body_html": "<p>Hi</p>",
        },
    )
    sent = response.json()
    assert (sent["status"], sent["sent_via"]) == ("sent", "default")
    assert sent["from_address"] == DEFAULT_FROM
    assert sent["gmail_message_id"] is None and sent["gmail_thread_id"] is None
    assert _sends("default", "sent") == counted + 1

    [item] = outgoing_for(sandbox, sent["rfc822_message_id"])
    _assert_default_sender(item, "Ólafur Rep", rep.email)
    # Bcc rides in the envelope only.
    assert sorted(item["rcpt_tos"]) == sorted([lead_address, "boss@outside.example"])
    assert raw_of(item)["Bcc"] is None
    assert [m["message_id"] for m in sandbox.messages(lead_address)] == [sent["rfc822_message_id"]]

    async with sessionmaker() as session:
        thread = await session.get(Thread, sent["thread_id"])
        assert thread is not None
        assert (thread.sent_via, thread.mailbox_id, thread.gmail_thread_id) == (
            "default",
            None,
            None,
        )


async def test_a_disconnected_mailbox_falls_back_with_reply_to_its_address(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox, name="Rita Rep")
    unlinked = await live_service.http.delete(
        f"/v1/mailboxes/{rep.mailbox_id}", headers=rep.headers
    )
    assert unlinked.status_code == 204
    lead_address = customer(sandbox)
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {"to": [lead_address], "subject": "Still here", "body_text": "Hi"},
        )
    ).json()
    assert sent["sent_via"] == "default"
    _assert_default_sender(
        outgoing_for(sandbox, sent["rfc822_message_id"])[0], "Rita Rep", rep.email
    )
    assert gmail_calls(sandbox, rep.email) == []


async def test_a_grant_revoked_during_the_send_falls_back_and_reconnecting_restores_gmail(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox, name="Rita Rep")
    lead_address = customer(sandbox)
    lead = unique("lead")
    before = (
        await send(
            live_service, rep, lead, {"to": [lead_address], "subject": "One", "body_text": "1"}
        )
    ).json()
    assert before["sent_via"] == "gmail"

    # The rep removes the app's access in their Google account: the cached access token
    # dies with the grant, the send's 401 leads to a refresh, and that is invalid_grant.
    sandbox.revoke(rep.email)
    refused_before = _refused_sends(sandbox)
    during = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "2", "thread_id": before["thread_id"]},
        )
    ).json()
    assert (during["status"], during["sent_via"]) == ("sent", "default")
    [item] = outgoing_for(sandbox, during["rfc822_message_id"])
    _assert_default_sender(item, "Rita Rep", rep.email)
    # Still part of the conversation on the lead's side.
    assert raw_of(item)["In-Reply-To"] == before["rfc822_message_id"]
    # The send was tried with the dead token (refused, unattributable to an account)...
    assert _refused_sends(sandbox) == refused_before + 1
    # ...and the rep's Gmail sent nothing more.
    assert gmail_calls(sandbox, rep.email) == [200]

    mailbox = await live_service.http.get(f"/v1/mailboxes/{rep.mailbox_id}", headers=rep.headers)
    assert mailbox.json()["status"] == "disconnected"
    assert "invalid_grant" in mailbox.json()["disconnect_reason"]
    async with sessionmaker() as session:
        row = await session.get(Message, during["id"])
        assert row is not None and row.mailbox_id is None

    # Linked again: the next send is a Gmail send in the same Gmail thread.
    relinked = await link_mailbox(
        live_service, sandbox, org_id=rep.org, user_id=rep.user, email=rep.email, name="Rita Rep"
    )
    assert relinked["id"] == rep.mailbox_id and relinked["status"] == "active"
    after = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "3", "thread_id": before["thread_id"]},
        )
    ).json()
    assert (after["status"], after["sent_via"]) == ("sent", "gmail")
    assert after["gmail_thread_id"] == before["gmail_thread_id"]
    mime = raw_of(outgoing_for(sandbox, after["rfc822_message_id"])[0])
    assert mime["In-Reply-To"] == during["rfc822_message_id"]
    assert mime["References"].split() == [
        before["rfc822_message_id"],
        during["rfc822_message_id"],
    ]


async def test_without_any_sender_the_message_is_stored_failed_and_502(
    bare_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = new_rep()
    response = await send(
        bare_service,
        rep,
        unique("lead"),
        {"to": ["a@outside.example"], "subject": "s", "body_text": "b"},
        expect=None,
    )
    body = problem(response, 502)
    stored = body["message"]
    assert stored["status"] == "failed"
    assert "default sender" in stored["error"]
    assert body["detail"] == stored["error"]
    outbox = await bare_service.http.get("/v1/outbox", headers=rep.headers)
    assert [(m["id"], m["status"]) for m in outbox.json()["items"]] == [(stored["id"], "failed")]


async def test_a_default_sender_conversation_continues_in_gmail_once_linked(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = new_rep("Rita Rep")
    lead_address = customer(sandbox)
    lead = unique("lead")
    first = (
        await send(
            live_service, rep, lead, {"to": [lead_address], "subject": "Hi", "body_text": "1"}
        )
    ).json()
    assert first["sent_via"] == "default"
    mailbox = await link_mailbox(
        live_service, sandbox, org_id=rep.org, user_id=rep.user, email=rep.email, name=rep.name
    )
    second = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "2", "thread_id": first["thread_id"]},
        )
    ).json()
    assert (second["sent_via"], second["subject"]) == ("gmail", "Re: Hi")
    mime = raw_of(outgoing_for(sandbox, second["rfc822_message_id"])[0])
    assert mime["In-Reply-To"] == first["rfc822_message_id"]
    # From now on the conversation is also a known Gmail thread, so replies sync.
    async with sessionmaker() as session:
        thread = await session.get(Thread, first["thread_id"])
        assert thread is not None
        assert (thread.mailbox_id, thread.gmail_thread_id) == (
            mailbox["id"],
            second["gmail_thread_id"],
        )

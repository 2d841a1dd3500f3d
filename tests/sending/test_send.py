"""Sending from the rep's Gmail: the MIME that leaves, threads, templates, validation."""

from __future__ import annotations

from email.headerregistry import Address
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.threads.models import Message, Thread
from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sending.helpers import (
    customer,
    gmail_calls,
    linked_rep,
    outgoing_for,
    problem,
    raw_of,
    send,
)
from tests.support import MESSAGE_FIELDS, bearer, unique

Sessions = async_sessionmaker[AsyncSession]


async def test_a_send_leaves_from_the_reps_gmail_as_correct_mime(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox, name="Jürgen Müller")
    lead_address = customer(sandbox)
    lead = unique("lead")
    body = {
        "to": [f"Ann Lead <{lead_address}>"],
        "cc": ["Zoë Ça <cc@outside.example>"],
        "bcc": ["hidden@outside.example"],
        "subject": "Grüße aus Köln: Angebot ✓",
        "body_text": "Hallo Ann,\nhier das Angebot.",
        "body_html": "<p>Hallo Ann,</p><p>hier das <b>Angebot</b>.</p>",
    }
    response = await send(live_service, rep, lead, body)
    sent = response.json()

    assert set(sent) == MESSAGE_FIELDS
    assert sent["status"] == "sent"
    assert sent["sent_via"] == "gmail"
    assert sent["direction"] == "outbound"
    assert sent["from_address"] == rep.email
    assert sent["lead_id"] == lead
    assert sent["to"] == [f"Ann Lead <{lead_address}>"]
    assert sent["subject"] == body["subject"]
    assert sent["gmail_message_id"] and sent["gmail_thread_id"]
    assert sent["rfc822_message_id"].startswith("<") and sent["error"] is None
    assert sent["sent_at"] is not None

    # Exactly one send through the rep's mailbox, and it is the message Gmail stored.
    assert gmail_calls(sandbox, rep.email) == [200]
    [item] = outgoing_for(sandbox, sent["rfc822_message_id"])
    assert item["via"] == "gmail"
    assert sorted(item["rcpt_tos"]) == sorted(
        [lead_address, "cc@outside.example", "hidden@outside.example"]
    )
    mime = raw_of(item)
    assert mime.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in mime.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert mime["Subject"] == body["subject"]
    assert mime["Message-ID"] == sent["rfc822_message_id"]
    assert mime["Date"] is not None
    assert mime["Bcc"] is None  # what recipients see carries no Bcc
    [sender] = mime["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Jürgen Müller", rep.email)
    [cc] = mime["Cc"].addresses
    assert cc.display_name == "Zoë Ça"
    # Non-ASCII headers travel RFC 2047-encoded: the raw bytes are 7-bit clean.
    raw_text = item["raw"]
    assert "=?utf-8?" in raw_text.lower()
    assert all(ord(ch) < 128 for ch in raw_text.split("\r\n\r\n", 1)[0])
    text_part, html_part = mime.iter_parts()
    assert text_part.get_content().replace("\r\n", "\n").strip() == body["body_text"]
    assert "<b>Angebot</b>" in html_part.get_content()

    # The lead's copy arrived.
    inbox = sandbox.messages(lead_address)
    assert [m["message_id"] for m in inbox] == [sent["rfc822_message_id"]]

    # The Gmail thread is now a known thread of the lead.
    async with sessionmaker() as session:
        thread = await session.get(Thread, sent["thread_id"])
        assert thread is not None
        assert (thread.mailbox_id, thread.gmail_thread_id) == (
            rep.mailbox_id,
            sent["gmail_thread_id"],
        )
        assert (thread.lead_id, thread.org_id, thread.message_count) == (lead, rep.org, 1)
        row = await session.get(Message, sent["id"])
        assert row is not None
        assert (row.user_id, row.mailbox_id, row.bcc) == (
            rep.user,
            rep.mailbox_id,
            ["hidden@outside.example"],
        )
    threads = await live_service.http.get(f"/v1/leads/{lead}/threads", headers=rep.headers)
    assert [t["id"] for t in threads.json()["items"]] == [sent["thread_id"]]


async def test_text_only_and_html_only_bodies(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    text_only = await send(
        live_service,
        rep,
        unique("lead"),
        {"to": [lead_address], "subject": "Plain", "body_text": "Just text"},
    )
    mime = raw_of(outgoing_for(sandbox, text_only.json()["rfc822_message_id"])[0])
    assert mime.get_content_type() == "text/plain"
    assert text_only.json()["body_html"] is None

    html_only = await send(
        live_service,
        rep,
        unique("lead"),
        {
            "to": [lead_address],
            "subject": "Rich",
            "body_html": "<p>Hello <b>there</b></p><script>alert(1)</script>",
        },
    )
    sent = html_only.json()
    # The text alternative is derived from the HTML, and the HTML is sanitised.
    assert "Hello" in sent["body_text"] and "<b>" not in sent["body_text"]
    assert "<script" not in sent["body_html"]
    mime = raw_of(outgoing_for(sandbox, sent["rfc822_message_id"])[0])
    assert [p.get_content_type() for p in mime.iter_parts()] == ["text/plain", "text/html"]
    assert "<script" not in mime.get_body(("html",)).get_content()  # type: ignore[union-attr]


async def test_continuing_a_thread_threads_in_gmail_and_in_any_client(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    lead = unique("lead")
    first = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "subject": "Your quote", "body_text": "Here it is."},
        )
    ).json()
    second = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "Any questions?", "thread_id": first["thread_id"]},
        )
    ).json()
    third = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "Last call.", "thread_id": first["thread_id"]},
        )
    ).json()

    # Gmail: the same thread, the same conversation row.
    assert second["thread_id"] == third["thread_id"] == first["thread_id"]
    assert second["gmail_thread_id"] == third["gmail_thread_id"] == first["gmail_thread_id"]
    assert second["subject"] == third["subject"] == "Re: Your quote"

    # The raw MIME: what Outlook or Apple Mail on the lead's side threads by.
    mime2 = raw_of(outgoing_for(sandbox, second["rfc822_message_id"])[0])
    assert mime2["Subject"] == "Re: Your quote"
    assert mime2["In-Reply-To"] == first["rfc822_message_id"]
    assert mime2["References"].split() == [first["rfc822_message_id"]]
    mime3 = raw_of(outgoing_for(sandbox, third["rfc822_message_id"])[0])
    assert mime3["In-Reply-To"] == second["rfc822_message_id"]
    assert mime3["References"].split() == [
        first["rfc822_message_id"],
        second["rfc822_message_id"],
    ]

    # The lead's own mailbox (threading by References, not by our threadId) agrees.
    copies = sandbox.messages(lead_address)
    assert len(copies) == 3
    assert len({copy["threadId"] for copy in copies}) == 1

    async with sessionmaker() as session:
        thread = await session.get(Thread, first["thread_id"])
        assert thread is not None and thread.message_count == 3


async def test_a_reply_answers_the_latest_message_even_an_inbound_one(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    lead = unique("lead")
    first = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "subject": "Demo", "body_text": "When suits you?"},
        )
    ).json()
    # The lead answers from their mail client; the sync stores such replies as inbound
    # rows of the thread (written here directly, to test sending on its own).
    answer = sandbox.customer_reply(lead_address, message_id=first["rfc822_message_id"])
    async with sessionmaker() as session:
        session.add(
            Message(
                org_id=rep.org,
                thread_id=first["thread_id"],
                lead_id=lead,
                direction="inbound",
                status="received",
                from_address=lead_address,
                to=[rep.email],
                cc=[],
                bcc=[],
                subject="Re: Demo",
                body_text="Tuesday?",
                rfc822_message_id=answer["message_id"],
                in_reply_to=first["rfc822_message_id"],
                references=[first["rfc822_message_id"]],
                attachments=[],
            )
        )
        await session.commit()

    reply = (
        await send(
            live_service,
            rep,
            lead,
            {"to": [lead_address], "body_text": "Tuesday works.", "thread_id": first["thread_id"]},
        )
    ).json()
    mime = raw_of(outgoing_for(sandbox, reply["rfc822_message_id"])[0])
    assert mime["In-Reply-To"] == answer["message_id"]
    assert mime["References"].split() == [first["rfc822_message_id"], answer["message_id"]]
    assert reply["gmail_thread_id"] == first["gmail_thread_id"]


async def test_an_explicit_subject_wins_in_a_thread(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    lead = unique("lead")
    first = (
        await send(
            live_service, rep, lead, {"to": [lead_address], "subject": "A", "body_text": "1"}
        )
    ).json()
    second = (
        await send(
            live_service,
            rep,
            lead,
            {
                "to": [lead_address],
                "subject": "RE: A",
                "body_text": "2",
                "thread_id": first["thread_id"],
            },
        )
    ).json()
    assert second["subject"] == "RE: A"
    assert (
        raw_of(outgoing_for(sandbox, second["rfc822_message_id"])[0])["In-Reply-To"]
        == (first["rfc822_message_id"])
    )


async def test_a_template_send_renders_it(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    template = await live_service.http.post(
        "/v1/templates",
        json={
            "name": "Intro",
            "subject": "Hello {{ lead.first_name }}",
            "body_html": "<p>Dear {{ lead.first_name }}, meet {{ product }}</p>",
        },
        headers=rep.headers,
    )
    assert template.status_code == 201, template.text
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {
                "to": [lead_address],
                "template_id": template.json()["id"],
                "variables": {"lead": {"first_name": "Ann"}, "product": "<Widget & Co>"},
            },
        )
    ).json()
    assert sent["subject"] == "Hello Ann"
    assert "meet &lt;Widget &amp; Co&gt;" in sent["body_html"]
    assert "meet <Widget & Co>" in sent["body_text"]
    mime = raw_of(outgoing_for(sandbox, sent["rfc822_message_id"])[0])
    assert mime["Subject"] == "Hello Ann"
    assert "Dear Ann" in mime.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_template_variables_cannot_inject_headers(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    template = await live_service.http.post(
        "/v1/templates",
        json={"name": "T", "subject": "Hi {{ name }}", "body_text": "x"},
        headers=rep.headers,
    )
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {
                "to": [lead_address],
                "template_id": template.json()["id"],
                "variables": {"name": "Ann\r\nBcc: victim@outside.example"},
            },
        )
    ).json()
    [item] = outgoing_for(sandbox, sent["rfc822_message_id"])
    assert "victim@outside.example" not in item["rcpt_tos"]
    mime = raw_of(item)
    assert mime["Bcc"] is None
    assert "\n" not in mime["Subject"] and "\r" not in mime["Subject"]


async def test_template_errors_send_nothing(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    template = await live_service.http.post(
        "/v1/templates",
        json={"name": "T", "subject": "Hi {{ lead.first_name }}", "body_text": "x"},
        headers=rep.headers,
    )
    lead = unique("lead")
    missing = await send(
        live_service,
        rep,
        lead,
        {
            "to": ["a@outside.example"],
            "template_id": template.json()["id"],
            "variables": {"lead": {"last_name": "Smith"}},
        },
        expect=None,
    )
    assert "lead.first_name" in problem(missing, 422)["detail"]

    other_org = await linked_rep(live_service, sandbox)
    foreign = await live_service.http.post(
        "/v1/templates",
        json={"name": "T", "subject": "s", "body_text": "x"},
        headers=other_org.headers,
    )
    not_ours = await send(
        live_service,
        rep,
        lead,
        {"to": ["a@outside.example"], "template_id": foreign.json()["id"]},
        expect=None,
    )
    problem(not_ours, 404)
    assert gmail_calls(sandbox, rep.email) == []
    async with sessionmaker() as session:
        rows = await session.scalars(select(Message).where(Message.lead_id == lead))
        assert list(rows) == []


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": ["a@outside.example"], "subject": "s", "body_text": "b"}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


INVALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("bad address", _body(to=["not-an-address"])),
    ("bad cc", _body(cc=["x@"])),
    ("bad bcc", _body(bcc=["@x"])),
    ("CRLF in subject", _body(subject="Hi\r\nBcc: x@y.z")),
    ("LF in subject", _body(subject="Hi\nthere")),
    ("CRLF in a name", _body(to=["Ann\r\nBcc: x@y.z <a@outside.example>"])),
    ("CR in an address", _body(to=["a@outside.example\r"])),
    ("no recipient", _body(to=[])),
    ("no body", _body(body_text=None)),
    ("no subject", _body(subject=None)),
    ("template and body", _body(subject=None, template_id="t")),
    ("variables alone", _body(variables={})),
    ("unknown field", _body(**{"from": "x@y.z"})),
]


async def test_each_invalid_request_is_422_and_sends_nothing(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead = unique("lead")
    for name, body in INVALID_BODIES:
        response = await send(live_service, rep, lead, body, expect=None)
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        assert isinstance(response.json()["detail"], list), name  # FastAPI's error list
    assert gmail_calls(sandbox, rep.email) == []
    async with sessionmaker() as session:
        assert list(await session.scalars(select(Message).where(Message.lead_id == lead))) == []


async def test_threads_and_mailboxes_of_others_are_not_reachable(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    lead_address = customer(sandbox)
    lead = unique("lead")
    first = (
        await send(
            live_service, rep, lead, {"to": [lead_address], "subject": "s", "body_text": "b"}
        )
    ).json()
    reply = {"to": [lead_address], "body_text": "b", "thread_id": first["thread_id"]}

    stranger = await linked_rep(live_service, sandbox)  # another organization
    problem(await send(live_service, stranger, lead, reply, expect=None), 404)
    # The same organization, but another lead: not this lead's thread.
    problem(await send(live_service, rep, unique("lead"), reply, expect=None), 404)
    unknown = {**reply, "thread_id": "0" * 32}
    problem(await send(live_service, rep, lead, unknown, expect=None), 404)

    body = {"to": [lead_address], "subject": "s", "body_text": "b"}
    foreign_mailbox = {**body, "mailbox_id": stranger.mailbox_id}
    problem(await send(live_service, rep, lead, foreign_mailbox, expect=None), 404)
    colleague = await linked_rep(live_service, sandbox, org=rep.org)
    colleagues_mailbox = {**body, "mailbox_id": colleague.mailbox_id}
    problem(await send(live_service, rep, lead, colleagues_mailbox, expect=None), 403)
    assert gmail_calls(sandbox, stranger.email) == []
    assert gmail_calls(sandbox, colleague.email) == []


async def test_sending_needs_a_bearer_token(live_service: LiveService) -> None:
    response = await live_service.http.post(
        "/v1/leads/x/messages", json={"to": ["a@b.example"], "subject": "s", "body_text": "b"}
    )
    problem(response, 401)
    other = bearer(unique("user"), unique("org"))
    assert (await live_service.http.get("/v1/outbox", headers=other)).status_code == 200


def _address(value: str) -> Address:
    return Address(addr_spec=value)

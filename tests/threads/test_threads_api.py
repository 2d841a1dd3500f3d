"""GET /v1/leads/{lead_id}/threads and GET /v1/threads/{id}."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from tests.support import MESSAGE_FIELDS, bearer, unique
from tests.sync.factories import make_mailbox, make_thread

THREAD_KEYS = {
    "id",
    "lead_id",
    "mailbox_id",
    "subject",
    "sent_via",
    "gmail_thread_id",
    "created_at",
    "last_message_at",
    "message_count",
    "messages",
}


async def test_lead_threads_most_recent_first_with_messages_oldest_first(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    org, lead = unique("org"), unique("lead")
    mailbox = await make_mailbox(sessionmaker, org_id=org)
    now = utcnow()
    older = await make_thread(
        sessionmaker,
        org_id=org,
        lead_id=lead,
        mailbox_id=mailbox.id,
        gmail_thread_id=unique("gt"),
        messages=3,
        start=now - timedelta(days=2),
    )
    newer = await make_thread(
        sessionmaker,
        org_id=org,
        lead_id=lead,
        mailbox_id=mailbox.id,
        gmail_thread_id=unique("gt"),
        messages=2,
        start=now - timedelta(days=1),
    )
    await make_thread(sessionmaker, org_id=org, lead_id=unique("other-lead"), messages=1)

    response = await client.get(f"/v1/leads/{lead}/threads", headers=bearer("u", org))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    assert [item["id"] for item in body["items"]] == [newer.id, older.id]
    first = body["items"][1]
    assert set(first) == THREAD_KEYS
    assert first["message_count"] == 3
    assert [m["body_text"] for m in first["messages"]] == ["message 0", "message 1", "message 2"]
    assert [m["direction"] for m in first["messages"]] == ["outbound", "inbound", "outbound"]
    assert set(first["messages"][0]) == MESSAGE_FIELDS
    assert first["messages"][1]["status"] == "received"
    assert first["messages"][1]["received_at"] is not None
    assert all(m["thread_id"] == older.id and m["lead_id"] == lead for m in first["messages"])


async def test_lead_threads_paginate_by_last_activity(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    org, lead = unique("org"), unique("lead")
    start = utcnow() - timedelta(days=10)
    threads = [
        await make_thread(
            sessionmaker, org_id=org, lead_id=lead, messages=1, start=start + timedelta(hours=i)
        )
        for i in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await client.get(
            f"/v1/leads/{lead}/threads", params=params, headers=bearer("u", org)
        )
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [thread.id for thread in reversed(threads)]


async def test_other_organizations_see_nothing(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    org, lead = unique("org"), unique("lead")
    thread = await make_thread(sessionmaker, org_id=org, lead_id=lead, messages=2)
    stranger = bearer("u", unique("org"))

    listed = await client.get(f"/v1/leads/{lead}/threads", headers=stranger)
    one = await client.get(f"/v1/threads/{thread.id}", headers=stranger)

    assert listed.status_code == 200
    assert listed.json() == {"items": [], "next_cursor": None}
    assert one.status_code == 404
    assert one.headers["content-type"] == "application/problem+json"


async def test_one_thread(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    org, lead = unique("org"), unique("lead")
    thread = await make_thread(sessionmaker, org_id=org, lead_id=lead, messages=4, subject="Quote")

    response = await client.get(f"/v1/threads/{thread.id}", headers=bearer("u", org))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == thread.id
    assert body["subject"] == "Quote"
    assert len(body["messages"]) == 4
    times = [m["created_at"] for m in body["messages"]]
    assert times == sorted(times)


async def test_unknown_thread_is_404_and_bad_cursor_is_422(client: httpx.AsyncClient) -> None:
    headers = bearer("u", unique("org"))
    assert (await client.get(f"/v1/threads/{unique('t')}", headers=headers)).status_code == 404
    bad = await client.get("/v1/leads/x/threads", params={"cursor": "%%%"}, headers=headers)
    assert bad.status_code == 422


async def test_threads_need_a_bearer_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/leads/x/threads")).status_code == 401
    assert (await client.get("/v1/threads/x")).status_code == 401

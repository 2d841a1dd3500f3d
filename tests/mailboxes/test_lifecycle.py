"""Reading, unlinking and relinking mailboxes; the repository's rules for finding them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.crypto import TokenCipher
from app.db import utcnow
from app.google import GmailSession, Profile
from app.mailboxes.access import MailboxAccess
from app.mailboxes.models import Mailbox, MailboxStatus
from app.mailboxes.repository import ConnectedMailbox, MailboxRepository
from app.threads.models import Direction, Message, MessageStatus, SentVia, Thread
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, link_mailbox, unique_email
from tests.support import bearer, unique

Sessions = async_sessionmaker[AsyncSession]


async def _profile(gmail: GmailSession) -> Profile:
    return await gmail.get_profile()


async def test_mailboxes_are_listed_newest_first_within_the_organization(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    org = unique("org")
    first = await link_mailbox(
        live_service, sandbox, org_id=org, user_id=unique("user"), email=unique_email()
    )
    second = await link_mailbox(
        live_service, sandbox, org_id=org, user_id=unique("user"), email=unique_email()
    )
    headers = bearer(unique("user"), org)  # any member of the organization
    page = (await live_service.http.get("/v1/mailboxes?limit=1", headers=headers)).json()
    assert [item["id"] for item in page["items"]] == [second["id"]]
    assert page["next_cursor"]
    rest = await live_service.http.get(
        "/v1/mailboxes", params={"limit": 1, "cursor": page["next_cursor"]}, headers=headers
    )
    assert [item["id"] for item in rest.json()["items"]] == [first["id"]]
    assert rest.json()["next_cursor"] is None

    stranger = bearer(unique("user"), unique("org"))
    assert (await live_service.http.get("/v1/mailboxes", headers=stranger)).json()["items"] == []
    for method in ("GET", "DELETE"):
        response = await live_service.http.request(
            method, f"/v1/mailboxes/{first['id']}", headers=stranger
        )
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
    assert (await live_service.http.get("/v1/mailboxes")).status_code == 401


async def test_delete_stops_the_watch_revokes_the_grant_and_keeps_the_conversations(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions, fernet_key: str
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    linked = await link_mailbox(live_service, sandbox, org_id=org, user_id=user, email=email)
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.refresh_token_encrypted is not None
        refresh_token = TokenCipher([fernet_key]).decrypt(row.refresh_token_encrypted)
        thread = Thread(org_id=org, lead_id="lead-1", mailbox_id=row.id, subject="Hello")
        session.add(thread)
        await session.flush()
        session.add(
            Message(
                org_id=org,
                thread_id=thread.id,
                lead_id="lead-1",
                mailbox_id=row.id,
                user_id=user,
                direction=Direction.OUTBOUND,
                status=MessageStatus.SENT,
                sent_via=SentVia.GMAIL,
                subject="Hello",
                body_text="Hi there",
            )
        )
        await session.commit()
        thread_id = thread.id
    assert sandbox.account(email)["watch"] is not None
    sandbox.clear_calls()

    headers = bearer(user, org)
    response = await live_service.http.delete(f"/v1/mailboxes/{linked['id']}", headers=headers)

    assert response.status_code == 204 and response.content == b""
    trail = [(call["method"], call["path"], call["status"]) for call in sandbox.calls()]
    assert ("POST", "/gmail/v1/users/me/stop", 204) in trail
    assert ("POST", "/revoke", 200) in trail
    assert sandbox.account(email)["watch"] is None
    async with httpx.AsyncClient() as google:
        refused = await google.post(
            sandbox.token_uri,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": sandbox.client_id,
                "client_secret": sandbox.client_secret,
            },
        )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    shown = (await live_service.http.get(f"/v1/mailboxes/{linked['id']}", headers=headers)).json()
    assert shown["status"] == "disconnected"
    assert shown["disconnect_reason"] == "disconnected by the user"
    assert shown["disconnected_at"] is not None
    assert shown["watch_expires_at"] is None
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.refresh_token_encrypted is None
        kept = await session.scalars(select(Message).where(Message.thread_id == thread_id))
        assert [(m.mailbox_id, m.body_text) for m in kept] == [(linked["id"], "Hi there")]
        assert (await session.get(Thread, thread_id)) is not None

    # Unlinking again is a no-op that asks nothing of Google.
    sandbox.clear_calls()
    again = await live_service.http.delete(f"/v1/mailboxes/{linked['id']}", headers=headers)
    assert again.status_code == 204
    assert sandbox.calls() == []

    relinked = await link_mailbox(live_service, sandbox, org_id=org, user_id=user, email=email)
    assert relinked["id"] == linked["id"] and relinked["status"] == "active"


async def test_unlinking_leaves_google_alone_when_another_org_shares_the_address(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    email = unique_email()
    first_org, second_org = unique("org"), unique("org")
    kept = await link_mailbox(
        live_service, sandbox, org_id=first_org, user_id=unique("user"), email=email
    )
    dropped = await link_mailbox(
        live_service, sandbox, org_id=second_org, user_id=unique("user"), email=email
    )
    assert kept["id"] != dropped["id"]
    sandbox.clear_calls()

    response = await live_service.http.delete(
        f"/v1/mailboxes/{dropped['id']}", headers=bearer(unique("user"), second_org)
    )

    assert response.status_code == 204
    assert sandbox.calls() == []  # no stop, no revoke: both belong to the other org too
    assert sandbox.account(email)["watch"] is not None
    access: MailboxAccess = live_service.app.state.mailbox_access

    async def use_the_other() -> Profile:
        async with live_service.app.state.sessionmaker() as session:
            mailbox = await session.get(Mailbox, kept["id"])
            assert mailbox is not None
            access.forget(mailbox.id)  # prove the refresh token still works
            return await access.call(mailbox, _profile)

    assert (await live_service.run(use_the_other())).email_address == email


def _connected(org_id: str, user_id: str, email: str, at_offset: int = 0) -> ConnectedMailbox:
    return ConnectedMailbox(
        org_id=org_id,
        user_id=user_id,
        user_name="Rita",
        email_address=email,
        refresh_token_encrypted=b"ciphertext",
        granted_scopes="",
        history_id=100 + at_offset,
        watch_expires_at=utcnow() + timedelta(days=7),
        connected_at=utcnow() + timedelta(seconds=at_offset),
    )


async def test_the_users_own_mailbox_is_the_latest_active_one(sessionmaker: Sessions) -> None:
    org, user = unique("org"), unique("user")
    async with sessionmaker() as session:
        repository = MailboxRepository(session)
        assert await repository.get_for_user(org, user) is None
        older = await repository.upsert_connected(_connected(org, user, unique_email(), 0))
        newer = await repository.upsert_connected(_connected(org, user, unique_email(), 5))
        assert (await repository.get_for_user(org, user)).id == newer.id  # type: ignore[union-attr]
        await repository.mark_disconnected(newer.id, "gone", utcnow())
        assert (await repository.get_for_user(org, user)).id == older.id  # type: ignore[union-attr]
        await repository.mark_disconnected(older.id, "gone", utcnow())
        # with none active, the most recent one says why
        assert (await repository.get_for_user(org, user)).id == newer.id  # type: ignore[union-attr]
        assert await repository.get_for_user(unique("org"), user) is None
        await session.rollback()


async def test_concurrent_links_of_one_address_make_one_mailbox(sessionmaker: Sessions) -> None:
    org, email = unique("org"), unique_email().upper()

    async def link(offset: int) -> str:
        async with sessionmaker() as session:
            mailbox = await MailboxRepository(session).upsert_connected(
                _connected(org, unique("user"), email, offset)
            )
            await session.commit()
            return mailbox.id

    ids = await asyncio.gather(*(link(offset) for offset in range(4)))
    assert len(set(ids)) == 1
    async with sessionmaker() as session:
        found = await MailboxRepository(session).by_address(email.lower())
        assert [mailbox.id for mailbox in found] == [ids[0]]
        assert found[0].email_address == email.lower()
        assert found[0].status == MailboxStatus.ACTIVE

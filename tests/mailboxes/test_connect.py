"""Linking a Gmail mailbox through the real consent flow, and every way it must fail."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.mailboxes.models import Mailbox, OAuthState
from app.mailboxes.service import GMAIL_READONLY, GMAIL_SEND
from sandbox.testing import RunningSandbox
from tests.harness import (
    RETURN_URL,
    LiveService,
    consent,
    link_mailbox,
    loopback_client,
    unique_email,
)
from tests.support import bearer, unique

Sessions = async_sessionmaker[AsyncSession]


async def _start(
    service: LiveService, user_id: str, org_id: str, email: str, return_url: str = RETURN_URL
) -> str:
    response = await service.http.post(
        "/v1/mailboxes/connect",
        json={"return_url": return_url},
        headers=bearer(user_id, org_id, email=email),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["authorization_url"])


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def _replace_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in _query(url).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _mailboxes_for(sessions: Sessions, email: str) -> list[Mailbox]:
    async with sessions() as session:
        rows = await session.scalars(select(Mailbox).where(Mailbox.email_address == email))
        return list(rows)


def _assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_connect_links_an_active_watched_mailbox(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    sandbox.create_account(email, "Rita Rep")
    authorization_url = await _start(live_service, user, org, email, RETURN_URL + "?tab=mail")

    assert authorization_url.startswith(live_service.settings.google_auth_uri + "?")
    query = _query(authorization_url)
    assert query["access_type"] == ["offline"]
    assert query["prompt"] == ["consent"]
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [sandbox.client_id]
    assert query["redirect_uri"] == [live_service.settings.oauth_redirect_uri]
    assert set(query["scope"][0].split()) == {GMAIL_SEND, GMAIL_READONLY}
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    state = query["state"][0]
    assert len(state) >= 43

    async with sessionmaker() as session:
        pending = await session.get(OAuthState, hashlib.sha256(state.encode()).hexdigest())
        # only the state's hash is stored, bound to the caller, short-lived, with the verifier
        assert pending is not None and pending.used_at is None
        assert (pending.org_id, pending.user_id) == (org, user)
        assert pending.expires_at - utcnow() <= timedelta(minutes=10)
        challenge = hashlib.sha256(pending.code_verifier.encode()).digest()
        assert (
            base64.urlsafe_b64encode(challenge).rstrip(b"=").decode()
            == (query["code_challenge"][0])
        )
        assert await session.get(OAuthState, state) is None

    sandbox.clear_calls()
    trip = await consent(authorization_url)
    assert trip.response.status_code == 303
    location = urlsplit(trip.location)
    assert f"{location.scheme}://{location.netloc}{location.path}" == RETURN_URL
    result = _query(trip.location)
    assert result["tab"] == ["mail"]
    assert result["status"] == ["connected"]
    mailbox_id = result["mailbox_id"][0]

    gmail_calls = [call["gmail_method"] for call in sandbox.calls() if "gmail_method" in call]
    assert gmail_calls == ["gmail.users.getProfile", "gmail.users.watch"]
    account = sandbox.account(email)
    headers = bearer(user, org)
    shown = (await live_service.http.get(f"/v1/mailboxes/{mailbox_id}", headers=headers)).json()
    assert set(shown) == {
        "id",
        "email_address",
        "user_id",
        "status",
        "connected_at",
        "disconnected_at",
        "disconnect_reason",
        "watch_expires_at",
        "last_push_at",
        "last_synced_at",
        # sync health beyond the contract (README, "Sync")
        "sync_error",
        "recovered_messages",
        "last_recovery_at",
    }
    assert shown["id"] == mailbox_id
    assert shown["email_address"] == email
    assert shown["user_id"] == user
    assert shown["status"] == "active"
    assert shown["disconnected_at"] is None and shown["disconnect_reason"] is None
    assert shown["watch_expires_at"] is not None

    [row] = await _mailboxes_for(sessionmaker, email)
    assert row.id == mailbox_id and row.org_id == org and row.user_name is None
    assert row.history_cursor == int(account["history_id"])
    watch = account["watch"]
    assert watch["topic"] == live_service.settings.pubsub_topic
    assert abs(row.watch_expires_at.timestamp() * 1000 - int(watch["expiration"])) < 2  # type: ignore[union-attr]
    assert set(row.granted_scopes.split()) >= {GMAIL_SEND, GMAIL_READONLY}
    assert row.refresh_token_encrypted is not None

    listed = (await live_service.http.get("/v1/mailboxes", headers=headers)).json()
    assert [item["id"] for item in listed["items"]] == [mailbox_id]
    assert listed["next_cursor"] is None


async def test_a_reused_state_is_400_and_changes_nothing(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    sandbox.create_account(email)
    trip = await consent(await _start(live_service, user, org, email))
    assert trip.result["status"] == "connected"
    [before] = await _mailboxes_for(sessionmaker, email)

    replay = await live_service.http.get(trip.callback_url)
    body = _assert_problem(replay, 400)
    assert "state" in body["detail"]
    [after] = await _mailboxes_for(sessionmaker, email)
    assert after.refresh_token_encrypted == before.refresh_token_encrypted
    assert after.connected_at == before.connected_at


async def test_an_expired_state_is_400(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    sandbox.create_account(email)
    authorization_url = await _start(live_service, user, org, email)
    state_hash = hashlib.sha256(_query(authorization_url)["state"][0].encode()).hexdigest()
    async with sessionmaker() as session:
        # The consent took longer than the state lives (10 minutes).
        await session.execute(
            update(OAuthState)
            .where(OAuthState.state_hash == state_hash)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()

    trip = await consent(authorization_url)
    _assert_problem(trip.response, 400)
    assert await _mailboxes_for(sessionmaker, email) == []


async def test_a_missing_or_unknown_state_is_400(live_service: LiveService) -> None:
    for query in (
        "code=4/0Aabc",
        "code=4/0Aabc&state=not-a-state-we-issued",
        "error=access_denied",
    ):
        response = await live_service.http.get(f"/v1/oauth/google/callback?{query}")
        _assert_problem(response, 400)
        assert "location" not in response.headers


async def test_a_state_from_another_user_cannot_take_their_code(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    """Mallory swaps Alice's state for her own: the code is bound to Alice's PKCE
    challenge, so the exchange with Mallory's verifier fails and nothing is linked;
    Alice's own callback still works afterwards."""
    alice_email = unique_email("alice")
    sandbox.create_account(alice_email)
    alice = (unique("user"), unique("org"))
    mallory = (unique("user"), unique("org"))
    alice_url = await _start(live_service, *alice, alice_email)
    mallory_url = await _start(live_service, *mallory, unique_email("mallory"))

    async with loopback_client() as browser:
        google = await browser.get(alice_url)
    alice_callback = google.headers["location"]
    forged = _replace_query(alice_callback, state=_query(mallory_url)["state"][0])

    response = await live_service.http.get(forged)
    assert response.status_code == 303
    result = _query(response.headers["location"])
    assert result["status"] == ["error"] and result["error"] == ["exchange_failed"]
    assert await _mailboxes_for(sessionmaker, alice_email) == []

    genuine = await live_service.http.get(alice_callback)
    assert genuine.status_code == 303
    assert _query(genuine.headers["location"])["status"] == ["connected"]
    [row] = await _mailboxes_for(sessionmaker, alice_email)
    assert (row.user_id, row.org_id) == alice


async def test_a_mismatched_pkce_verifier_is_refused(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    email = unique_email()
    sandbox.create_account(email)
    authorization_url = await _start(live_service, unique("user"), unique("org"), email)
    other = base64.urlsafe_b64encode(hashlib.sha256(b"x" * 64).digest()).rstrip(b"=").decode()
    trip = await consent(_replace_query(authorization_url, code_challenge=other))
    assert trip.response.status_code == 303
    assert trip.result["status"] == "error"
    assert trip.result["error"] == "exchange_failed"
    assert "verifier" in trip.result["error_description"]
    assert await _mailboxes_for(sessionmaker, email) == []


async def test_denied_consent_comes_back_as_an_error(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    email = unique_email()
    sandbox.create_account(email)
    authorization_url = await _start(live_service, unique("user"), unique("org"), email)
    sandbox.set_consent(auto=True, decision="deny")
    try:
        trip = await consent(authorization_url)
    finally:
        sandbox.set_consent(auto=True)
    assert trip.response.status_code == 303
    assert trip.location.startswith(RETURN_URL)
    assert trip.result["status"] == "error" and trip.result["error"] == "access_denied"
    assert await _mailboxes_for(sessionmaker, email) == []
    # the state is spent even though linking failed
    _assert_problem(await live_service.http.get(trip.callback_url), 400)


async def test_a_grant_without_read_access_links_nothing(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    email = unique_email()
    sandbox.create_account(email)
    authorization_url = await _start(live_service, unique("user"), unique("org"), email)
    sandbox.set_consent(auto=True, scopes=[GMAIL_SEND])  # the user unticks "read"
    try:
        trip = await consent(authorization_url)
    finally:
        sandbox.set_consent(auto=True)
    assert trip.result["status"] == "error"
    assert trip.result["error"] == "insufficient_scopes"
    assert await _mailboxes_for(sessionmaker, email) == []


async def test_a_failed_exchange_comes_back_as_an_error(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    email = unique_email()
    sandbox.create_account(email)
    sandbox.fault("oauth.token", "server_error", account=email)
    trip = await consent(await _start(live_service, unique("user"), unique("org"), email))
    assert trip.result["status"] == "error" and trip.result["error"] == "exchange_failed"
    assert await _mailboxes_for(sessionmaker, email) == []


async def test_no_refresh_token_means_no_mailbox(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    """Without prompt=consent Google skips the screen for a returning user and sends
    no refresh token: linking must stop there."""
    email = unique_email()
    sandbox.create_account(email)
    sandbox.grant(email, [GMAIL_SEND, GMAIL_READONLY])  # consented once before
    authorization_url = await _start(live_service, unique("user"), unique("org"), email)
    trip = await consent(_replace_query(authorization_url, prompt=None))
    assert trip.result["status"] == "error"
    assert trip.result["error"] == "missing_refresh_token"
    assert await _mailboxes_for(sessionmaker, email) == []


async def test_a_failed_watch_leaves_no_active_mailbox(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    sandbox.create_account(email)
    sandbox.fault("gmail.users.watch", "backend_error", account=email)
    trip = await consent(await _start(live_service, user, org, email))
    assert trip.result["status"] == "error" and trip.result["error"] == "watch_failed"
    assert await _mailboxes_for(sessionmaker, email) == []

    # A disconnected mailbox whose reconnect fails at the watch stays disconnected.
    linked = await link_mailbox(live_service, sandbox, org_id=org, user_id=user, email=email)
    headers = bearer(user, org)
    deleted = await live_service.http.delete(f"/v1/mailboxes/{linked['id']}", headers=headers)
    assert deleted.status_code == 204
    sandbox.fault("gmail.users.watch", "not_found", account=email)
    trip = await consent(await _start(live_service, user, org, email))
    assert trip.result["error"] == "watch_failed"
    shown = (await live_service.http.get(f"/v1/mailboxes/{linked['id']}", headers=headers)).json()
    assert shown["status"] == "disconnected"
    assert shown["disconnect_reason"] == "disconnected by the user"


async def test_connect_refuses_return_urls_off_the_allowed_origins(
    live_service: LiveService,
) -> None:
    headers = bearer(unique("user"), unique("org"))
    for return_url in (
        "https://crm.leadmail.test/settings",
        "http://crm.leadmail.test:8080/",
        "http://crm.leadmail.test@evil.test/",
        "http://evil.test\\@crm.leadmail.test/",
        "//evil.test/",
    ):
        response = await live_service.http.post(
            "/v1/mailboxes/connect", json={"return_url": return_url}, headers=headers
        )
        _assert_problem(response, 422)
    unauthenticated = await live_service.http.post(
        "/v1/mailboxes/connect", json={"return_url": RETURN_URL}
    )
    _assert_problem(unauthenticated, 401)


async def test_connect_without_a_google_client_is_503(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/mailboxes/connect",
        json={"return_url": "http://localhost:3000/"},
        headers=bearer(unique("user"), unique("org")),
    )
    body = _assert_problem(response, 503)
    assert "GOOGLE_CLIENT_ID" in body["detail"]

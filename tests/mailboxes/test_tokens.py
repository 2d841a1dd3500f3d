"""Access tokens: cached, refreshed one at a time, off the event loop; refresh tokens kept
secret; a refused grant disconnects the mailbox once and for all, until it is relinked."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.crypto import TokenCipher
from app.db import Base
from app.google import GmailSession, Profile, TokenEndpointError, Unavailable
from app.mailboxes.access import MailboxAccess, MailboxDisconnected
from app.mailboxes.models import Mailbox
from app.observability import JsonFormatter
from sandbox.testing import RunningSandbox
from tests.harness import RETURN_URL, LiveService, consent, link_mailbox, unique_email
from tests.support import bearer, free_port, unique

Sessions = async_sessionmaker[AsyncSession]
REVOKED_REASON = (
    "Google refused the refresh token (invalid_grant: Token has been expired or revoked.); "
    "reconnect the mailbox"
)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _load(service: LiveService, mailbox_id: str) -> Mailbox:
    async def load() -> Mailbox:
        async with service.app.state.sessionmaker() as session:
            mailbox = await session.get(Mailbox, mailbox_id)
            assert mailbox is not None
            return mailbox

    return await service.run(load())


def _access(service: LiveService) -> MailboxAccess:
    access: MailboxAccess = service.app.state.mailbox_access
    return access


async def _profile(gmail: GmailSession) -> Profile:
    return await gmail.get_profile()


async def _linked(service: LiveService, sandbox: RunningSandbox) -> tuple[dict[str, Any], str]:
    email = unique_email()
    mailbox = await link_mailbox(
        service, sandbox, org_id=unique("org"), user_id=unique("user"), email=email
    )
    return mailbox, email


def _token_calls(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return [call for call in sandbox.calls() if call["path"] == "/token"]


async def test_the_refresh_token_is_never_shown_logged_or_stored_in_plaintext(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: Sessions,
    fernet_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    org, user, email = unique("org"), unique("user"), unique_email()
    sandbox.create_account(email)
    headers = bearer(user, org, email=email)
    responses: list[httpx.Response] = []
    started = await live_service.http.post(
        "/v1/mailboxes/connect", json={"return_url": RETURN_URL}, headers=headers
    )
    responses.append(started)
    trip = await consent(started.json()["authorization_url"])
    responses.append(trip.response)
    mailbox_id = trip.result["mailbox_id"]
    responses.append(await live_service.http.get(f"/v1/mailboxes/{mailbox_id}", headers=headers))
    responses.append(await live_service.http.get("/v1/mailboxes", headers=headers))

    access = _access(live_service)
    mailbox = await _load(live_service, mailbox_id)
    access.forget(mailbox_id)  # make the service refresh, so that path is logged too
    sandbox.fault("gmail.users.getProfile", "unauthorized", account=email)
    await live_service.run(access.call(mailbox, _profile))
    access_token = await live_service.run(access.access_token(mailbox))
    responses.append(await live_service.http.get("/metrics"))
    deleted = await live_service.http.delete(f"/v1/mailboxes/{mailbox_id}", headers=headers)
    responses.append(deleted)

    assert mailbox.refresh_token_encrypted is not None
    refresh_token = TokenCipher([fernet_key]).decrypt(mailbox.refresh_token_encrypted)
    assert refresh_token.startswith("1//")
    secrets = [refresh_token, access_token]

    for response in responses:
        for secret in secrets:
            assert secret not in response.text
            assert secret not in str(response.headers)

    formatter = JsonFormatter()
    ours = [record for record in caplog.records if not record.name.startswith("sandbox")]
    assert any(record.getMessage() == "mailbox.linked" for record in ours)
    assert any(record.getMessage() == "gmail.token.rejected" for record in ours)
    for record in ours:
        line = formatter.format(record)
        for secret in secrets:
            assert secret not in line, record.name

    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                for value in row:
                    if isinstance(value, bytes):
                        assert refresh_token.encode() not in value
                    else:
                        assert refresh_token not in str(value)


async def test_one_refresh_serves_concurrent_callers_and_is_cached(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    linked, _ = await _linked(live_service, sandbox)
    access = _access(live_service)
    mailbox = await _load(live_service, linked["id"])
    access.forget(mailbox.id)
    sandbox.clear_calls()

    async def many() -> list[str]:
        return list(await asyncio.gather(*(access.access_token(mailbox) for _ in range(8))))

    tokens = await live_service.run(many())
    assert len(set(tokens)) == 1
    assert len(_token_calls(sandbox)) == 1
    again = await live_service.run(access.access_token(mailbox))
    assert again == tokens[0]
    assert len(_token_calls(sandbox)) == 1


async def test_a_401_costs_one_refresh_and_one_retry(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    linked, email = await _linked(live_service, sandbox)
    access = _access(live_service)
    mailbox = await _load(live_service, linked["id"])
    sandbox.fault("gmail.users.getProfile", "unauthorized", account=email)
    sandbox.clear_calls()

    profile = await live_service.run(access.call(mailbox, _profile))

    assert profile.email_address == email
    trail = [(call["path"], call["status"]) for call in sandbox.calls()]
    assert trail == [
        ("/gmail/v1/users/me/profile", 401),
        ("/token", 200),
        ("/gmail/v1/users/me/profile", 200),
    ]


async def test_a_revoked_grant_disconnects_on_next_use_and_reconnecting_restores_it(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    org, user, email = unique("org"), unique("user"), unique_email()
    linked = await link_mailbox(live_service, sandbox, org_id=org, user_id=user, email=email)
    access = _access(live_service)
    refused_before = _metric("leadmail_token_refreshes_total", outcome="invalid_grant")
    sandbox.revoke(email)  # the user removes the app in their Google account

    async def use_and_roll_back() -> tuple[MailboxDisconnected, str]:
        async with live_service.app.state.sessionmaker() as session:
            mailbox = await session.get(Mailbox, linked["id"])
            assert mailbox is not None
            with pytest.raises(MailboxDisconnected) as caught:
                await access.call(mailbox, _profile)
            status = mailbox.status
            await session.rollback()  # the caller's unit of work fails; the mark stays
        return caught.value, status

    error, status_seen_by_caller = await live_service.run(use_and_roll_back())
    assert error.mailbox_id == linked["id"]
    assert error.reason == REVOKED_REASON
    assert status_seen_by_caller == "disconnected"
    assert _metric("leadmail_token_refreshes_total", outcome="invalid_grant") == refused_before + 1

    headers = bearer(user, org)
    shown = (await live_service.http.get(f"/v1/mailboxes/{linked['id']}", headers=headers)).json()
    assert shown["status"] == "disconnected"
    assert shown["disconnect_reason"] == REVOKED_REASON
    assert shown["disconnected_at"] is not None
    assert shown["watch_expires_at"] is None
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.refresh_token_encrypted is None
        cursor_before = row.history_cursor

    # Nothing retries a refused grant: the next use fails at once, without Google.
    sandbox.clear_calls()
    mailbox = await _load(live_service, linked["id"])
    with pytest.raises(MailboxDisconnected):
        await live_service.run(access.call(mailbox, _profile))
    assert sandbox.calls() == []

    relinked = await link_mailbox(live_service, sandbox, org_id=org, user_id=user, email=email)
    assert relinked["id"] == linked["id"]
    assert relinked["status"] == "active"
    assert relinked["disconnect_reason"] is None and relinked["disconnected_at"] is None
    assert relinked["watch_expires_at"] is not None
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.refresh_token_encrypted is not None
        # the old cursor is kept so mail that came in while unlinked is still synced
        assert row.history_cursor == cursor_before
        assert row.sync_requested is True
        assert row.pending_history_id == int(sandbox.account(email)["history_id"])
    profile = await live_service.run(access.call(await _load(live_service, linked["id"]), _profile))
    assert profile.email_address == email


@asynccontextmanager
async def _own_access(
    settings: Settings, sessions: Sessions, fernet_key: str, **options: Any
) -> AsyncIterator[MailboxAccess]:
    async with httpx.AsyncClient(trust_env=False) as http:
        access = MailboxAccess(settings, http, sessions, TokenCipher([fernet_key]), **options)
        try:
            yield access
        finally:
            await access.aclose()


async def test_network_errors_are_retried_a_bounded_number_of_times(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions, fernet_key: str
) -> None:
    linked, _ = await _linked(live_service, sandbox)
    unreachable = live_service.settings.model_copy(
        update={"google_token_uri": f"http://127.0.0.1:{free_port()}/token"}
    )
    retried = _metric("leadmail_token_refreshes_total", outcome="retried")
    gave_up = _metric("leadmail_token_refreshes_total", outcome="unavailable")
    async with (
        _own_access(
            unreachable, sessionmaker, fernet_key, refresh_attempts=3, refresh_backoff=0.01
        ) as access,
        sessionmaker() as session,
    ):
        mailbox = await session.get(Mailbox, linked["id"])
        assert mailbox is not None
        with pytest.raises(Unavailable):
            await access.access_token(mailbox)
    assert _metric("leadmail_token_refreshes_total", outcome="retried") == retried + 2
    assert _metric("leadmail_token_refreshes_total", outcome="unavailable") == gave_up + 1
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.status == "active" and row.refresh_token_encrypted


async def test_5xx_from_the_token_endpoint_is_transient(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions, fernet_key: str
) -> None:
    linked, email = await _linked(live_service, sandbox)
    # google-auth tries three times itself; our retry gets past the third failure.
    sandbox.fault("oauth.token", "unavailable", count=3, account=email)
    sandbox.clear_calls()
    async with (
        _own_access(
            live_service.settings, sessionmaker, fernet_key, refresh_backoff=0.01
        ) as access,
        sessionmaker() as session,
    ):
        mailbox = await session.get(Mailbox, linked["id"])
        assert mailbox is not None
        token = await access.access_token(mailbox)
    assert token.startswith("ya29.")
    assert [call["status"] for call in _token_calls(sandbox)] == [503, 503, 503, 200]


async def test_a_refused_client_is_not_blamed_on_the_mailbox(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions, fernet_key: str
) -> None:
    linked, email = await _linked(live_service, sandbox)
    sandbox.fault("oauth.token", "invalid_client", account=email)
    async with (
        _own_access(live_service.settings, sessionmaker, fernet_key) as access,
        sessionmaker() as session,
    ):
        mailbox = await session.get(Mailbox, linked["id"])
        assert mailbox is not None
        with pytest.raises(TokenEndpointError):
            await access.access_token(mailbox)
        assert mailbox.status == "active"
    async with sessionmaker() as session:
        row = await session.get(Mailbox, linked["id"])
        assert row is not None and row.status == "active"


@contextmanager
def _slow_token_endpoint(target: str, delay: float) -> Iterator[tuple[str, list[float]]]:
    """A token endpoint that answers like ``target`` after ``delay`` seconds."""
    seen: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(time.monotonic())
            time.sleep(delay)
            answer = httpx.post(
                target, content=body, headers={"Content-Type": self.headers["Content-Type"]}
            )
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", seen
    finally:
        server.shutdown()
        server.server_close()


async def test_a_slow_refresh_does_not_block_the_event_loop(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions, fernet_key: str
) -> None:
    linked, _ = await _linked(live_service, sandbox)
    with _slow_token_endpoint(sandbox.token_uri, delay=0.5) as (token_uri, seen):
        slow = live_service.settings.model_copy(update={"google_token_uri": token_uri})
        async with (
            _own_access(slow, sessionmaker, fernet_key) as access,
            sessionmaker() as session,
        ):
            mailbox = await session.get(Mailbox, linked["id"])
            assert mailbox is not None
            ticks = 0
            refresh = asyncio.create_task(access.access_token(mailbox))
            while not refresh.done():
                await asyncio.sleep(0.01)
                ticks += 1
            token = await refresh
    assert token.startswith("ya29.")
    assert len(seen) == 1  # the refresh went to GOOGLE_TOKEN_URI
    assert ticks >= 20  # the loop kept running through a 0.5 s refresh

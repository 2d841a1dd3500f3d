"""Consent URL, PKCE, code exchange, refresh (through google-auth) and revoke."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import google.auth._exponential_backoff
import httpx
import pytest

from app.google.errors import (
    InvalidGrant,
    MalformedResponse,
    TokenEndpointError,
    TransportFailure,
    Unavailable,
)
from app.google.oauth import OAuthClient, new_pkce, pkce_challenge

AUTH_URI = "https://accounts.test/o/oauth2/v2/auth"
TOKEN_URI = "https://oauth2.test/token"
REVOKE_URI = "https://oauth2.test/revoke"
READONLY = "https://www.googleapis.com/auth/gmail.readonly"
SEND = "https://www.googleapis.com/auth/gmail.send"

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class TokenServer:
    """A scripted token endpoint shared by the async and the sync httpx client."""

    responses: list[httpx.Response | Exception] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    calls: list[tuple[str, int, float]] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        self.threads.append(threading.get_ident())
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def form(self, index: int = -1) -> dict[str, str]:
        parsed = parse_qs(self.requests[index].content.decode(), keep_blank_values=True)
        return {key: values[0] for key, values in parsed.items()}

    def on_call(self, method: str, status: int, seconds: float) -> None:
        self.calls.append((method, status, seconds))


@pytest.fixture
def server() -> TokenServer:
    return TokenServer()


@pytest.fixture
async def oauth(server: TokenServer) -> AsyncIterator[OAuthClient]:
    transport = httpx.MockTransport(server.handler)
    async with httpx.AsyncClient(transport=transport) as http:
        with httpx.Client(transport=transport) as sync_http:
            yield OAuthClient(
                "client-id",
                "client-secret",
                AUTH_URI,
                TOKEN_URI,
                REVOKE_URI,
                http,
                sync_http=sync_http,
                on_call=server.on_call,
            )


@pytest.fixture
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """google-auth sleeps ~3 s between its token retries; record the waits instead."""
    waits: list[float] = []
    monkeypatch.setattr(
        google.auth._exponential_backoff, "time", SimpleNamespace(sleep=waits.append)
    )
    return waits


def oauth_error(status: int, error: str, description: str, **extra: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "error_description": description, **extra})


def test_pkce_challenge_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_pkce_is_fresh_and_well_formed() -> None:
    first, second = new_pkce(), new_pkce()
    assert first.verifier != second.verifier
    for pair in (first, second):
        assert 43 <= len(pair.verifier) <= 128
        assert set(pair.verifier) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        )
        assert pair.challenge == pkce_challenge(pair.verifier)
        verifier, challenge = pair  # unpacks like the (verifier, challenge) tuple it is
        assert (verifier, challenge) == (pair.verifier, pair.challenge)


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "!"])
def test_pkce_rejects_invalid_verifiers(verifier: str) -> None:
    with pytest.raises(ValueError):
        pkce_challenge(verifier)


async def test_authorization_url_carries_every_consent_parameter(oauth: OAuthClient) -> None:
    url = oauth.authorization_url(
        redirect_uri="http://localhost:8000/v1/oauth/google/callback",
        scopes=[SEND, READONLY],
        state="st&te=1",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        login_hint="rep@example.com",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTH_URI
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query == {
        "client_id": "client-id",
        "redirect_uri": "http://localhost:8000/v1/oauth/google/callback",
        "response_type": "code",
        "scope": f"{SEND} {READONLY}",
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": "st&te=1",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "login_hint": "rep@example.com",
    }
    assert "%20" in parts.query  # scopes space-separated, percent-encoded


async def test_authorization_url_without_login_hint(oauth: OAuthClient) -> None:
    url = oauth.authorization_url(
        redirect_uri="http://r", scopes=[SEND], state="s", code_challenge="c" * 43
    )
    assert "login_hint" not in parse_qs(urlsplit(url).query)


async def test_exchange_code_posts_a_form_and_parses_the_grant(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(
        httpx.Response(
            200,
            json={
                "access_token": "ya29.new",
                "expires_in": 3599,
                "refresh_token": "1//0g-refresh",
                "scope": f"{READONLY} {SEND}",
                "token_type": "Bearer",
            },
        )
    )
    before = datetime.now(UTC)
    grant = await oauth.exchange_code("4/0Acode", redirect_uri="http://r/cb", code_verifier="v")
    request = server.requests[-1]
    assert (request.method, str(request.url)) == ("POST", TOKEN_URI)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert server.form() == {
        "grant_type": "authorization_code",
        "code": "4/0Acode",
        "redirect_uri": "http://r/cb",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "code_verifier": "v",
    }
    assert grant.access_token == "ya29.new"
    assert grant.refresh_token == "1//0g-refresh"
    assert grant.scopes == frozenset({READONLY, SEND})
    assert before + timedelta(seconds=3599) <= grant.expires_at
    assert grant.expires_at <= datetime.now(UTC) + timedelta(seconds=3599)
    assert "ya29" not in repr(grant) and "1//0g" not in repr(grant)
    assert server.calls[0][:2] == ("token.exchange", 200)


async def test_exchange_without_refresh_token_and_string_expiry(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(
        httpx.Response(200, json={"access_token": "a", "expires_in": "60", "scope": SEND})
    )
    grant = await oauth.exchange_code("c", redirect_uri="r", code_verifier="v")
    assert grant.refresh_token is None
    assert grant.scopes == frozenset({SEND})
    assert grant.expires_at <= datetime.now(UTC) + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (oauth_error(400, "invalid_grant", "Code was already redeemed."), InvalidGrant),
        (oauth_error(400, "invalid_grant", "Malformed auth code."), InvalidGrant),
        (oauth_error(401, "invalid_client", "The OAuth client was not found."), TokenEndpointError),
        (
            oauth_error(400, "invalid_request", "Missing required parameter: code"),
            TokenEndpointError,
        ),
        (httpx.Response(503, content=b"<html>unavailable</html>"), Unavailable),
        (oauth_error(500, "server_error", "Internal"), Unavailable),
        (httpx.Response(200, json={"token_type": "Bearer"}), MalformedResponse),
    ],
)
async def test_exchange_failures(
    oauth: OAuthClient, server: TokenServer, response: httpx.Response, expected: type[Exception]
) -> None:
    server.responses.append(response)
    with pytest.raises(expected):
        await oauth.exchange_code("c", redirect_uri="r", code_verifier="v")


async def test_exchange_network_error(oauth: OAuthClient, server: TokenServer) -> None:
    server.responses.append(httpx.ConnectError("refused"))
    with pytest.raises(TransportFailure):
        await oauth.exchange_code("c", redirect_uri="r", code_verifier="v")
    assert server.calls[0][:2] == ("token.exchange", 0)


async def test_refresh_through_google_auth_off_the_event_loop(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(
        httpx.Response(
            200,
            json={
                "access_token": "ya29.fresh",
                "expires_in": 3599,
                "scope": SEND,
                "token_type": "Bearer",
            },
        )
    )
    before = datetime.now(UTC)
    token = await oauth.refresh("1//refresh")
    assert token.token == "ya29.fresh"
    assert token.expires_at.tzinfo is not None
    assert before + timedelta(seconds=3590) <= token.expires_at
    assert token.expires_at <= datetime.now(UTC) + timedelta(seconds=3600)
    assert token.scopes == frozenset({SEND})
    assert token.rotated_refresh_token is None
    form = server.form()
    assert form == {
        "grant_type": "refresh_token",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "refresh_token": "1//refresh",
    }
    assert str(server.requests[-1].url) == TOKEN_URI
    assert server.threads[-1] != threading.get_ident()  # ran in a worker thread
    assert server.calls[-1][:2] == ("token.refresh", 200)


async def test_refresh_with_scopes_and_rotated_refresh_token(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(
        httpx.Response(
            200,
            json={
                "access_token": "a2",
                "expires_in": 60,
                "refresh_token": "1//rotated",
                "scope": f"{SEND} {READONLY}",
            },
        )
    )
    token = await oauth.refresh("1//old", scopes=[SEND, READONLY])
    assert set(server.form()["scope"].split()) == {SEND, READONLY}
    assert token.rotated_refresh_token == "1//rotated"
    assert token.scopes == frozenset({SEND, READONLY})


async def test_refresh_revoked_is_invalid_grant(oauth: OAuthClient, server: TokenServer) -> None:
    server.responses.append(oauth_error(400, "invalid_grant", "Token has been expired or revoked."))
    with pytest.raises(InvalidGrant) as caught:
        await oauth.refresh("1//revoked")
    assert caught.value.description == "Token has been expired or revoked."
    assert caught.value.retryable is False
    assert len(server.requests) == 1  # a 400 is never retried
    assert server.calls[-1][:2] == ("token.refresh", 400)


async def test_refresh_invalid_rapt_is_invalid_grant(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(
        oauth_error(
            400,
            "invalid_grant",
            "reauth related error (invalid_rapt)",
            error_subtype="invalid_rapt",
        )
    )
    with pytest.raises(InvalidGrant) as caught:
        await oauth.refresh("1//workspace")
    assert caught.value.subtype == "invalid_rapt"


async def test_refresh_invalid_client_is_token_endpoint_error(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(oauth_error(401, "invalid_client", "Unauthorized"))
    with pytest.raises(TokenEndpointError) as caught:
        await oauth.refresh("1//x")
    assert caught.value.reason == "invalid_client"
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "response",
    [
        oauth_error(503, "temporarily_unavailable", "down"),
        httpx.Response(503, content=b"<html>Service Unavailable</html>"),
    ],
)
async def test_refresh_gives_up_after_google_auth_retries(
    oauth: OAuthClient,
    server: TokenServer,
    no_backoff_sleep: list[float],
    response: httpx.Response,
) -> None:
    server.responses.append(response)
    with pytest.raises(Unavailable) as caught:
        await oauth.refresh("1//x")
    assert caught.value.retryable is True
    assert caught.value.status == 503
    # google-auth's own retries: three attempts, two backoff waits (HTML bodies too).
    assert len(server.requests) == 3
    assert len(no_backoff_sleep) == 2


async def test_refresh_retries_a_503_then_succeeds(
    oauth: OAuthClient, server: TokenServer, no_backoff_sleep: list[float]
) -> None:
    server.responses.extend(
        [
            oauth_error(503, "server_error", "busy"),
            httpx.Response(200, json={"access_token": "a3", "expires_in": 3599}),
        ]
    )
    token = await oauth.refresh("1//x")
    assert token.token == "a3"
    assert token.scopes == frozenset()
    assert len(server.requests) == 2
    assert len(no_backoff_sleep) == 1


async def test_refresh_network_error_is_transport_failure(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(httpx.ConnectError("refused"))
    with pytest.raises(TransportFailure):
        await oauth.refresh("1//x")
    assert server.calls[-1][:2] == ("token.refresh", 0)


async def test_refresh_success_without_access_token_is_malformed(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(httpx.Response(200, json={"expires_in": 3599}))
    with pytest.raises(MalformedResponse):
        await oauth.refresh("1//x")


async def test_revoke_posts_the_token(oauth: OAuthClient, server: TokenServer) -> None:
    server.responses.append(httpx.Response(200, content=b""))
    await oauth.revoke("1//refresh")
    assert str(server.requests[-1].url) == REVOKE_URI
    assert server.form() == {"token": "1//refresh"}
    assert server.calls[-1][:2] == ("token.revoke", 200)


async def test_revoke_of_an_already_revoked_token_is_fine(
    oauth: OAuthClient, server: TokenServer
) -> None:
    server.responses.append(oauth_error(400, "invalid_token", "Token expired or revoked"))
    await oauth.revoke("1//gone")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(503, content=b""), Unavailable),
        (oauth_error(400, "invalid_request", "Bad Request"), TokenEndpointError),
    ],
)
async def test_revoke_failures(
    oauth: OAuthClient, server: TokenServer, response: httpx.Response, expected: type[Exception]
) -> None:
    server.responses.append(response)
    with pytest.raises(expected):
        await oauth.revoke("t")


async def test_default_sync_client_is_owned_and_closed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = OAuthClient("i", "s", AUTH_URI, TOKEN_URI, REVOKE_URI, http)
        sync_http: Any = client._sync_http
        client.close()
        assert sync_http.is_closed

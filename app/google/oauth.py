"""OAuth 2.0 for a web server app: consent URL with PKCE, code exchange, refresh, revoke.

Consent, exchange and revoke are plain form posts over the shared ``httpx.AsyncClient``.
Refresh goes through google-auth (``Credentials.refresh``), whose retry and reauth
handling we want to keep; it is blocking, so it runs in a worker thread over a small
sync httpx transport (:class:`HttpxAuthRequest`). Wire facts: GOOGLE.md §1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import google.auth.exceptions
import google.auth.transport
import httpx
from google.oauth2.credentials import Credentials

from app.google.errors import (
    GoogleError,
    InvalidGrant,
    MalformedResponse,
    TokenEndpointError,
    TransportFailure,
    Unavailable,
)
from app.google.http import CallHook, json_object, report_call, request
from app.google.wire import JsonObject, WireFormatError, as_int, opt_str, req_str

__all__ = [
    "AccessToken",
    "HttpxAuthRequest",
    "OAuthClient",
    "PkcePair",
    "TokenGrant",
    "new_pkce",
    "pkce_challenge",
]

# Google always sends expires_in (3599); this only covers a server that does not.
_DEFAULT_LIFETIME = timedelta(hours=1)
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


class PkcePair(NamedTuple):
    verifier: str
    challenge: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a code exchange yields. ``refresh_token`` is None unless consent was shown
    with ``access_type=offline``; ``scopes`` is what the user granted, maybe less than
    asked (granular consent)."""

    access_token: str
    refresh_token: str | None
    expires_at: datetime
    scopes: frozenset[str]

    def __repr__(self) -> str:  # keep tokens out of logs and tracebacks
        return f"TokenGrant(expires_at={self.expires_at!r}, scopes={sorted(self.scopes)!r})"


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A refreshed access token. ``rotated_refresh_token`` is set only when the server
    replaced the refresh token (Google normally does not); store it if so."""

    token: str
    expires_at: datetime
    scopes: frozenset[str]
    rotated_refresh_token: str | None = None

    def __repr__(self) -> str:
        return f"AccessToken(expires_at={self.expires_at!r}, scopes={sorted(self.scopes)!r})"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: ``BASE64URL-NO-PAD(SHA256(ASCII(verifier)))``."""
    if not _VERIFIER.fullmatch(verifier):
        raise ValueError("a PKCE verifier is 43-128 characters of [A-Za-z0-9-._~]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> PkcePair:
    """A fresh verifier (86 url-safe characters from 64 random bytes) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    return PkcePair(verifier, pkce_challenge(verifier))


class _AuthResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxAuthRequest(google.auth.transport.Request):
    """google-auth's blocking transport interface over a sync ``httpx.Client``.

    It remembers the last response so that a failed refresh can be classified from
    the token endpoint's own answer rather than from google-auth's message text.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self.last_response: httpx.Response | None = None

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _AuthResponse:
        try:
            if timeout is None:
                response = self._client.request(method, url, content=body, headers=headers)
            else:
                response = self._client.request(
                    method, url, content=body, headers=headers, timeout=timeout
                )
        except httpx.RequestError as exc:
            where = url.split("?", 1)[0]
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{method} {where}: {type(exc).__name__}: {exc}"
            ) from exc
        self.last_response = response
        return _AuthResponse(response)


class OAuthClient:
    """Google's OAuth endpoints for one web client."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        auth_uri: str,
        token_uri: str,
        revoke_uri: str,
        http: httpx.AsyncClient,
        *,
        sync_http: httpx.Client | None = None,
        on_call: CallHook | None = None,
    ) -> None:
        """``sync_http`` serves google-auth's refresh (a client of our own, closed by
        :meth:`close`, when not given); ``on_call`` gets ``token.exchange``,
        ``token.refresh`` and ``token.revoke`` outcomes."""
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_uri = auth_uri
        self._token_uri = token_uri
        self._revoke_uri = revoke_uri
        self._http = http
        self._owns_sync_http = sync_http is None
        self._sync_http = sync_http or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self._on_call = on_call

    def close(self) -> None:
        """Close the sync client if we created it."""
        if self._owns_sync_http:
            self._sync_http.close()

    def authorization_url(
        self,
        *,
        redirect_uri: str,
        scopes: Sequence[str],
        state: str,
        code_challenge: str,
        login_hint: str | None = None,
    ) -> str:
        """The consent page: offline access, consent forced (so a refresh token comes
        back), incremental scopes and PKCE S256."""
        params = {
            "client_id": self._client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if login_hint:
            params["login_hint"] = login_hint
        separator = "&" if "?" in self._auth_uri else "?"
        return f"{self._auth_uri}{separator}{urlencode(params, quote_via=quote)}"

    async def exchange_code(
        self, code: str, *, redirect_uri: str, code_verifier: str
    ) -> TokenGrant:
        """Redeem an authorization code.

        Raises :class:`InvalidGrant` (reused, expired or garbled code, wrong verifier),
        :class:`TokenEndpointError` (client misconfigured), :class:`Unavailable`.
        """
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "code_verifier": code_verifier,
        }
        response = await self._post("token.exchange", self._token_uri, form)
        data = json_object(response)
        try:
            return TokenGrant(
                access_token=req_str(data, "access_token"),
                refresh_token=opt_str(data, "refresh_token") or None,
                expires_at=_expires_at(data),
                scopes=_scopes(data),
            )
        except WireFormatError as exc:
            raise MalformedResponse(f"unexpected token response: {exc}", status=200) from exc

    async def refresh(
        self, refresh_token: str, scopes: Collection[str] | None = None
    ) -> AccessToken:
        """A new access token from a refresh token, via google-auth in a worker thread.

        google-auth retries 5xx/429 itself (3 attempts, about 3 s). Raises
        :class:`InvalidGrant` when the grant is gone (revoked, expired, password change,
        reauth required), :class:`Unavailable` when the endpoint stays down or
        unreachable, :class:`TokenEndpointError` for any other refusal.
        """
        started = time.perf_counter()
        transport = HttpxAuthRequest(self._sync_http)
        try:
            return await asyncio.to_thread(self._refresh_blocking, transport, refresh_token, scopes)
        finally:
            last = transport.last_response
            report_call(
                self._on_call,
                "token.refresh",
                last.status_code if last is not None else 0,
                time.perf_counter() - started,
            )

    async def revoke(self, token: str) -> None:
        """Revoke a grant by one of its tokens; an already invalid token is fine."""
        try:
            await self._post("token.revoke", self._revoke_uri, {"token": token})
        except TokenEndpointError as exc:
            if exc.reason != "invalid_token":
                raise

    def _refresh_blocking(
        self,
        transport: HttpxAuthRequest,
        refresh_token: str,
        scopes: Collection[str] | None,
    ) -> AccessToken:
        credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=refresh_token,
            token_uri=self._token_uri,
            client_id=self._client_id,
            client_secret=self._client_secret,
            scopes=sorted(scopes) if scopes else None,
        )
        try:
            credentials.refresh(transport)  # type: ignore[no-untyped-call]
        except google.auth.exceptions.RefreshError as exc:
            raise _refresh_failure(exc, transport.last_response) from exc
        except google.auth.exceptions.TransportError as exc:
            raise TransportFailure(f"token refresh: {exc}") from exc

        token = credentials.token
        if not isinstance(token, str) or not token:
            raise MalformedResponse("token refresh returned no access token", status=200)
        expiry = credentials.expiry
        # google-auth keeps expiry as a naive datetime in UTC.
        expires_at = (
            expiry.replace(tzinfo=UTC)
            if isinstance(expiry, datetime)
            else datetime.now(UTC) + _DEFAULT_LIFETIME
        )
        granted = _granted_scopes(transport.last_response)
        new_refresh = credentials.refresh_token
        return AccessToken(
            token=token,
            expires_at=expires_at,
            scopes=granted if granted is not None else frozenset(scopes or ()),
            rotated_refresh_token=(
                new_refresh
                if isinstance(new_refresh, str) and new_refresh != refresh_token
                else None
            ),
        )

    async def _post(self, method_name: str, url: str, form: Mapping[str, str]) -> httpx.Response:
        started = time.perf_counter()
        status = 0
        try:
            response = await request(self._http, "POST", url, form=form, token_endpoint=True)
            status = response.status_code
            return response
        except GoogleError as exc:
            status = exc.status or 0
            raise
        finally:
            report_call(self._on_call, method_name, status, time.perf_counter() - started)


def _refresh_failure(
    exc: google.auth.exceptions.RefreshError, last: httpx.Response | None
) -> GoogleError:
    if last is not None and not last.is_success:
        # The endpoint's own answer is the truth; google-auth's text varies by version
        # (it drops the body on invalid_rapt and calls a non-JSON 503 non-retryable).
        return GoogleError.from_response(last, token_endpoint=True)
    if getattr(exc, "retryable", False):
        return Unavailable(f"token refresh failed: {exc}")
    if last is not None:
        return MalformedResponse(f"token refresh failed: {exc}", status=last.status_code)
    text = str(exc)
    if "invalid_grant" in text or "Reauthentication is needed" in text:
        return InvalidGrant(text, status=None)
    return TokenEndpointError(f"token refresh failed: {text}")


def _expires_at(data: JsonObject) -> datetime:
    expires_in = data.get("expires_in")
    lifetime = (
        timedelta(seconds=as_int(expires_in, "expires_in"))
        if expires_in is not None
        else _DEFAULT_LIFETIME
    )
    return datetime.now(UTC) + lifetime


def _scopes(data: JsonObject) -> frozenset[str]:
    return frozenset((opt_str(data, "scope") or "").split())


def _granted_scopes(response: httpx.Response | None) -> frozenset[str] | None:
    if response is None:
        return None
    try:
        data = json_object(response)
        return _scopes(data) if "scope" in data else None
    except (MalformedResponse, WireFormatError):
        return None

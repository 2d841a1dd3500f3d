"""Inbound Gmail notifications over Cloud Pub/Sub: decode the body, verify the sender.

:func:`decode_push_body` reads a push request (wrapped envelope or unwrapped payload),
:func:`decode_pubsub_data` the data bytes of a streaming-pull message, and
:class:`PushTokenVerifier` checks the push's OIDC bearer token against Google's
(cached) signing certs with google-auth. Wire facts: GOOGLE.md §4, §5.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
import google.auth.jwt
import httpx

from app.google.errors import (
    GoogleError,
    PushForbidden,
    PushUnauthenticated,
    Unavailable,
    UndecodablePush,
)
from app.google.http import json_object, request
from app.google.wire import WireFormatError, as_int, b64decode_lenient

__all__ = [
    "GOOGLE_ISSUERS",
    "GmailNotification",
    "PushClaims",
    "PushTokenVerifier",
    "decode_pubsub_data",
    "decode_push_body",
]

logger = logging.getLogger(__name__)

GOOGLE_ISSUERS = frozenset({"https://accounts.google.com", "accounts.google.com"})
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-store|no-cache)(?:$|[,\s=])", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class GmailNotification:
    """``historyId`` is the mailbox's new history id: a hint to sync up to, not a cursor."""

    email_address: str
    history_id: int
    message_id: str | None = None
    publish_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class PushClaims:
    """The verified claims of a push token."""

    email: str
    audience: str
    issuer: str
    subject: str | None
    issued_at: datetime
    expires_at: datetime


def decode_push_body(body: bytes, headers: Mapping[str, str]) -> GmailNotification:
    """A Gmail notification from a push request body.

    Accepts the default wrapped envelope (``message.data`` in standard or url-safe
    base64, padded or not; ``messageId``/``message_id``) and the unwrapped form whose
    body is the notification JSON itself (metadata then comes as ``x-goog-pubsub-*``
    headers). Raises :class:`UndecodablePush` for anything else.
    """
    document = _load_object(body, "push body")
    message = document.get("message")
    if isinstance(message, Mapping):
        data = message.get("data")
        if not isinstance(data, str) or not data:
            raise UndecodablePush("push message has no data")
        try:
            payload = b64decode_lenient(data)
        except WireFormatError as exc:
            raise UndecodablePush("push message data is not base64") from exc
        return decode_pubsub_data(
            payload,
            message_id=_first_str(message, "messageId", "message_id"),
            publish_time=_parse_time(_first_str(message, "publishTime", "publish_time")),
        )
    if "emailAddress" in document:
        return _notification(
            document,
            message_id=_header(headers, "x-goog-pubsub-message-id"),
            publish_time=_parse_time(_header(headers, "x-goog-pubsub-publish-time")),
        )
    raise UndecodablePush("neither a Pub/Sub envelope nor a Gmail notification")


def decode_pubsub_data(
    data: bytes,
    message_id: str | None = None,
    publish_time: datetime | None = None,
) -> GmailNotification:
    """A Gmail notification from a Pub/Sub message's data bytes (streaming pull)."""
    return _notification(
        _load_object(data, "notification"), message_id=message_id, publish_time=publish_time
    )


def _notification(
    document: Mapping[str, Any], *, message_id: str | None, publish_time: datetime | None
) -> GmailNotification:
    email = document.get("emailAddress")
    if not isinstance(email, str) or not email.strip():
        raise UndecodablePush("notification has no emailAddress")
    try:
        # Documented as a string, delivered as a number; json keeps big numbers exact.
        history_id = as_int(document.get("historyId"), "historyId")
    except WireFormatError as exc:
        raise UndecodablePush("notification has no usable historyId") from exc
    if history_id <= 0:
        raise UndecodablePush("notification historyId is not positive")
    return GmailNotification(
        email_address=email.strip(),
        history_id=history_id,
        message_id=message_id or None,
        publish_time=publish_time,
    )


def _load_object(raw: bytes, what: str) -> Mapping[str, Any]:
    try:
        document: Any = json.loads(raw)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise UndecodablePush(f"{what} is not JSON") from exc
    if not isinstance(document, dict):
        raise UndecodablePush(f"{what} is not a JSON object")
    return document


def _first_str(obj: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Works for case-insensitive header maps (Starlette, httpx) and plain dicts alike.
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None  # metadata only; never a reason to drop a notification
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class PushTokenVerifier:
    """Verifies the OIDC token Pub/Sub puts on each push.

    Certs come from ``certs_url`` (the v1 ``{kid: PEM}`` map) and are cached for their
    ``Cache-Control: max-age``; a token signed by an unknown ``kid`` triggers one early
    refetch (key rotation), at most every ``min_refetch_seconds``. google-auth checks
    signature, ``iat`` and ``exp`` (with ``clock_skew_seconds``); this class checks
    issuer, ``email_verified``, audience and service account. The token is never logged.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        certs_url: str,
        audience: str,
        service_account_email: str | None = None,
        *,
        clock_skew_seconds: int = 30,
        default_ttl_seconds: float = 300.0,
        min_refetch_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not audience:
            raise ValueError("a push audience is required; never skip the audience check")
        self._http = http
        self._certs_url = certs_url
        self._audience = audience
        self._service_account = service_account_email
        self._skew = clock_skew_seconds
        self._default_ttl = default_ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._certs: dict[str, str] = {}
        self._fresh_until = 0.0
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def verify(self, authorization_header: str | None) -> PushClaims:
        """The verified claims, or :class:`PushUnauthenticated` (401),
        :class:`PushForbidden` (403), :class:`Unavailable` (certs unreachable: 503)."""
        token = _bearer_token(authorization_header)
        try:
            header: Mapping[str, Any] = google.auth.jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError) as exc:
            raise PushUnauthenticated("malformed bearer token") from exc
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise PushUnauthenticated("malformed bearer token")

        certs = await self._certs_for(kid)
        if kid is not None and kid not in certs:
            raise PushUnauthenticated("token signed by an unknown key")
        try:
            # audience=None: we check it below so that a wrong audience can be a 403.
            payload: Mapping[str, Any] = google.auth.jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=None, clock_skew_in_seconds=self._skew
            )
        except (google.auth.exceptions.GoogleAuthError, ValueError, TypeError) as exc:
            raise PushUnauthenticated(_describe_decode_failure(exc)) from exc
        return self._check_claims(payload)

    def _check_claims(self, payload: Mapping[str, Any]) -> PushClaims:
        issuer = payload.get("iss")
        if issuer not in GOOGLE_ISSUERS:
            raise PushUnauthenticated("token not issued by Google")
        if payload.get("email_verified") is not True:
            raise PushUnauthenticated("token email is not verified")
        email = payload.get("email")
        if not isinstance(email, str) or not email:
            raise PushUnauthenticated("token has no email")
        audience = payload.get("aud")
        if audience != self._audience:
            raise PushForbidden("token is for another audience")
        if (
            self._service_account is not None
            and email.casefold() != self._service_account.casefold()
        ):
            raise PushForbidden("token is from another service account")
        subject = payload.get("sub")
        return PushClaims(
            email=email,
            audience=audience,
            issuer=str(issuer),
            subject=subject if isinstance(subject, str) else None,
            issued_at=datetime.fromtimestamp(payload["iat"], tz=UTC),
            expires_at=datetime.fromtimestamp(payload["exp"], tz=UTC),
        )

    async def _certs_for(self, kid: str | None) -> Mapping[str, str]:
        if self._clock() >= self._fresh_until:
            async with self._lock:
                if self._clock() >= self._fresh_until:  # another task may have fetched
                    await self._fetch()
        if kid is not None and kid not in self._certs and self._may_refetch():
            async with self._lock:
                if kid not in self._certs and self._may_refetch():
                    logger.info("google.push_certs.unknown_kid_refetch", extra={"kid": kid})
                    await self._fetch()
        return self._certs

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._min_refetch

    async def _fetch(self) -> None:
        try:
            response = await request(self._http, "GET", self._certs_url)
            document = json_object(response)
        except GoogleError as exc:
            raise Unavailable(f"cannot fetch push signing certs: {exc}", status=exc.status) from exc
        if "keys" in document:
            raise Unavailable("certs_url serves a JWKS; configure the v1 PEM map endpoint")
        certs = {k: v for k, v in document.items() if isinstance(k, str) and isinstance(v, str)}
        if not certs:
            raise Unavailable("certs_url served no certificates")
        now = self._clock()
        self._certs = certs
        self._fetched_at = now
        self._fresh_until = now + self._ttl(response)

    def _ttl(self, response: httpx.Response) -> float:
        cache_control = response.headers.get("cache-control", "")
        if _NO_CACHE.search(cache_control):
            return 0.0
        match = _MAX_AGE.search(cache_control)
        if match is None:
            return self._default_ttl
        age = response.headers.get("age", "").strip()
        return max(0.0, float(match.group(1)) - (float(age) if age.isdigit() else 0.0))


def _bearer_token(authorization_header: str | None) -> str:
    if not authorization_header:
        raise PushUnauthenticated("missing bearer token")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise PushUnauthenticated("authorization is not a bearer token")
    return token


def _describe_decode_failure(exc: Exception) -> str:
    # google-auth's messages can quote the token, so only fixed texts leave here.
    text = str(exc)
    if text.startswith("Token expired"):
        return "token expired"
    if text.startswith("Token used too early"):
        return "token issued in the future"
    if "does not contain required claim" in text:
        return "token lacks iat or exp"
    return "bad token signature or format"

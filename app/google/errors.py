"""The errors of the Google adapter, and the one place where a response becomes one.

Outbound calls (Gmail API, OAuth token and revoke endpoints, the certs endpoint)::

    GoogleError                    status, reason, message, retryable
    ├── BadRequest                 400 (badRequest, invalidArgument, failedPrecondition ...)
    │                              and any other 4xx not listed here; never retry unchanged
    ├── Unauthorized               401: the access token is expired, revoked or missing;
    │                              refresh it once and retry once
    ├── Forbidden                  403 that is not a rate limit (domainPolicy, forbidden)
    │   └── InsufficientScope      403 insufficientPermissions: the grant lacks a scope
    ├── NotFound                   404: unknown or deleted message; a history.list
    │                              startHistoryId too old (run a full sync)
    ├── RateLimited                429, or 403/429 with a rate-limit reason; ``retry_at``
    │                              when Google said when (Retry-After or message text)
    ├── Unavailable                500/502/503/504/408, token-endpoint server_error ...
    │   └── TransportFailure       no HTTP answer at all: connect error, timeout, reset
    ├── MalformedResponse          a 2xx whose body is not the documented shape
    ├── InvalidGrant               token endpoint invalid_grant (revoked, expired, password
    │                              changed, invalid_rapt): permanent, needs a new consent
    └── TokenEndpointError         any other refusal by the token or revoke endpoint
                                   (invalid_client, invalid_scope, unauthorized_client ...)

Inbound Pub/Sub pushes (what the webhook answers is in brackets)::

    PushRejected                   the request is not a genuine push for us
    ├── PushUnauthenticated        [401] no/garbled bearer token, bad signature, unknown
    │                              key, expired, issued in the future, wrong issuer,
    │                              email not verified
    └── PushForbidden              [403] a genuine Google token for another audience or
                                   another service account
    UndecodablePush(ValueError)    [204, acknowledged] the body is not a Gmail notification

Status codes alone are not enough to classify Google's errors: rate limits come as 403
or 429 and are told apart by ``error.errors[0].reason`` (GOOGLE.md §3.2), and the token
endpoint speaks its own ``{"error": "<code>", "error_description"}`` dialect (§1.4).
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

__all__ = [
    "BadRequest",
    "Forbidden",
    "GoogleError",
    "InsufficientScope",
    "InvalidGrant",
    "MalformedResponse",
    "NotFound",
    "PushForbidden",
    "PushRejected",
    "PushUnauthenticated",
    "RateLimited",
    "TokenEndpointError",
    "TransportFailure",
    "Unauthorized",
    "Unavailable",
    "UndecodablePush",
]

# Legacy `errors[].reason` values that mean "slow down", whatever the status code.
RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded", "quotaExceeded"}
)
# OAuth `error` codes that google-auth (and RFC 6749 §4.1.2.1) treat as transient.
_TRANSIENT_OAUTH_ERRORS = frozenset({"server_error", "temporarily_unavailable", "internal_failure"})
_RETRY_AFTER_TEXT = re.compile(
    r"retry after\s+(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)",
    re.IGNORECASE,
)
_MAX_MESSAGE = 500


class GoogleError(Exception):
    """A call to Google failed.

    ``status`` is the HTTP status (``None`` when no response arrived), ``reason`` the
    machine-readable code Google gave (``errors[0].reason`` for REST APIs, the OAuth
    ``error`` for the token endpoint), ``message`` the human text.
    """

    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later without any change."""
        return self.default_retryable

    def __str__(self) -> str:
        parts = [str(self.status)] if self.status is not None else []
        if self.reason:
            parts.append(self.reason)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )

    @classmethod
    def from_response(
        cls, response: httpx.Response, *, token_endpoint: bool = False
    ) -> GoogleError:
        """Classify a non-2xx response (the only status → exception mapping we have).

        With ``token_endpoint=True`` every refusal that is neither transient nor
        ``invalid_grant`` becomes :class:`TokenEndpointError`, whatever its shape.
        """
        body = _ErrorBody.parse(response)
        status = response.status_code
        if body.oauth_error is not None:
            return _from_oauth_error(response, body, body.oauth_error)

        if (
            body.reason in RATE_LIMIT_REASONS
            or status == 429
            or body.status_name == "RESOURCE_EXHAUSTED"
        ):
            return RateLimited(
                body.message,
                status=status,
                reason=body.reason,
                retry_at=retry_at_from(response, body.all_text),
            )
        if status == 408 or status >= 500:
            return Unavailable(body.message, status=status, reason=body.reason)
        if token_endpoint:
            return TokenEndpointError(body.message, status=status, reason=body.reason)
        if status == 401:
            return Unauthorized(body.message, status=status, reason=body.reason)
        if status == 403:
            if (
                body.reason == "insufficientPermissions"
                or "ACCESS_TOKEN_SCOPE_INSUFFICIENT" in body.detail_reasons
            ):
                return InsufficientScope(body.message, status=status, reason=body.reason)
            return Forbidden(body.message, status=status, reason=body.reason)
        if status == 404:
            return NotFound(body.message, status=status, reason=body.reason)
        if 400 <= status < 500:
            return BadRequest(body.message, status=status, reason=body.reason)
        # 1xx/3xx: httpx follows no redirects for us and Google sends none on these APIs.
        return GoogleError(body.message, status=status, reason=body.reason)


class BadRequest(GoogleError):
    """400 and other unlisted 4xx: the request itself is wrong (or the account has no Gmail)."""


class Unauthorized(GoogleError):
    """401: the access token is expired, revoked or missing."""


class Forbidden(GoogleError):
    """403 that is not a rate limit: an admin policy, a Pub/Sub permission, ..."""


class InsufficientScope(Forbidden):
    """403 insufficientPermissions: the token lacks a scope this method needs."""


class NotFound(GoogleError):
    """404: the entity does not exist (or the history cursor is too old)."""


class RateLimited(GoogleError):
    """Quota or rate limit hit; ``retry_at`` (aware UTC) when Google said when."""

    default_retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        retry_at: datetime | None = None,
    ):
        super().__init__(message, status=status, reason=reason)
        self.retry_at = retry_at


class Unavailable(GoogleError):
    """A transient failure on Google's side: retry with backoff."""

    default_retryable = True


class TransportFailure(Unavailable):
    """No HTTP response at all (DNS, connect, TLS, timeout, reset)."""


class MalformedResponse(GoogleError):
    """A success status with a body that is not what the API documents."""


class InvalidGrant(GoogleError):
    """The token endpoint answered ``invalid_grant``: the grant is gone for good.

    Covers revoked, expired and idle refresh tokens, password changes, redeemed or
    garbled authorization codes and Workspace reauthentication (``subtype`` is then
    ``invalid_rapt`` or ``rapt_required``). Only a new consent helps.
    """

    def __init__(
        self,
        description: str,
        *,
        status: int | None = 400,
        subtype: str | None = None,
    ):
        super().__init__(description, status=status, reason="invalid_grant")
        self.description = description
        self.subtype = subtype


class TokenEndpointError(GoogleError):
    """The token or revoke endpoint refused for a reason other than invalid_grant.

    Usually configuration (``invalid_client``, ``unauthorized_client``, ``invalid_scope``):
    retrying does not help.
    """


class PushRejected(Exception):
    """An inbound Pub/Sub push that must not be trusted."""

    status_code: ClassVar[int] = 401


class PushUnauthenticated(PushRejected):
    """No usable proof that Google sent the push (answer 401)."""

    status_code = 401


class PushForbidden(PushRejected):
    """A genuine Google token that is not meant for us (answer 403)."""

    status_code = 403


class UndecodablePush(ValueError):
    """The push body is not a Gmail notification; acknowledge it, never retry."""


@dataclass(frozen=True, slots=True)
class _ErrorBody:
    message: str
    reason: str | None = None
    status_name: str | None = None
    detail_reasons: frozenset[str] = frozenset()
    all_text: str = ""
    oauth_error: str | None = None
    oauth_subtype: str | None = None

    @classmethod
    def parse(cls, response: httpx.Response) -> _ErrorBody:
        fallback = response.reason_phrase or f"HTTP {response.status_code}"
        try:
            data: Any = response.json()
        except ValueError:  # also UnicodeDecodeError: HTML error pages, empty bodies
            text = _clip(response.text.strip()) if response.content else ""
            return cls(message=text or fallback, all_text=text)
        if not isinstance(data, dict):
            return cls(message=fallback)

        error = data.get("error")
        if isinstance(error, str):
            description = _opt_str(data.get("error_description"))
            return cls(
                message=_clip(description or error),
                reason=error,
                all_text=description or "",
                oauth_error=error,
                oauth_subtype=_opt_str(data.get("error_subtype")),
            )
        if not isinstance(error, dict):
            return cls(message=fallback)

        texts: list[str] = []
        message = _opt_str(error.get("message"))
        if message:
            texts.append(message)
        reason: str | None = None
        errors = error.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if not isinstance(item, dict):
                    continue
                reason = reason or _opt_str(item.get("reason"))
                item_message = _opt_str(item.get("message"))
                if item_message:
                    texts.append(item_message)
        detail_reasons: set[str] = set()
        details = error.get("details")
        if isinstance(details, list):
            for item in details:
                if isinstance(item, dict) and (detail := _opt_str(item.get("reason"))):
                    detail_reasons.add(detail)
        return cls(
            message=_clip(message or (texts[0] if texts else fallback)),
            reason=reason,
            status_name=_opt_str(error.get("status")),
            detail_reasons=frozenset(detail_reasons),
            all_text="\n".join(texts),
        )


def _from_oauth_error(response: httpx.Response, body: _ErrorBody, error: str) -> GoogleError:
    status = response.status_code
    if error == "invalid_grant":
        return InvalidGrant(body.message, status=status, subtype=body.oauth_subtype)
    if status == 429:
        return RateLimited(
            body.message, status=status, reason=error, retry_at=retry_at_from(response, "")
        )
    if status == 408 or status >= 500 or error in _TRANSIENT_OAUTH_ERRORS:
        return Unavailable(body.message, status=status, reason=error)
    return TokenEndpointError(body.message, status=status, reason=error)


def retry_at_from(
    response: httpx.Response, text: str, *, now: datetime | None = None
) -> datetime | None:
    """When Google says to retry: ``Retry-After`` (seconds or HTTP-date), else the
    ``Retry after <RFC 3339>`` that Gmail writes into rate-limit messages."""
    now = now or datetime.now(UTC)
    header = response.headers.get("retry-after", "").strip()
    if header.isdigit():
        return now + timedelta(seconds=int(header))
    if header:
        try:
            parsed = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            return _as_utc(parsed)
    match = _RETRY_AFTER_TEXT.search(text)
    if match:
        try:
            return _as_utc(datetime.fromisoformat(match.group(1)))
        except ValueError:
            return None
    return None


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"

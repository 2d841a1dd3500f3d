"""Switchable faults: "fail the next N calls of X with Y", and the optional per-user quota."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox import errors
from sandbox.calls import QUOTA_UNITS
from sandbox.clock import Clock, rfc3339
from sandbox.errors import GoogleApiError, OAuthError

TOKEN_METHOD = "oauth.token"

GMAIL_FAULTS = {
    "rate_limit",
    "user_rate_limit",
    "concurrent",
    "sending_limit",
    "backend_error",
    "unavailable",
    "unauthorized",
    "not_found",
    "delete_before_get",
    "history_lag",
    "failed_precondition",
    "error",
}
TOKEN_FAULTS = {"server_error", "unavailable", "rate_limit", "invalid_grant", "invalid_client"}


@dataclass
class Fault:
    """One rule; `method` is a Gmail method id ("gmail.users.messages.get"), "*" for any Gmail
    method, or "oauth.token". `account` narrows it to one mailbox."""

    id: int
    method: str
    kind: str
    remaining: int
    account: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "kind": self.kind,
            "remaining": self.remaining,
            "account": self.account,
            "params": self.params,
        }


class FaultBook:
    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._next_id = 1

    def add(
        self,
        method: str,
        kind: str,
        count: int,
        account: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Fault:
        allowed = TOKEN_FAULTS if method == TOKEN_METHOD else GMAIL_FAULTS
        if kind not in allowed:
            raise ValueError(f"unknown fault kind {kind!r} for {method}; one of {sorted(allowed)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(self._next_id, method, kind, count, account, dict(params or {}))
        self._next_id += 1
        self.faults.append(fault)
        return fault

    def take(self, method: str, account: str | None, kinds: set[str] | None = None) -> Fault | None:
        """Consume one shot of the first rule that matches, if any."""
        for fault in self.faults:
            if fault.method not in (method, "*") or (
                fault.method == "*" and method == TOKEN_METHOD
            ):
                continue
            if fault.account is not None and fault.account != account:
                continue
            if kinds is not None and fault.kind not in kinds:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
            return fault
        return None

    def clear(self) -> None:
        self.faults.clear()


def gmail_error(fault: Fault, clock: Clock, retry_after_header: bool) -> GoogleApiError:
    """The error a Gmail-side fault answers with (the kinds that need no mailbox access)."""
    params = fault.params
    header_wanted = bool(params.get("retry_after_header", retry_after_header))
    if fault.kind in ("rate_limit", "user_rate_limit", "sending_limit"):
        seconds = int(params.get("retry_after", 5))
        until = rfc3339(clock.now() + seconds)
        default_status = 429 if fault.kind == "sending_limit" else 403
        status = int(params.get("status", default_status))
        suffix = " (Mail sending)" if fault.kind == "sending_limit" else ""
        reason = "userRateLimitExceeded" if fault.kind == "user_rate_limit" else "rateLimitExceeded"
        return errors.rate_limited(
            status,
            f"User-rate limit exceeded.  Retry after {until}{suffix}",
            reason,
            retry_after=seconds if header_wanted else None,
        )
    if fault.kind == "concurrent":
        return errors.rate_limited(
            429, "Too many concurrent requests for user", "rateLimitExceeded"
        )
    if fault.kind == "backend_error":
        return errors.backend_error()
    if fault.kind == "unavailable":
        return errors.unavailable()
    if fault.kind == "unauthorized":
        return errors.unauthenticated(fault.method if fault.method != "*" else None)
    if fault.kind == "not_found":
        return errors.not_found()
    if fault.kind == "failed_precondition":
        return errors.failed_precondition(str(params.get("message", "Precondition check failed.")))
    status = int(params.get("status", 500))
    return GoogleApiError(
        status,
        str(params.get("message", "Backend Error")),
        str(params.get("reason", "backendError")),
        headers={str(k): str(v) for k, v in dict(params.get("headers", {})).items()},
    )


def token_error(fault: Fault) -> OAuthError:
    params = fault.params
    if fault.kind == "server_error":
        return OAuthError(500, "internal_failure", str(params.get("description", "Backend Error")))
    if fault.kind == "unavailable":
        return OAuthError(503, "temporarily_unavailable", "The service is currently unavailable.")
    if fault.kind == "rate_limit":
        seconds = params.get("retry_after")
        headers = {"Retry-After": str(int(seconds))} if seconds is not None else None
        return OAuthError(429, "rate_limit_exceeded", "Rate limit exceeded.", headers=headers)
    if fault.kind == "invalid_client":
        return OAuthError(401, "invalid_client", str(params.get("description", "Unauthorized")))
    subtype = params.get("subtype")
    default = (
        "reauth related error (invalid_rapt)" if subtype else "Token has been expired or revoked."
    )
    return OAuthError(
        400,
        "invalid_grant",
        str(params.get("description", default)),
        subtype=str(subtype) if subtype else None,
    )


@dataclass
class _Bucket:
    tokens: float
    updated: float
    limited_until: float = 0.0


class UserQuota:
    """A per-user token bucket in quota units on the sandbox clock (off when the limit is 0)."""

    def __init__(self, clock: Clock, per_minute: int, status: int, header: bool) -> None:
        self._clock = clock
        self.per_minute = per_minute
        self.status = status
        self.header = header
        self._buckets: dict[str, _Bucket] = {}

    def reset(self) -> None:
        self._buckets.clear()

    def charge(self, account: str, method: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._clock.now()
        bucket = self._buckets.setdefault(account, _Bucket(float(self.per_minute), now))
        rate = self.per_minute / 60.0
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        cost = QUOTA_UNITS.get(method, 1)
        if now < bucket.limited_until:
            # Calling early pushes the window further out, as Gmail does.
            bucket.limited_until += 1.0
            raise self._error(bucket.limited_until)
        if bucket.tokens < cost:
            bucket.limited_until = now + max(1.0, (cost - bucket.tokens) / rate)
            raise self._error(bucket.limited_until)
        bucket.tokens -= cost

    def _error(self, until: float) -> GoogleApiError:
        wait = max(1, int(until - self._clock.now() + 0.999))
        return errors.rate_limited(
            self.status,
            f"User-rate limit exceeded.  Retry after {rfc3339(until)}",
            "rateLimitExceeded",
            retry_after=wait if self.header else None,
        )

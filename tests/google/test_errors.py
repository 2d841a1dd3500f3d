"""The status → exception table (GOOGLE.md §3.1-§3.2) through the one request() function."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.google.errors import (
    BadRequest,
    Forbidden,
    GoogleError,
    InsufficientScope,
    InvalidGrant,
    NotFound,
    RateLimited,
    TokenEndpointError,
    TransportFailure,
    Unauthorized,
    Unavailable,
)
from app.google.http import request

URL = "https://gmail.test/gmail/v1/users/me/profile"


def envelope(code: int, message: str, reason: str | None, status: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if reason is not None:
        error["errors"] = [{"message": message, "domain": "global", "reason": reason}]
    if status is not None:
        error["status"] = status
    return {"error": error}


async def call(
    status: int, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> GoogleError:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers or {})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(GoogleError) as caught:
            await request(client, "GET", URL, access_token="ya29.t")
    return caught.value


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason", "retryable"),
    [
        (
            401,
            envelope(401, "Request had invalid authentication credentials.", "authError", None),
            Unauthorized,
            "authError",
            False,
        ),
        (
            403,
            envelope(
                403,
                "Request had insufficient authentication scopes.",
                "insufficientPermissions",
                "PERMISSION_DENIED",
            ),
            InsufficientScope,
            "insufficientPermissions",
            False,
        ),
        (
            403,
            envelope(
                403,
                "The domain administrators have disabled Gmail apps.",
                "domainPolicy",
                "PERMISSION_DENIED",
            ),
            Forbidden,
            "domainPolicy",
            False,
        ),
        (
            403,
            envelope(403, "Daily Limit Exceeded", "dailyLimitExceeded", None),
            RateLimited,
            "dailyLimitExceeded",
            True,
        ),
        (
            403,
            envelope(403, "User Rate Limit Exceeded", "userRateLimitExceeded", None),
            RateLimited,
            "userRateLimitExceeded",
            True,
        ),
        (
            429,
            envelope(
                429,
                "Too many concurrent requests for user",
                "rateLimitExceeded",
                "RESOURCE_EXHAUSTED",
            ),
            RateLimited,
            "rateLimitExceeded",
            True,
        ),
        (
            429,
            envelope(429, "Quota exceeded for quota metric 'Queries'", None, "RESOURCE_EXHAUSTED"),
            RateLimited,
            None,
            True,
        ),
        (
            404,
            envelope(404, "Requested entity was not found.", "notFound", "NOT_FOUND"),
            NotFound,
            "notFound",
            False,
        ),
        (
            500,
            envelope(500, "Backend Error", "backendError", "INTERNAL"),
            Unavailable,
            "backendError",
            True,
        ),
        (502, b"<html>Bad Gateway</html>", Unavailable, None, True),
        (
            503,
            envelope(503, "The service is currently unavailable.", "backendError", "UNAVAILABLE"),
            Unavailable,
            "backendError",
            True,
        ),
        (504, b"", Unavailable, None, True),
        (
            400,
            envelope(
                400, "Precondition check failed.", "failedPrecondition", "FAILED_PRECONDITION"
            ),
            BadRequest,
            "failedPrecondition",
            False,
        ),
        (
            400,
            envelope(400, "Invalid id value", "invalidArgument", "INVALID_ARGUMENT"),
            BadRequest,
            "invalidArgument",
            False,
        ),
        (409, envelope(409, "Conflict", None, None), BadRequest, None, False),
    ],
)
async def test_status_and_reason_map_to_one_exception_each(
    status: int,
    body: bytes | dict[str, Any],
    expected: type[GoogleError],
    reason: str | None,
    retryable: bool,
) -> None:
    error = await call(status, body)
    assert type(error) is expected
    assert error.status == status
    assert error.reason == reason
    assert error.retryable is retryable


async def test_the_message_comes_from_the_envelope() -> None:
    error = await call(404, envelope(404, "Requested entity was not found.", "notFound", None))
    assert error.message == "Requested entity was not found."
    assert "404" in str(error) and "notFound" in str(error)


async def test_rate_limit_text_gives_retry_at_when_no_header() -> None:
    message = "User-rate limit exceeded.  Retry after 2026-09-16T03:57:19.386Z"
    error = await call(403, envelope(403, message, "rateLimitExceeded", "PERMISSION_DENIED"))
    assert isinstance(error, RateLimited)
    assert error.retry_at == datetime(2026, 9, 16, 3, 57, 19, 386000, tzinfo=UTC)


async def test_retry_after_text_is_also_read_from_the_errors_list() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Too Many Requests",
            "errors": [
                {
                    "reason": "rateLimitExceeded",
                    "message": "User-rate limit exceeded.  Retry after 2026-01-02T03:04:05Z "
                    "(Mail sending)",
                }
            ],
        }
    }
    error = await call(429, body)
    assert isinstance(error, RateLimited)
    assert error.retry_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_retry_after_header_in_seconds() -> None:
    before = datetime.now(UTC)
    error = await call(
        429, envelope(429, "Rate Limit Exceeded", "rateLimitExceeded", None), {"Retry-After": "120"}
    )
    assert isinstance(error, RateLimited)
    assert error.retry_at is not None
    assert before + timedelta(seconds=120) <= error.retry_at
    assert error.retry_at <= datetime.now(UTC) + timedelta(seconds=120)


async def test_retry_after_header_as_http_date_beats_the_text() -> None:
    message = "User-rate limit exceeded.  Retry after 2026-09-16T03:57:19.386Z"
    error = await call(
        429,
        envelope(429, message, "userRateLimitExceeded", None),
        {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"},
    )
    assert isinstance(error, RateLimited)
    assert error.retry_at == datetime(2026, 10, 21, 7, 28, tzinfo=UTC)


async def test_rate_limit_without_any_time_has_no_retry_at() -> None:
    error = await call(429, envelope(429, "Rate Limit Exceeded", "rateLimitExceeded", None))
    assert isinstance(error, RateLimited)
    assert error.retry_at is None


async def test_garbage_retry_after_falls_back_to_none() -> None:
    error = await call(429, b"slow down", {"Retry-After": "soon"})
    assert isinstance(error, RateLimited)
    assert error.retry_at is None
    assert error.message == "slow down"


@pytest.mark.parametrize(
    "body",
    [
        {"error": {}},
        {"error": {"code": 404}},
        {"error": {"message": "gone", "errors": "not-a-list"}},
        {"error": {"errors": [None, 3, {"message": "x"}]}},
        {"unexpected": True},
        [1, 2, 3],
        b"not json at all",
        b"",
        b"\xff\xfe\x00",
    ],
)
async def test_envelope_with_missing_or_odd_fields_still_classifies_by_status(
    body: bytes | dict[str, Any] | list[int],
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    error = await call(404, content)
    assert isinstance(error, NotFound)
    assert error.message  # never empty: falls back to the reason phrase


async def test_html_error_page_becomes_the_message() -> None:
    error = await call(503, b"<html><body>Service Unavailable</body></html>")
    assert isinstance(error, Unavailable)
    assert "Service Unavailable" in error.message


async def test_network_error_is_a_transport_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportFailure) as caught:
            await request(client, "GET", URL + "?access_token=secret")
    assert isinstance(caught.value, Unavailable)
    assert caught.value.retryable is True
    assert caught.value.status is None
    assert "secret" not in str(caught.value)


async def test_timeout_is_a_transport_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TransportFailure):
            await request(client, "GET", URL)


async def test_request_sends_bearer_token_and_returns_2xx() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"ok": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await request(
            client, "GET", URL, access_token="ya29.abc", params=[("a", "1"), ("a", "2")]
        )
    assert response.json() == {"ok": True}
    assert seen[0].headers["Authorization"] == "Bearer ya29.abc"
    assert seen[0].url.params.get_list("a") == ["1", "2"]


def oauth_error(status: int, error: str, description: str, **extra: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "error_description": description, **extra})


@pytest.mark.parametrize(
    ("response", "expected", "reason"),
    [
        (
            oauth_error(400, "invalid_grant", "Token has been expired or revoked."),
            InvalidGrant,
            "invalid_grant",
        ),
        (
            oauth_error(401, "invalid_client", "The OAuth client was not found."),
            TokenEndpointError,
            "invalid_client",
        ),
        (oauth_error(400, "invalid_scope", "bad scope"), TokenEndpointError, "invalid_scope"),
        (
            oauth_error(400, "temporarily_unavailable", "try later"),
            Unavailable,
            "temporarily_unavailable",
        ),
        (oauth_error(503, "server_error", "oops"), Unavailable, "server_error"),
        (httpx.Response(503, content=b"<html>down</html>"), Unavailable, None),
        (httpx.Response(400, content=b"<html>bad</html>"), TokenEndpointError, None),
        (
            httpx.Response(401, json={"error": {"code": 401, "message": "no"}}),
            TokenEndpointError,
            None,
        ),
    ],
)
def test_token_endpoint_dialect(
    response: httpx.Response, expected: type[GoogleError], reason: str | None
) -> None:
    error = GoogleError.from_response(response, token_endpoint=True)
    assert type(error) is expected
    assert error.reason == reason


def test_invalid_grant_keeps_description_and_subtype() -> None:
    error = GoogleError.from_response(
        oauth_error(
            400,
            "invalid_grant",
            "reauth related error (invalid_rapt)",
            error_subtype="invalid_rapt",
        ),
        token_endpoint=True,
    )
    assert isinstance(error, InvalidGrant)
    assert error.description == "reauth related error (invalid_rapt)"
    assert error.subtype == "invalid_rapt"
    assert error.retryable is False

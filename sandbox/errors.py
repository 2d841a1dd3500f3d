"""Google's error envelopes: the Gmail REST one (§3.1) and the OAuth token endpoint one (§1.4)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

_UNAUTHENTICATED_TEXT = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_MISSING_TEXT = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class GoogleApiError(Exception):
    """A Gmail API failure rendered as Google's `{"error": {...}}` envelope."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        *,
        status: str | None = None,
        domain: str = "global",
        error_message: str | None = None,
        location: str | None = None,
        location_type: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")
        self.domain = domain
        self.error_message = error_message or message
        self.location = location
        self.location_type = location_type
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "message": self.error_message,
            "domain": self.domain,
            "reason": self.reason,
        }
        if self.location:
            item["location"] = self.location
        if self.location_type:
            item["locationType"] = self.location_type
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "errors": [item],
            "status": self.status,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.code, headers=self.headers)


def _error_info(reason: str, method: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "gmail.googleapis.com"},
    }
    if method:
        info["metadata"]["method"] = method
    return info


def not_found() -> GoogleApiError:
    return GoogleApiError(404, "Requested entity was not found.", "notFound")


def invalid_argument(message: str) -> GoogleApiError:
    return GoogleApiError(400, message, "invalidArgument")


def bad_request(message: str) -> GoogleApiError:
    return GoogleApiError(400, message, "badRequest")


def unauthenticated(method: str | None) -> GoogleApiError:
    return GoogleApiError(
        401,
        _UNAUTHENTICATED_TEXT,
        "authError",
        error_message="Invalid Credentials",
        location="Authorization",
        location_type="header",
        details=[_error_info("ACCESS_TOKEN_EXPIRED", method)],
        headers={
            "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
        },
    )


def credentials_missing(method: str | None) -> GoogleApiError:
    return GoogleApiError(
        401,
        _MISSING_TEXT,
        "required",
        error_message="Login Required.",
        location="Authorization",
        location_type="header",
        details=[_error_info("CREDENTIALS_MISSING", method)],
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


def insufficient_scopes(method: str | None, message: str | None = None) -> GoogleApiError:
    return GoogleApiError(
        403,
        message or "Request had insufficient authentication scopes.",
        "insufficientPermissions",
        error_message="Insufficient Permission",
        details=[_error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", method)],
    )


def delegation_denied(email: str) -> GoogleApiError:
    return GoogleApiError(403, f"Delegation denied for {email}", "forbidden")


def rate_limited(
    code: int, message: str, reason: str, *, retry_after: int | None = None
) -> GoogleApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return GoogleApiError(code, message, reason, domain="usageLimits", headers=headers)


def backend_error() -> GoogleApiError:
    return GoogleApiError(500, "Backend Error", "backendError", status="INTERNAL")


def unavailable() -> GoogleApiError:
    return GoogleApiError(
        503, "The service is currently unavailable.", "backendError", status="UNAVAILABLE"
    )


def failed_precondition(message: str = "Precondition check failed.") -> GoogleApiError:
    return GoogleApiError(400, message, "failedPrecondition", status="FAILED_PRECONDITION")


class OAuthError(Exception):
    """A token or revoke endpoint failure: `{"error", "error_description"}`."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str | None = None,
        *,
        subtype: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.subtype = subtype
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.error}
        if self.description is not None:
            body["error_description"] = self.description
        if self.subtype is not None:
            body["error_subtype"] = self.subtype
        return JSONResponse(body, status_code=self.status, headers=self.headers)

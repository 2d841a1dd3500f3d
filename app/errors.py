"""The service's error tree and its rendering as RFC 9457 problem+json.

AppError                      any error we raise on purpose; carries its HTTP status
├── Unauthenticated            401: no, malformed or badly signed bearer token
├── Forbidden                  403
├── NotFound                   404: unknown id, or another organization's resource
├── Conflict                   409: e.g. an Idempotency-Key reused with another body
├── InvalidInput               422: a request that is well-formed JSON but makes no sense
├── BadGateway                 502: Google or the SMTP relay failed the work
└── ServiceUnavailable         503: the database (or another dependency) is down

Everything else that escapes a route becomes a bare 500 problem without internals.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("leadmail.errors")


class AppError(Exception):
    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class Unauthenticated(AppError):
    status = 401
    title = "Unauthorized"


class Forbidden(AppError):
    status = 403
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    title = "Not Found"


class Conflict(AppError):
    status = 409
    title = "Conflict"


class InvalidInput(AppError):
    status = 422
    title = "Unprocessable Content"


class BadGateway(AppError):
    status = 502
    title = "Bad Gateway"


class ServiceUnavailable(AppError):
    status = 503
    title = "Service Unavailable"


def problem(status: int, detail: str, *, title: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: documents its problem+json answers in OpenAPI."""
    return {
        status: {"description": HTTPStatus(status).phrase, "content": {PROBLEM_JSON: {}}}
        for status in statuses
    }


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem(exc.status, exc.detail, title=exc.title, **exc.extra)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # The contract keeps FastAPI's list of errors as "detail" inside the problem body.
    errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
    return JSONResponse(
        {"type": "about:blank", "title": "Unprocessable Content", "status": 422, "detail": errors},
        status_code=422,
        media_type=PROBLEM_JSON,
    )


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    logger.error("db.unavailable", extra={"error": type(exc).__name__})
    return problem(503, "the database is unavailable; retry later")


async def _unhandled(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("request.unhandled_error", exc_info=exc)
    return problem(500, "an unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unhandled)

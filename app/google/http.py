"""The one way this package talks HTTP to Google.

Every call goes through :func:`request`, which adds the bearer token, turns transport
failures into :class:`~app.google.errors.TransportFailure` and any non-2xx answer into
the matching :class:`~app.google.errors.GoogleError` (via
:meth:`GoogleError.from_response`, the single classification point).
"""

from __future__ import annotations

import json as jsonlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from app.google.errors import GoogleError, MalformedResponse, TransportFailure
from app.google.wire import JsonObject

__all__ = ["CallHook", "json_object", "raise_for_google_error", "report_call", "request"]

logger = logging.getLogger(__name__)

CallHook = Callable[[str, int, float], None]
"""``hook(method, status, seconds)`` after every call; ``status`` is 0 when no response
arrived. Method names are Google's (``messages.send``, ``history.list``, ``token.refresh``)."""

QueryParams = Sequence[tuple[str, str]]


def raise_for_google_error(response: httpx.Response, *, token_endpoint: bool = False) -> None:
    """Raise the matching :class:`GoogleError` unless the response is a 2xx."""
    if not response.is_success:
        raise GoogleError.from_response(response, token_endpoint=token_endpoint)


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    params: QueryParams | None = None,
    json: JsonObject | None = None,
    form: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    token_endpoint: bool = False,
) -> httpx.Response:
    """Send one request; return the 2xx response or raise a :class:`GoogleError`."""
    request_headers = dict(headers or {})
    if access_token is not None:
        request_headers["Authorization"] = f"Bearer {access_token}"
    try:
        response = await client.request(
            method,
            url,
            params=list(params) if params is not None else None,
            json=json,
            data=form,
            content=content,
            headers=request_headers,
        )
    except httpx.RequestError as exc:
        # The URL may carry a query; the path is enough to tell what failed.
        where = url.split("?", 1)[0]
        raise TransportFailure(f"{method} {where}: {type(exc).__name__}: {exc}") from exc
    raise_for_google_error(response, token_endpoint=token_endpoint)
    return response


def json_object(response: httpx.Response) -> JsonObject:
    """The body of a successful response as a JSON object, or :class:`MalformedResponse`."""
    try:
        data: Any = jsonlib.loads(response.content)
    except ValueError as exc:
        raise MalformedResponse("response body is not JSON", status=response.status_code) from exc
    if not isinstance(data, dict):
        raise MalformedResponse("response body is not a JSON object", status=response.status_code)
    return data


def report_call(hook: CallHook | None, method: str, status: int, seconds: float) -> None:
    """Feed the metrics hook; a broken hook must never break a Gmail call."""
    if hook is None:
        return
    try:
        hook(method, status, seconds)
    except Exception:
        logger.exception("google.call_hook_failed", extra={"google_method": method})

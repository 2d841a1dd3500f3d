"""Gmail API v1 over httpx, returning our own immutable types.

``GmailClient`` holds the shared ``httpx.AsyncClient``, the base URL and the metrics
hook; ``client.for_token(access_token)`` gives a :class:`GmailSession` whose methods
are the Gmail calls the service makes, all on ``users/me``. Wire facts: GOOGLE.md §2.
"""

from __future__ import annotations

import json as jsonlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar
from urllib.parse import quote

import httpx

from app.google.errors import GoogleError, MalformedResponse
from app.google.http import CallHook, QueryParams, json_object, report_call, request
from app.google.wire import (
    JsonObject,
    WireFormatError,
    as_object,
    b64decode_lenient,
    b64url_encode,
    ms_to_datetime,
    object_tuple,
    opt_int,
    opt_str,
    req_int,
    req_str,
    str_tuple,
)

__all__ = [
    "DEFAULT_UPLOAD_THRESHOLD",
    "GmailClient",
    "GmailMessage",
    "GmailSession",
    "GmailThread",
    "Header",
    "HistoryPage",
    "HistoryRecord",
    "HistoryType",
    "LabelChange",
    "MessageFormat",
    "MessagePart",
    "MessageRef",
    "MessageRefPage",
    "PartBody",
    "Profile",
    "SentMessage",
    "ThreadFormat",
    "WatchResult",
]

_T = TypeVar("_T")

MessageFormat = Literal["minimal", "metadata", "raw", "full"]
ThreadFormat = Literal["minimal", "metadata", "full"]
HistoryType = Literal["messageAdded", "messageDeleted", "labelAdded", "labelRemoved"]

# JSON wraps `raw` in base64 (+33 %); above this size the media upload is cheaper and
# stays far below the 35 MiB limit of users.messages.send.
DEFAULT_UPLOAD_THRESHOLD = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Profile:
    email_address: str
    history_id: int
    messages_total: int | None = None
    threads_total: int | None = None


@dataclass(frozen=True, slots=True)
class MessageRef:
    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageRefPage:
    messages: tuple[MessageRef, ...]
    next_page_token: str | None
    result_size_estimate: int | None = None


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class PartBody:
    size: int = 0
    data: bytes | None = None
    attachment_id: str | None = None


@dataclass(frozen=True, slots=True)
class MessagePart:
    part_id: str
    mime_type: str
    filename: str = ""
    headers: tuple[Header, ...] = ()
    body: PartBody = PartBody()
    parts: tuple[MessagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class GmailMessage:
    """One ``users.messages`` resource; which fields are set depends on the format."""

    id: str
    thread_id: str
    label_ids: tuple[str, ...] = ()
    history_id: int | None = None
    internal_date: datetime | None = None
    snippet: str | None = None
    size_estimate: int | None = None
    raw: bytes | None = None
    payload: MessagePart | None = None

    @property
    def headers(self) -> tuple[Header, ...]:
        """Top-level headers (``metadata`` and ``full`` formats)."""
        return self.payload.headers if self.payload is not None else ()

    def header(self, name: str) -> str | None:
        """First value of a header; names match case-insensitively (``Message-Id``)."""
        wanted = name.lower()
        return next((h.value for h in self.headers if h.name.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class GmailThread:
    id: str
    history_id: int | None
    messages: tuple[GmailMessage, ...]  # oldest first, as Gmail returns them


@dataclass(frozen=True, slots=True)
class LabelChange:
    message: MessageRef
    label_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    messages: tuple[MessageRef, ...] = ()
    messages_added: tuple[MessageRef, ...] = ()
    messages_deleted: tuple[MessageRef, ...] = ()
    labels_added: tuple[LabelChange, ...] = ()
    labels_removed: tuple[LabelChange, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryPage:
    records: tuple[HistoryRecord, ...]
    next_page_token: str | None
    history_id: int  # the mailbox's current id; the next cursor once paging is done


@dataclass(frozen=True, slots=True)
class WatchResult:
    history_id: int
    expiration: datetime


class GmailClient:
    """Holds what every Gmail call shares; bind a token with :meth:`for_token`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        on_call: CallHook | None = None,
        upload_threshold: int = DEFAULT_UPLOAD_THRESHOLD,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._on_call = on_call
        self._upload_threshold = upload_threshold

    def for_token(self, access_token: str) -> GmailSession:
        return GmailSession(self, access_token)


class GmailSession:
    """Gmail calls on ``users/me`` made with one access token."""

    def __init__(self, client: GmailClient, access_token: str) -> None:
        self._client = client
        self._access_token = access_token

    async def get_profile(self) -> Profile:
        data = await self._json("getProfile", "GET", "profile")
        return _parse(data, _profile)

    async def send(self, raw: bytes, thread_id: str | None = None) -> SentMessage:
        """Send an RFC 5322 message; Gmail takes recipients from its To/Cc/Bcc headers.

        Always read ``thread_id`` from the result: Gmail starts a new thread when the
        subject or the References do not match the one asked for.
        """
        if len(raw) <= self._client._upload_threshold:
            body: dict[str, str] = {"raw": b64url_encode(raw)}
            if thread_id:
                body["threadId"] = thread_id
            data = await self._json("messages.send", "POST", "messages/send", json=body)
        elif not thread_id:
            data = await self._json(
                "messages.send",
                "POST",
                "messages/send",
                upload=True,
                params=[("uploadType", "media")],
                content=raw,
                headers={"Content-Type": "message/rfc822"},
            )
        else:
            # Only the multipart upload carries metadata (the threadId) next to the media.
            content, content_type = _multipart_related({"threadId": thread_id}, raw)
            data = await self._json(
                "messages.send",
                "POST",
                "messages/send",
                upload=True,
                params=[("uploadType", "multipart")],
                content=content,
                headers={"Content-Type": content_type},
            )
        return _parse(data, _sent_message)

    async def get_message(
        self,
        message_id: str,
        format: MessageFormat = "raw",
        metadata_headers: Sequence[str] = (),
    ) -> GmailMessage:
        params: list[tuple[str, str]] = [("format", format)]
        if format == "metadata":
            params += [("metadataHeaders", name) for name in metadata_headers]
        data = await self._json(
            "messages.get", "GET", f"messages/{_segment(message_id)}", params=params
        )
        return _parse(data, _message)

    async def list_message_ids(
        self,
        q: str | None = None,
        *,
        label_ids: Sequence[str] = (),
        max_results: int = 100,
        page_token: str | None = None,
        include_spam_trash: bool = False,
    ) -> MessageRefPage:
        """One page of ``users.messages.list`` (e.g. ``q="rfc822msgid:<id@host>"``)."""
        params: list[tuple[str, str]] = [("maxResults", str(max_results))]
        if q:
            params.append(("q", q))
        params += [("labelIds", label) for label in label_ids]
        if page_token:
            params.append(("pageToken", page_token))
        if include_spam_trash:
            params.append(("includeSpamTrash", "true"))
        data = await self._json("messages.list", "GET", "messages", params=params)
        return _parse(data, _message_ref_page)

    async def get_thread(
        self,
        thread_id: str,
        format: ThreadFormat = "minimal",
        metadata_headers: Sequence[str] = (),
    ) -> GmailThread:
        params: list[tuple[str, str]] = [("format", format)]
        if format == "metadata":
            params += [("metadataHeaders", name) for name in metadata_headers]
        data = await self._json(
            "threads.get", "GET", f"threads/{_segment(thread_id)}", params=params
        )
        return _parse(data, _thread)

    async def list_history(
        self,
        start_history_id: int,
        *,
        page_token: str | None = None,
        history_types: Sequence[HistoryType] | None = None,
        label_id: str | None = None,
        max_results: int = 500,
    ) -> HistoryPage:
        """One page of changes after ``start_history_id``.

        A 404 (:class:`~app.google.errors.NotFound`) means the cursor is too old: run a
        full sync. Keep paging while ``next_page_token`` is set, even on empty pages.
        """
        params: list[tuple[str, str]] = [
            ("startHistoryId", str(start_history_id)),
            ("maxResults", str(max_results)),
        ]
        params += [("historyTypes", kind) for kind in history_types or ()]
        if label_id:
            params.append(("labelId", label_id))
        if page_token:
            params.append(("pageToken", page_token))
        data = await self._json("history.list", "GET", "history", params=params)
        return _parse(data, _history_page)

    async def iter_history(
        self,
        start_history_id: int,
        *,
        history_types: Sequence[HistoryType] | None = None,
        label_id: str | None = None,
        max_results: int = 500,
    ) -> AsyncIterator[HistoryPage]:
        """Every page after ``start_history_id``; the last page's ``history_id`` is the
        new cursor."""
        page_token: str | None = None
        while True:
            page = await self.list_history(
                start_history_id,
                page_token=page_token,
                history_types=history_types,
                label_id=label_id,
                max_results=max_results,
            )
            yield page
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def watch(
        self,
        topic_name: str,
        label_ids: Sequence[str] | None = None,
        label_filter_behavior: Literal["include", "exclude"] | None = None,
    ) -> WatchResult:
        """Start or renew push notifications to ``topic_name`` (renew at least weekly)."""
        body: dict[str, object] = {"topicName": topic_name}
        if label_ids:
            body["labelIds"] = list(label_ids)
        if label_filter_behavior:
            body["labelFilterBehavior"] = label_filter_behavior
        data = await self._json("watch", "POST", "watch", json=body)
        return _parse(data, _watch_result)

    async def stop(self) -> None:
        await self._send("stop", "POST", "stop", content=b"")

    async def get_attachment(self, message_id: str, attachment_id: str) -> bytes:
        """The decoded bytes of an attachment; ids change on every ``messages.get``."""
        data = await self._json(
            "messages.attachments.get",
            "GET",
            f"messages/{_segment(message_id)}/attachments/{_segment(attachment_id)}",
        )
        return _parse(data, _attachment_data)

    async def _json(
        self,
        method_name: str,
        http_method: str,
        path: str,
        *,
        upload: bool = False,
        params: QueryParams | None = None,
        json: JsonObject | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> JsonObject:
        response = await self._send(
            method_name,
            http_method,
            path,
            upload=upload,
            params=params,
            json=json,
            content=content,
            headers=headers,
        )
        return json_object(response)

    async def _send(
        self,
        method_name: str,
        http_method: str,
        path: str,
        *,
        upload: bool = False,
        params: QueryParams | None = None,
        json: JsonObject | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        client = self._client
        prefix = "/upload/gmail/v1/users/me/" if upload else "/gmail/v1/users/me/"
        started = time.perf_counter()
        status = 0
        try:
            response = await request(
                client._http,
                http_method,
                f"{client._base_url}{prefix}{path}",
                access_token=self._access_token,
                params=params,
                json=json,
                content=content,
                headers=headers,
            )
            status = response.status_code
            return response
        except GoogleError as exc:
            status = exc.status or 0
            raise
        finally:
            report_call(client._on_call, method_name, status, time.perf_counter() - started)


def _segment(value: str) -> str:
    # Ids come from Google or from our database; quoting keeps them one path segment.
    return quote(value, safe="")


def _multipart_related(metadata: JsonObject, raw: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    while boundary.encode() in raw:
        boundary = secrets.token_hex(16)
    delimiter = f"--{boundary}\r\n".encode()
    content = b"".join(
        [
            delimiter,
            b"Content-Type: application/json; charset=UTF-8\r\n\r\n",
            jsonlib.dumps(metadata).encode(),
            b"\r\n",
            delimiter,
            b"Content-Type: message/rfc822\r\n\r\n",
            raw,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return content, f"multipart/related; boundary={boundary}"


def _parse(data: JsonObject, parser: Callable[[JsonObject], _T]) -> _T:
    try:
        return parser(data)
    except WireFormatError as exc:
        raise MalformedResponse(f"unexpected Gmail response: {exc}", status=200) from exc


def _profile(data: JsonObject) -> Profile:
    return Profile(
        email_address=req_str(data, "emailAddress"),
        history_id=req_int(data, "historyId"),
        messages_total=opt_int(data, "messagesTotal"),
        threads_total=opt_int(data, "threadsTotal"),
    )


def _message_ref(data: JsonObject) -> MessageRef:
    return MessageRef(
        id=req_str(data, "id"),
        thread_id=req_str(data, "threadId"),
        label_ids=str_tuple(data, "labelIds"),
    )


def _message_ref_page(data: JsonObject) -> MessageRefPage:
    return MessageRefPage(
        messages=tuple(_message_ref(item) for item in object_tuple(data, "messages")),
        next_page_token=opt_str(data, "nextPageToken") or None,
        result_size_estimate=opt_int(data, "resultSizeEstimate"),
    )


def _sent_message(data: JsonObject) -> SentMessage:
    return SentMessage(
        id=req_str(data, "id"),
        thread_id=req_str(data, "threadId"),
        label_ids=str_tuple(data, "labelIds"),
    )


def _part(data: JsonObject) -> MessagePart:
    body = as_object(data.get("body") or {}, "body")
    encoded = opt_str(body, "data")
    return MessagePart(
        part_id=opt_str(data, "partId") or "",
        mime_type=opt_str(data, "mimeType") or "",
        filename=opt_str(data, "filename") or "",
        headers=tuple(
            Header(name=req_str(h, "name"), value=opt_str(h, "value") or "")
            for h in object_tuple(data, "headers")
        ),
        body=PartBody(
            size=opt_int(body, "size") or 0,
            data=b64decode_lenient(encoded) if encoded else None,
            attachment_id=opt_str(body, "attachmentId") or None,
        ),
        parts=tuple(_part(child) for child in object_tuple(data, "parts")),
    )


def _message(data: JsonObject) -> GmailMessage:
    internal_ms = opt_int(data, "internalDate")
    raw = opt_str(data, "raw")
    payload = data.get("payload")
    return GmailMessage(
        id=req_str(data, "id"),
        thread_id=req_str(data, "threadId"),
        label_ids=str_tuple(data, "labelIds"),
        history_id=opt_int(data, "historyId"),
        internal_date=ms_to_datetime(internal_ms) if internal_ms is not None else None,
        snippet=opt_str(data, "snippet"),
        size_estimate=opt_int(data, "sizeEstimate"),
        raw=b64decode_lenient(raw) if raw is not None else None,
        payload=_part(as_object(payload, "payload")) if payload is not None else None,
    )


def _thread(data: JsonObject) -> GmailThread:
    return GmailThread(
        id=req_str(data, "id"),
        history_id=opt_int(data, "historyId"),
        messages=tuple(_message(item) for item in object_tuple(data, "messages")),
    )


def _label_change(data: JsonObject) -> LabelChange:
    return LabelChange(
        message=_message_ref(as_object(data.get("message"), "message")),
        label_ids=str_tuple(data, "labelIds"),
    )


def _wrapped_ref(data: JsonObject) -> MessageRef:
    return _message_ref(as_object(data.get("message"), "message"))


def _history_record(data: JsonObject) -> HistoryRecord:
    return HistoryRecord(
        id=req_int(data, "id"),
        messages=tuple(_message_ref(item) for item in object_tuple(data, "messages")),
        messages_added=tuple(_wrapped_ref(item) for item in object_tuple(data, "messagesAdded")),
        messages_deleted=tuple(
            _wrapped_ref(item) for item in object_tuple(data, "messagesDeleted")
        ),
        labels_added=tuple(_label_change(item) for item in object_tuple(data, "labelsAdded")),
        labels_removed=tuple(_label_change(item) for item in object_tuple(data, "labelsRemoved")),
    )


def _history_page(data: JsonObject) -> HistoryPage:
    return HistoryPage(
        records=tuple(_history_record(item) for item in object_tuple(data, "history")),
        next_page_token=opt_str(data, "nextPageToken") or None,
        history_id=req_int(data, "historyId"),
    )


def _watch_result(data: JsonObject) -> WatchResult:
    return WatchResult(
        history_id=req_int(data, "historyId"),
        expiration=ms_to_datetime(req_int(data, "expiration")),
    )


def _attachment_data(data: JsonObject) -> bytes:
    encoded = opt_str(data, "data")
    return b64decode_lenient(encoded) if encoded else b""

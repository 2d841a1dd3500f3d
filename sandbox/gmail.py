"""The Gmail REST API (v1) over the sandbox's mailboxes, with Google's auth, scopes and errors."""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import errors, mime
from sandbox.errors import GoogleApiError
from sandbox.faults import GMAIL_FAULTS, gmail_error
from sandbox.mailstore import HEX_ID, SYSTEM_LABELS, Mailbox, StoredMessage
from sandbox.oauth import AccessToken
from sandbox.state import Sandbox

_G = "https://www.googleapis.com/auth/gmail."
_FULL = "https://mail.google.com/"
_ADDON = "https://www.googleapis.com/auth/gmail.addons.current."
_READ = (_FULL, _G + "metadata", _G + "modify", _G + "readonly")

# Accepted scopes per method, from the discovery document (§1.7).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "gmail.users.getProfile": (*_READ, _G + "compose"),
    "gmail.users.watch": _READ,
    "gmail.users.stop": _READ,
    "gmail.users.history.list": _READ,
    "gmail.users.labels.list": (*_READ, _G + "labels"),
    "gmail.users.messages.list": _READ,
    "gmail.users.messages.get": (
        *_READ,
        _ADDON + "message.action",
        _ADDON + "message.metadata",
        _ADDON + "message.readonly",
    ),
    "gmail.users.messages.attachments.get": (
        _FULL,
        _G + "modify",
        _G + "readonly",
        _ADDON + "message.action",
        _ADDON + "message.readonly",
    ),
    "gmail.users.messages.modify": (_FULL, _G + "modify"),
    "gmail.users.messages.send": (
        _FULL,
        _G + "compose",
        _G + "modify",
        _G + "send",
        _ADDON + "action.compose",
    ),
    "gmail.users.threads.get": (
        *_READ,
        _ADDON + "message.action",
        _ADDON + "message.metadata",
        _ADDON + "message.readonly",
    ),
    "gmail.users.threads.list": _READ,
}
# Scopes that may read bodies; a token with only metadata-level scopes may not.
_BODY_SCOPES = {
    _FULL,
    _G + "modify",
    _G + "readonly",
    _ADDON + "message.action",
    _ADDON + "message.readonly",
}
_LOCAL_FAULTS = {"delete_before_get", "history_lag"}
MAX_UPLOAD = 36_700_160


@dataclass
class Caller:
    token: AccessToken
    mailbox: Mailbox
    method: str

    @property
    def metadata_only(self) -> bool:
        return not any(scope in _BODY_SCOPES for scope in self.token.scopes)


Handler = Callable[[Sandbox, Request, Caller], Awaitable[Response]]


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return request.query_params.get("access_token") or request.query_params.get("oauth_token")


def _authorize(sandbox: Sandbox, request: Request, method: str) -> Caller:
    token_value = _bearer(request)
    if token_value is None:
        raise errors.credentials_missing(method)
    token = sandbox.oauth.access_token(token_value)
    if token is None:
        raise errors.unauthenticated(method)
    user_id = request.path_params["user_id"]
    if user_id != "me" and user_id.lower() != token.grant.email:
        raise errors.delegation_denied(user_id)
    if not any(scope in METHOD_SCOPES[method] for scope in token.scopes):
        raise errors.insufficient_scopes(method)
    mailbox, _ = sandbox.mail.create_account(token.grant.email)
    if mailbox.gmail_disabled:
        raise errors.failed_precondition("Mail service not enabled")
    return Caller(token, mailbox, method)


def gmail_endpoint(method: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.state.gmail_method = method
        sandbox: Sandbox = request.app.state.sandbox
        # Read the body before taking the lock (Starlette caches it), so a slow upload never
        # holds up other mailboxes.
        await request.body()
        try:
            async with sandbox.lock:
                caller = _authorize(sandbox, request, method)
                request.state.account = caller.mailbox.email
                fault = sandbox.faults.take(
                    method,
                    caller.mailbox.email,
                    kinds=GMAIL_FAULTS - _LOCAL_FAULTS,
                )
                if fault is not None:
                    raise gmail_error(fault, sandbox.clock, sandbox.retry_after_header)
                sandbox.quota.charge(caller.mailbox.email, method)
                sandbox.mail.prune_history(caller.mailbox, sandbox.history_retention)
                return await handler(sandbox, request, caller)
        except GoogleApiError as exc:
            return exc.response()

    return endpoint


# --- rendering --------------------------------------------------------------------------------


def message_json(
    sandbox: Sandbox,
    mailbox: Mailbox,
    message: StoredMessage,
    fmt: str,
    metadata_headers: list[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": message.id, "threadId": message.thread_id}
    if message.label_ids:
        body["labelIds"] = list(message.label_ids)
    body["snippet"] = mime.snippet(message.parsed)
    if fmt == "metadata":
        body["payload"] = mime.metadata_payload(message.parsed, metadata_headers)
    elif fmt == "full":
        body["payload"] = mime.payload_json(
            message.parsed,
            lambda part_id: sandbox.mint_attachment_id(mailbox.email, message.id, part_id),
        )
    body["sizeEstimate"] = len(message.raw)
    body["historyId"] = str(message.history_id)
    body["internalDate"] = str(message.internal_date)
    if fmt == "raw":
        body["raw"] = mime.b64url(message.raw)
    return body


def _format(request: Request, caller: Caller, allowed: tuple[str, ...], default: str) -> str:
    fmt = request.query_params.get("format", default).lower()
    if fmt not in allowed:
        raise errors.bad_request(f"Invalid value at 'format' ({fmt})")
    if caller.metadata_only and fmt in ("full", "raw"):
        raise errors.insufficient_scopes(
            caller.method, f"Metadata scope doesn't allow format {fmt.upper()}"
        )
    return fmt


def _message(caller: Caller, message_id: str) -> StoredMessage:
    if not HEX_ID.match(message_id):
        raise errors.invalid_argument("Invalid id value")
    message = caller.mailbox.messages.get(message_id)
    if message is None:
        raise errors.not_found()
    return message


def _max_results(request: Request) -> int:
    text = request.query_params.get("maxResults", "100")
    try:
        value = int(text)
    except ValueError as exc:
        raise errors.invalid_argument(f"Invalid value at 'max_results' ({text})") from exc
    return max(1, min(value, 500))


def _page_offset(request: Request) -> int:
    token = request.query_params.get("pageToken")
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token + "==").decode())
    except (ValueError, binascii.Error) as exc:
        raise errors.invalid_argument("Invalid pageToken") from exc


def _page_token(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def _multi(request: Request, name: str) -> list[str]:
    values: list[str] = []
    for value in request.query_params.getlist(name):
        values.extend(v for v in value.split(",") if v)
    return values


# --- handlers ---------------------------------------------------------------------------------


async def get_profile(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    mailbox = caller.mailbox
    return JSONResponse(
        {
            "emailAddress": mailbox.email,
            "messagesTotal": len(mailbox.messages),
            "threadsTotal": len(mailbox.threads),
            "historyId": str(mailbox.history_id),
        }
    )


def _decode_raw(text: Any) -> bytes:
    if not isinstance(text, str) or not text:
        raise errors.invalid_argument(
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required"
        )
    try:
        return mime.b64url_decode(text)
    except (ValueError, binascii.Error) as exc:
        raise errors.invalid_argument("Invalid value for ByteString: raw") from exc


def _send(sandbox: Sandbox, caller: Caller, raw: bytes, thread_id: Any) -> Response:
    if len(raw) > MAX_UPLOAD:
        raise GoogleApiError(413, "Request payload size exceeds the limit", "uploadTooLarge")
    parsed = mime.parse(raw)
    if not mime.addresses(parsed, "To", "Cc", "Bcc"):
        raise errors.invalid_argument("Recipient address required")
    if thread_id is not None:
        if not isinstance(thread_id, str) or not HEX_ID.match(thread_id):
            raise errors.invalid_argument("Invalid thread_id value")
        if thread_id not in caller.mailbox.threads:
            raise errors.not_found()
    stored = sandbox.mail.send(caller.mailbox, raw, thread_id)
    return JSONResponse(
        {"id": stored.id, "threadId": stored.thread_id, "labelIds": list(stored.label_ids)}
    )


async def send_message(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise errors.bad_request("Invalid JSON payload received.") from exc
    if not isinstance(payload, dict):
        raise errors.bad_request("Invalid JSON payload received.")
    return _send(sandbox, caller, _decode_raw(payload.get("raw")), payload.get("threadId"))


async def upload_send(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    upload_type = request.query_params.get("uploadType", "media")
    body = await request.body()
    if upload_type == "media":
        return _send(sandbox, caller, body, None)
    if upload_type == "multipart":
        content_type = request.headers.get("content-type", "")
        container = BytesParser(policy=policy.compat32).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode()
        )
        boundary = container.get_boundary()
        parts = mime.split_multipart(body, boundary) if boundary else []
        if len(parts) != 2:
            raise errors.bad_request("Multipart upload needs a metadata part and a media part.")
        (_, meta_bytes), (_, media) = parts
        try:
            metadata = json.loads(meta_bytes or b"{}")
        except ValueError as exc:
            raise errors.bad_request("Invalid JSON payload received.") from exc
        if not isinstance(metadata, dict):
            raise errors.bad_request("Invalid JSON payload received.")
        return _send(sandbox, caller, media, metadata.get("threadId"))
    raise errors.bad_request(f"uploadType {upload_type!r} is not supported by the sandbox.")


async def get_message(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    fmt = _format(request, caller, ("minimal", "full", "raw", "metadata"), "full")
    message_id = request.path_params["id"]
    message = _message(caller, message_id)
    fault = sandbox.faults.take(caller.method, caller.mailbox.email, {"delete_before_get"})
    if fault is not None:
        sandbox.mail.delete(caller.mailbox, message)
        raise errors.not_found()
    headers = _multi(request, "metadataHeaders")
    return JSONResponse(message_json(sandbox, caller.mailbox, message, fmt, headers or None))


async def modify_message(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    message = _message(caller, request.path_params["id"])
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise errors.bad_request("Invalid JSON payload received.") from exc
    add = list(payload.get("addLabelIds") or [])
    remove = list(payload.get("removeLabelIds") or [])
    sandbox.mail.modify_labels(caller.mailbox, message, add, remove)
    return JSONResponse(message_json(sandbox, caller.mailbox, message, "minimal"))


async def get_attachment(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    message = _message(caller, request.path_params["message_id"])
    ref = sandbox.attachments.get(request.path_params["id"])
    expired = ref is not None and sandbox.clock.now() - ref.minted_at > sandbox.attachment_id_ttl
    if ref is None or expired or ref.message_id != message.id or ref.email != caller.mailbox.email:
        raise errors.invalid_argument("Invalid attachment token")
    part = mime.find_part(message.parsed, ref.part_id)
    if part is None:
        raise errors.not_found()
    data = mime.part_data(part)
    return JSONResponse({"size": len(data), "data": mime.b64url(data)})


async def get_thread(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    fmt = _format(request, caller, ("minimal", "full", "metadata"), "full")
    thread_id = request.path_params["id"]
    if not HEX_ID.match(thread_id):
        raise errors.invalid_argument("Invalid id value")
    members = caller.mailbox.thread_messages(thread_id)
    if not members:
        raise errors.not_found()
    members.sort(key=lambda m: (m.internal_date, m.id))
    headers = _multi(request, "metadataHeaders") or None
    return JSONResponse(
        {
            "id": thread_id,
            "historyId": str(max(m.history_id for m in members)),
            "messages": [message_json(sandbox, caller.mailbox, m, fmt, headers) for m in members],
        }
    )


async def list_history(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    mailbox = caller.mailbox
    text = request.query_params.get("startHistoryId")
    if not text or not text.isdigit():
        raise errors.invalid_argument("Missing/invalid parameter: startHistoryId")
    start = int(text)
    if start < mailbox.history_floor:
        raise errors.not_found()
    types = set(_multi(request, "historyTypes")) or None
    label = request.query_params.get("labelId")
    limit = _max_results(request)
    after = max(start, _page_offset(request))
    visible_to = mailbox.history_id
    if sandbox.faults.take(caller.method, mailbox.email, {"history_lag"}) is not None:
        # The notification went out but history does not show the newest change yet.
        earlier = [r.id for r in mailbox.history if r.id < mailbox.history_id]
        visible_to = earlier[-1] if earlier else start
    records: list[dict[str, Any]] = []
    next_token: str | None = None
    for record in mailbox.history:
        if record.id <= after or record.id > visible_to:
            continue
        if label is not None and label not in record.message.get("labelIds", []) + record.label_ids:
            continue
        rendered = record.json(types)
        if rendered is None:
            continue
        if len(records) == limit:
            next_token = _page_token(int(records[-1]["id"]))
            break
        records.append(rendered)
    body: dict[str, Any] = {}
    if records:
        body["history"] = records
    if next_token:
        body["nextPageToken"] = next_token
    body["historyId"] = str(visible_to)
    return JSONResponse(body)


async def list_messages(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    query = request.query_params.get("q")
    if query and caller.metadata_only:
        raise errors.insufficient_scopes(
            caller.method, "Metadata scope does not support 'q' parameter"
        )
    label_ids = _multi(request, "labelIds")
    include_spam_trash = request.query_params.get("includeSpamTrash", "false").lower() == "true"
    matcher = _query_matcher(query or "", sandbox)
    chosen = []
    for message in caller.mailbox.messages.values():
        labels = set(message.label_ids)
        hidden = labels & {"SPAM", "TRASH"} and not (include_spam_trash or matcher.anywhere)
        if hidden and not (set(label_ids) & {"SPAM", "TRASH"}) and not matcher.asks_spam_trash:
            continue
        if any(label not in labels for label in label_ids):
            continue
        if not matcher.matches(message):
            continue
        chosen.append(message)
    chosen.sort(key=lambda m: (m.internal_date, m.id), reverse=True)
    return _paged(request, [m.ref() for m in chosen], "messages")


async def list_threads(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    label_ids = _multi(request, "labelIds")
    matcher = _query_matcher(request.query_params.get("q") or "", sandbox)
    rows: list[tuple[int, dict[str, Any]]] = []
    for thread_id in caller.mailbox.threads:
        members = caller.mailbox.thread_messages(thread_id)
        if not members:
            continue
        labels = {label for m in members for label in m.label_ids}
        if any(label not in labels for label in label_ids):
            continue
        if not any(matcher.matches(m) for m in members):
            continue
        last = max(members, key=lambda m: (m.internal_date, m.id))
        item = {
            "id": thread_id,
            "snippet": mime.snippet(last.parsed),
            "historyId": str(max(m.history_id for m in members)),
        }
        rows.append((last.internal_date, item))
    rows.sort(key=lambda row: row[0], reverse=True)
    return _paged(request, [item for _, item in rows], "threads")


def _paged(request: Request, items: list[dict[str, Any]], key: str) -> Response:
    offset = _page_offset(request)
    limit = _max_results(request)
    page = items[offset : offset + limit]
    body: dict[str, Any] = {}
    if page:
        body[key] = page
    if offset + limit < len(items):
        body["nextPageToken"] = _page_token(offset + limit)
    body["resultSizeEstimate"] = len(items)
    return JSONResponse(body)


async def list_labels(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    labels = [{"id": name, "name": name, "type": "system"} for name in SYSTEM_LABELS]
    labels += [
        {"id": name, "name": name, "type": "user"} for name in sorted(caller.mailbox.user_labels)
    ]
    return JSONResponse({"labels": labels})


async def watch(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    try:
        payload = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise errors.bad_request("Invalid JSON payload received.") from exc
    behavior = str(
        payload.get("labelFilterBehavior") or payload.get("labelFilterAction") or "include"
    ).lower()
    if behavior not in ("include", "exclude"):
        raise errors.invalid_argument(f"Invalid value at 'label_filter_behavior' ({behavior})")
    created = sandbox.push.watch(
        caller.mailbox.email,
        str(payload.get("topicName") or ""),
        list(payload.get("labelIds") or []),
        behavior,
        caller.mailbox.history_id,
    )
    return JSONResponse(
        {
            "historyId": str(caller.mailbox.history_id),
            "expiration": str(int(created.expiration * 1000)),
        }
    )


async def stop(sandbox: Sandbox, request: Request, caller: Caller) -> Response:
    sandbox.push.stop(caller.mailbox.email)
    return Response(status_code=204)


# --- the messages.list `q` subset ---------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})[/-](\d{1,2})[/-](\d{1,2})$")
_AGE = re.compile(r"^(\d+)([dmy])$")


@dataclass
class _Matcher:
    tests: list[Callable[[StoredMessage], bool]]
    anywhere: bool
    asks_spam_trash: bool

    def matches(self, message: StoredMessage) -> bool:
        return all(test(message) for test in self.tests)


def _label_test(label: str) -> Callable[[StoredMessage], bool]:
    wanted = label.upper() if label.upper() in _SYSTEM_NAMES else label
    return lambda m: wanted in m.label_ids or label.lower() in (x.lower() for x in m.label_ids)


_SYSTEM_NAMES = {"INBOX", "SENT", "UNREAD", "STARRED", "IMPORTANT", "TRASH", "SPAM", "DRAFT"}


def _date_value(text: str) -> float:
    if text.isdigit():
        return float(text)
    match = _DATE.match(text)
    if match is None:
        raise errors.invalid_argument(f"Invalid date in query: {text}")
    year, month, day = (int(g) for g in match.groups())
    return datetime(year, month, day, tzinfo=UTC).timestamp()


def _header_contains(names: tuple[str, ...], needle: str) -> Callable[[StoredMessage], bool]:
    lowered = needle.lower()

    def test(message: StoredMessage) -> bool:
        return any(
            lowered in str(value).lower()
            for name in names
            for value in message.parsed.get_all(name, [])
        )

    return test


Test = Callable[[StoredMessage], bool]


def _rfc822_test(wanted: str) -> Test:
    return lambda m: (m.rfc822_id or "").strip("<>") == wanted


def _date_test(cutoff_ms: float, *, newer: bool) -> Test:
    if newer:
        return lambda m: m.internal_date > cutoff_ms
    return lambda m: m.internal_date < cutoff_ms


def _word_test(word: str) -> Test:
    def test(message: StoredMessage) -> bool:
        return (
            word in message.subject.lower()
            or word in mime.snippet(message.parsed, 10_000).lower()
            or word in (mime.header(message.parsed, "From") or "").lower()
        )

    return test


def _has_attachment(message: StoredMessage) -> bool:
    return any(part.get_filename() for part in message.parsed.walk())


def _is_read(message: StoredMessage) -> bool:
    return "UNREAD" not in message.label_ids


def _query_matcher(query: str, sandbox: Sandbox) -> _Matcher:
    """Supported: rfc822msgid:, in:, label:, is:, from:, to:, cc:, subject:, after:, before:,
    newer_than:, older_than:, has:attachment, and bare words (subject, snippet, From)."""
    try:
        terms = shlex.split(query)
    except ValueError as exc:
        raise errors.invalid_argument("Invalid query") from exc
    tests: list[Test] = []
    anywhere = False
    asks_spam_trash = False
    now = sandbox.clock.now()
    for term in terms:
        key, sep, value = term.partition(":")
        key = key.lower() if sep else ""
        if key == "rfc822msgid":
            tests.append(_rfc822_test(value.strip("<>")))
        elif key == "in" and value.lower() == "anywhere":
            anywhere = True
        elif key in ("in", "label"):
            if value.upper() in ("SPAM", "TRASH"):
                asks_spam_trash = True
            tests.append(_label_test(value))
        elif key == "is":
            flag = value.lower()
            tests.append(_is_read if flag == "read" else _label_test(flag))
        elif key == "from":
            tests.append(_header_contains(("From",), value))
        elif key == "to":
            tests.append(_header_contains(("To", "Cc", "Bcc"), value))
        elif key == "cc":
            tests.append(_header_contains(("Cc",), value))
        elif key == "subject":
            tests.append(_header_contains(("Subject",), value))
        elif key in ("after", "before"):
            tests.append(_date_test(_date_value(value) * 1000, newer=key == "after"))
        elif key in ("newer_than", "older_than"):
            match = _AGE.match(value.lower())
            if match is None:
                raise errors.invalid_argument(f"Invalid query term: {term}")
            unit = {"d": 86400, "m": 30 * 86400, "y": 365 * 86400}[match.group(2)]
            cutoff = (now - int(match.group(1)) * unit) * 1000
            tests.append(_date_test(cutoff, newer=key == "newer_than"))
        elif key == "has" and value.lower() == "attachment":
            tests.append(_has_attachment)
        else:
            tests.append(_word_test(term.lower()))
    return _Matcher(tests, anywhere, asks_spam_trash)


def routes() -> list[Route]:
    base = "/gmail/v1/users/{user_id}"

    def route(path: str, method: str, handler: Handler, http: str = "GET") -> Route:
        return Route(path, gmail_endpoint(method, handler), methods=[http])

    return [
        route(f"{base}/profile", "gmail.users.getProfile", get_profile),
        route(f"{base}/messages/send", "gmail.users.messages.send", send_message, "POST"),
        route(f"/upload{base}/messages/send", "gmail.users.messages.send", upload_send, "POST"),
        route(f"{base}/messages", "gmail.users.messages.list", list_messages),
        route(f"{base}/messages/{{id}}", "gmail.users.messages.get", get_message),
        route(
            f"{base}/messages/{{id}}/modify", "gmail.users.messages.modify", modify_message, "POST"
        ),
        route(
            f"{base}/messages/{{message_id}}/attachments/{{id}}",
            "gmail.users.messages.attachments.get",
            get_attachment,
        ),
        route(f"{base}/threads", "gmail.users.threads.list", list_threads),
        route(f"{base}/threads/{{id}}", "gmail.users.threads.get", get_thread),
        route(f"{base}/history", "gmail.users.history.list", list_history),
        route(f"{base}/labels", "gmail.users.labels.list", list_labels),
        route(f"{base}/watch", "gmail.users.watch", watch, "POST"),
        route(f"{base}/stop", "gmail.users.stop", stop, "POST"),
    ]

"""The sandbox's own control API under /_sandbox/ (fixed parts in CONTRACT.md §6)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formataddr, parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import mime
from sandbox.clock import rfc3339
from sandbox.faults import GMAIL_FAULTS, TOKEN_FAULTS, TOKEN_METHOD
from sandbox.mailstore import Mailbox, OutgoingMail, StoredMessage
from sandbox.oauth import expand_scope
from sandbox.state import ConsentSettings, Sandbox


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Endpoint = Callable[[Sandbox, Request, dict[str, Any]], Awaitable[Response]]


def _endpoint(handler: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        sandbox: Sandbox = request.app.state.sandbox
        body: dict[str, Any] = {}
        raw = await request.body()
        try:
            if raw.strip():
                loaded = json.loads(raw)
                if not isinstance(loaded, dict):
                    raise ControlError(400, "the body must be a JSON object")
                body = loaded
            async with sandbox.lock:
                return await handler(sandbox, request, body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ControlError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    return endpoint


def _mailbox(sandbox: Sandbox, request: Request) -> Mailbox:
    email = request.path_params["email"]
    mailbox = sandbox.mail.account(email)
    if mailbox is None:
        raise ControlError(404, f"no sandbox account {email}")
    return mailbox


def _stored(mailbox: Mailbox, message_id: str) -> StoredMessage:
    message = mailbox.messages.get(message_id)
    if message is None:
        raise ControlError(404, f"no message {message_id} in {mailbox.email}")
    return message


def _message_summary(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "threadId": message.thread_id,
        "labelIds": list(message.label_ids),
        "message_id": message.rfc822_id,
        "subject": message.subject,
        "from": mime.header(message.parsed, "From"),
        "to": mime.header(message.parsed, "To"),
        "in_reply_to": mime.header(message.parsed, "In-Reply-To"),
        "references": mime.header(message.parsed, "References"),
        "internalDate": str(message.internal_date),
        "historyId": str(message.history_id),
    }


def _attachments(body: dict[str, Any]) -> list[mime.Attachment]:
    items = []
    for item in body.get("attachments") or []:
        try:
            content = base64.b64decode(item.get("content_b64", ""))
        except binascii.Error as exc:
            raise ControlError(400, "attachment content_b64 is not base64") from exc
        items.append(
            mime.Attachment(
                filename=str(item.get("filename", "attachment.bin")),
                mime_type=str(item.get("mime_type", "application/octet-stream")),
                content=content,
            )
        )
    return items


def _dispatch(
    sandbox: Sandbox, sender: str, mailbox: Mailbox | None, raw: bytes, thread_id: str | None
) -> dict[str, Any]:
    """Send as a person would: from a sandbox account's Gmail, or from outside the sandbox."""
    parsed = mime.parse(raw)
    result: dict[str, Any] = {"message_id": mime.header(parsed, "Message-ID")}
    before = len(sandbox.mail.outgoing)
    if mailbox is not None:
        stored = sandbox.mail.send(mailbox, raw, thread_id, via="sandbox")
        result["sent"] = {"id": stored.id, "threadId": stored.thread_id}
    else:
        sandbox.mail.deliver(raw, sender, mime.addresses(parsed, "To", "Cc", "Bcc"), via="sandbox")
        result["sent"] = None
    entries: list[OutgoingMail] = sandbox.mail.outgoing[before:]
    delivered = []
    for entry in entries:
        for rcpt in entry.delivered_to:
            target = sandbox.mail.account(rcpt)
            if target is None:
                continue
            copies = [m for m in target.messages.values() if m.rfc822_id == result["message_id"]]
            if copies:
                copy = max(copies, key=lambda m: m.internal_date)
                delivered.append({"email": rcpt, "id": copy.id, "threadId": copy.thread_id})
    result["delivered"] = delivered
    result["external"] = [r for e in entries for r in e.external]
    return result


def _sender_display(sandbox: Sandbox, email: str, name: Any) -> tuple[str, Mailbox | None]:
    mailbox = sandbox.mail.account(email)
    display_name = name if isinstance(name, str) and name else (mailbox.name if mailbox else None)
    return (formataddr((display_name, email)) if display_name else email), mailbox


def _parent(
    sandbox: Sandbox, mailbox: Mailbox | None, body: dict[str, Any]
) -> tuple[bytes, int | None, str | None]:
    """(raw parent, its internalDate, the sender-side thread id the reply belongs to)."""
    if body.get("gmail_message_id"):
        if mailbox is None:
            raise ControlError(400, "gmail_message_id needs the replier to be a sandbox account")
        message = _stored(mailbox, str(body["gmail_message_id"]))
        return message.raw, message.internal_date, message.thread_id
    if body.get("thread_id"):
        if mailbox is None:
            raise ControlError(400, "thread_id needs the replier to be a sandbox account")
        members = mailbox.thread_messages(str(body["thread_id"]))
        if not members:
            raise ControlError(404, f"no thread {body['thread_id']} in {mailbox.email}")
        last = max(members, key=lambda m: (m.internal_date, m.id))
        return last.raw, last.internal_date, last.thread_id
    wanted = body.get("message_id")
    if not wanted:
        raise ControlError(400, "give message_id, gmail_message_id or thread_id")
    wanted = str(wanted).strip()
    if not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    if mailbox is not None:
        for gmail_id in mailbox.by_rfc822.get(wanted, []):
            own = mailbox.messages.get(gmail_id)
            if own is not None:
                return own.raw, own.internal_date, own.thread_id
    found = sandbox.mail.find_by_rfc822(wanted)
    if found is not None:
        return found[1].raw, found[1].internal_date, None
    outgoing = sandbox.mail.find_outgoing(wanted)
    if outgoing is not None:
        return outgoing.raw, int(outgoing.at * 1000), None
    raise ControlError(404, f"no message with Message-ID {wanted}")


async def reply(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    email = request.path_params["email"].lower()
    sender, mailbox = _sender_display(sandbox, email, body.get("name"))
    raw_parent, internal_date, thread_id = _parent(sandbox, mailbox, body)
    parent = mime.parse(raw_parent)
    try:
        parent_date = parsedate_to_datetime(mime.header(parent, "Date") or "")
    except (TypeError, ValueError):
        parent_date = datetime.fromtimestamp((internal_date or 0) / 1000, tz=UTC)
    parts = mime.reply_parts(
        parent,
        replier=email,
        text=str(body.get("text", "")),
        html_body=body.get("html"),
        reply_all=bool(body.get("reply_all", False)),
        parent_date=parent_date,
    )
    parts_to = [str(a) for a in body["to"]] if body.get("to") else parts.to
    domain = email.rpartition("@")[2] or "sandbox.local"
    raw = mime.build_message(
        sender=sender,
        to=parts_to,
        cc=parts.cc,
        subject=str(body.get("subject") or parts.subject),
        text=parts.text if body.get("quote", True) else str(body.get("text", "")),
        html_body=parts.html_body if body.get("quote", True) else body.get("html"),
        date=sandbox.clock.now_datetime(),
        message_id=mime.new_message_id("mail.gmail.com" if mailbox else domain),
        in_reply_to=parts.in_reply_to,
        references=parts.references,
        attachments=_attachments(body),
        extra_headers=body.get("headers"),
    )
    return JSONResponse(_dispatch(sandbox, email, mailbox, raw, thread_id), status_code=201)


async def send_new(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    email = request.path_params["email"].lower()
    sender, mailbox = _sender_display(sandbox, email, body.get("name"))
    to = [str(a) for a in body.get("to") or []]
    if not to:
        raise ControlError(400, "to is required")
    domain = email.rpartition("@")[2] or "sandbox.local"
    raw = mime.build_message(
        sender=sender,
        to=to,
        cc=[str(a) for a in body.get("cc") or []],
        subject=str(body.get("subject", "")),
        text=str(body.get("text", "")),
        html_body=body.get("html"),
        date=sandbox.clock.now_datetime(),
        message_id=mime.new_message_id("mail.gmail.com" if mailbox else domain),
        in_reply_to=body.get("in_reply_to"),
        references=body.get("references"),
        attachments=_attachments(body),
        extra_headers=body.get("headers"),
    )
    return JSONResponse(_dispatch(sandbox, email, mailbox, raw, None), status_code=201)


async def create_account(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise ControlError(400, "email is required")
    mailbox, created = sandbox.mail.create_account(email, body.get("name"))
    if "gmail_enabled" in body:
        mailbox.gmail_disabled = not body["gmail_enabled"]
    return JSONResponse({"email": mailbox.email}, status_code=201 if created else 200)


def _account_json(sandbox: Sandbox, mailbox: Mailbox) -> dict[str, Any]:
    watch = sandbox.push.watches.get(mailbox.email)
    return {
        "email": mailbox.email,
        "name": mailbox.name,
        "history_id": str(mailbox.history_id),
        "history_floor": str(mailbox.history_floor),
        "messages_total": len(mailbox.messages),
        "threads_total": len(mailbox.threads),
        "gmail_enabled": not mailbox.gmail_disabled,
        "watch": None
        if watch is None
        else {
            "topic": watch.topic,
            "label_ids": watch.label_ids,
            "label_filter_behavior": watch.behavior,
            "expiration": str(int(watch.expiration * 1000)),
            "active": watch.expiration > sandbox.clock.now(),
        },
    }


async def list_accounts(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    items = [_account_json(sandbox, m) for m in sandbox.mail.accounts.values()]
    return JSONResponse({"items": items})


async def get_account(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    return JSONResponse(_account_json(sandbox, _mailbox(sandbox, request)))


async def update_account(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    if "gmail_enabled" in body:
        mailbox.gmail_disabled = not body["gmail_enabled"]
    if "name" in body:
        mailbox.name = body["name"]
    return JSONResponse(_account_json(sandbox, mailbox))


async def grant(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    scopes = body.get("scopes")
    if not isinstance(scopes, list) or not scopes:
        raise ControlError(400, "scopes is required")
    result = sandbox.oauth.grant_directly(mailbox.email, [expand_scope(str(s)) for s in scopes])
    return JSONResponse(result.json())


async def revoke_account(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    return JSONResponse({"revoked": sandbox.oauth.revoke_account(mailbox.email, "revoked")})


async def password_change(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    count = sandbox.oauth.revoke_account(mailbox.email, "password_changed", mail_scopes_only=True)
    return JSONResponse({"revoked": count})


async def revoke_token(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    value = str(body.get("token") or "")
    for table in (sandbox.oauth.refresh_tokens, sandbox.oauth.access_tokens):
        found = table.get(value)
        if found is not None:
            found.grant.revoked_reason = str(body.get("reason", "revoked"))
            return JSONResponse({"revoked": 1})
    raise ControlError(404, "unknown token")


async def list_messages(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    items = sorted(mailbox.messages.values(), key=lambda m: (m.internal_date, m.id))
    return JSONResponse({"items": [_message_summary(m) for m in items]})


async def get_message(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    message = _stored(mailbox, request.path_params["id"])
    summary = _message_summary(message)
    summary["raw"] = message.raw.decode("utf-8", errors="replace")
    return JSONResponse(summary)


async def insert_message(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    if "raw" in body:
        raw = mime.b64url_decode(str(body["raw"]))
    elif "raw_text" in body:
        raw = str(body["raw_text"]).encode()
    else:
        raise ControlError(400, "give raw (base64url) or raw_text")
    labels = [str(label) for label in body.get("labels") or ["INBOX", "UNREAD"]]
    thread_id = body.get("thread_id")
    if thread_id is not None:
        if thread_id not in mailbox.threads:
            raise ControlError(404, f"no thread {thread_id}")
        stored = sandbox.mail.insert(mailbox, raw, labels, str(thread_id))
    else:
        sender = mime.addresses(mime.parse(raw), "From")
        stored = sandbox.mail.receive(mailbox, raw, sender[0] if sender else "", labels)
    return JSONResponse(_message_summary(stored), status_code=201)


async def delete_message(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    sandbox.mail.delete(mailbox, _stored(mailbox, request.path_params["id"]))
    return Response(status_code=204)


async def modify_labels(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    message = _stored(mailbox, request.path_params["id"])
    add = [str(label) for label in body.get("add") or []]
    remove = [str(label) for label in body.get("remove") or []]
    sandbox.mail.modify_labels(mailbox, message, add, remove)
    return JSONResponse(_message_summary(message))


async def touch_message(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    record = sandbox.mail.touch(mailbox, _stored(mailbox, request.path_params["id"]))
    return JSONResponse({"history_id": str(record.id)})


async def expire_history(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    mailbox = _mailbox(sandbox, request)
    before = body.get("before")
    floor = sandbox.mail.expire_history(mailbox, int(before) if before is not None else None)
    return JSONResponse({"history_floor": str(floor)})


def _clock_json(sandbox: Sandbox) -> dict[str, Any]:
    now = sandbox.clock.now()
    return {"now": rfc3339(now), "now_ms": int(now * 1000), "speed": sandbox.clock.speed}


async def clock(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    if "speed" in body:
        speed = float(body["speed"])
        if speed <= 0:
            raise ControlError(400, "speed must be positive")
        sandbox.clock.set_speed(speed)
    if "advance" in body:
        seconds = float(body["advance"])
        if seconds < 0:
            raise ControlError(400, "the clock only moves forward")
        sandbox.clock.advance(seconds)
    return JSONResponse(_clock_json(sandbox))


async def add_fault(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    method = str(body.get("method", ""))
    if not method:
        raise ControlError(400, "method is required (a Gmail method id, '*', or 'oauth.token')")
    account = body.get("account")
    fault = sandbox.faults.add(
        method,
        str(body.get("kind", "")),
        int(body.get("count", 1)),
        account.lower() if isinstance(account, str) else None,
        body.get("params"),
    )
    return JSONResponse(fault.json(), status_code=201)


async def list_faults(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    return JSONResponse(
        {
            "items": [f.json() for f in sandbox.faults.faults],
            "gmail_kinds": sorted(GMAIL_FAULTS),
            "token_kinds": sorted(TOKEN_FAULTS),
            "token_method": TOKEN_METHOD,
        }
    )


async def clear_faults(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    sandbox.faults.clear()
    sandbox.push.faults.clear()
    return Response(status_code=204)


_PUSH_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "endpoint": str,
    "audience": str,
    "service_account": str,
    "subscription": str,
    "wrapped": bool,
    "history_id_as_string": bool,
    "min_interval": float,
    "ack_deadline": float,
    "max_attempts": int,
    "retry_backoff": float,
    "retry_backoff_max": float,
}


async def push_settings(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    for name, value in body.items():
        kind = _PUSH_SETTINGS.get(name)
        if kind is None:
            raise ControlError(400, f"unknown push setting {name}")
        setattr(sandbox.push, name, None if value is None else kind(value))
    return JSONResponse(sandbox.push.settings())


async def push_notifications(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    email = request.query_params.get("email")
    items = [
        n.json() for n in sandbox.push.notifications if email is None or n.email == email.lower()
    ]
    return JSONResponse({"items": items, "dropped": dict(sandbox.push.dropped)})


async def push_fault(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    email = body.get("email")
    sandbox.push.add_fault(
        str(body.get("kind", "")),
        int(body.get("count", 1)),
        float(body.get("delay", 2.0)),
        str(email) if email else None,
    )
    return JSONResponse(
        {"items": [{"kind": f.kind, "remaining": f.remaining} for f in sandbox.push.faults]},
        status_code=201,
    )


async def push_token(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    key = str(body.get("key", "active"))
    if key not in ("active", "unknown", "bad_signature"):
        raise ControlError(400, "key is one of active, unknown, bad_signature")
    token = sandbox.push.forge_token(
        body.get("audience"),
        dict(body.get("claims") or {}),
        [str(name) for name in body.get("remove") or []],
        key,
    )
    return JSONResponse({"token": token})


async def topics(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    if request.method == "PUT":
        if "topics" in body:
            sandbox.push.topics = {
                str(t["name"]): bool(t.get("publish_granted", True)) for t in body["topics"] or []
            }
            sandbox.push.any_topic = False
        if "any_topic" in body:
            sandbox.push.any_topic = bool(body["any_topic"])
    return JSONResponse(
        {
            "project": sandbox.push.project,
            "any_topic": sandbox.push.any_topic,
            "topics": [{"name": n, "publish_granted": g} for n, g in sandbox.push.topics.items()],
        }
    )


def _keys_json(sandbox: Sandbox) -> dict[str, Any]:
    return {"kids": sandbox.keys.kids(), "active": sandbox.keys.active_kid}


async def keys_state(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    return JSONResponse(_keys_json(sandbox))


async def rotate_key(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    kid = sandbox.keys.rotate(activate=bool(body.get("activate", True)))
    return JSONResponse({"kid": kid, **_keys_json(sandbox)})


async def activate_key(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    try:
        sandbox.keys.activate(str(body.get("kid")))
    except KeyError as exc:
        raise ControlError(404, "unknown kid") from exc
    return JSONResponse(_keys_json(sandbox))


async def retire_key(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    try:
        retired = sandbox.keys.retire(body.get("kid"))
    except KeyError as exc:
        raise ControlError(404, str(exc)) from exc
    except ValueError as exc:
        raise ControlError(409, str(exc)) from exc
    return JSONResponse({"retired": retired, **_keys_json(sandbox)})


async def consent(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    if request.method == "PUT":
        decision = str(body.get("decision", "allow"))
        if decision not in ("allow", "deny"):
            raise ControlError(400, "decision is allow or deny")
        scopes = body.get("scopes")
        sandbox.consent = ConsentSettings(
            auto=bool(body.get("auto", True)),
            decision=decision,
            email=str(body["email"]).lower() if body.get("email") else None,
            scopes=[expand_scope(str(s)) for s in scopes] if scopes is not None else None,
        )
    current = sandbox.consent
    return JSONResponse(
        {
            "auto": current.auto,
            "decision": current.decision,
            "email": current.email,
            "scopes": current.scopes,
        }
    )


def _settings_json(sandbox: Sandbox) -> dict[str, Any]:
    return {
        "retry_after_header": sandbox.retry_after_header,
        "history_retention": sandbox.history_retention,
        "attachment_id_ttl": sandbox.attachment_id_ttl,
        "access_token_ttl": sandbox.oauth.access_token_ttl,
        "code_ttl": sandbox.oauth.code_ttl,
        "rotate_refresh_tokens": sandbox.oauth.rotate_refresh_tokens,
        "testing_mode": sandbox.oauth.testing_mode,
        "watch_ttl": sandbox.push.watch_ttl,
        "user_quota_per_minute": sandbox.quota.per_minute,
        "rate_limit_status": sandbox.quota.status,
    }


def _apply_setting(sandbox: Sandbox, name: str, value: Any) -> None:
    if name == "retry_after_header":
        sandbox.retry_after_header = bool(value)
        sandbox.quota.header = bool(value)
    elif name == "history_retention":
        sandbox.history_retention = float(value)
    elif name == "attachment_id_ttl":
        sandbox.attachment_id_ttl = float(value)
    elif name == "access_token_ttl":
        sandbox.oauth.access_token_ttl = int(value)
    elif name == "code_ttl":
        sandbox.oauth.code_ttl = int(value)
    elif name == "rotate_refresh_tokens":
        sandbox.oauth.rotate_refresh_tokens = bool(value)
    elif name == "testing_mode":
        sandbox.oauth.testing_mode = bool(value)
    elif name == "watch_ttl":
        sandbox.push.watch_ttl = float(value)
    elif name == "user_quota_per_minute":
        sandbox.quota.per_minute = int(value)
    elif name == "rate_limit_status":
        if int(value) not in (403, 429):
            raise ControlError(400, "rate_limit_status is 403 or 429")
        sandbox.quota.status = int(value)
    else:
        raise ControlError(400, f"unknown setting {name}")


async def settings(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    for name, value in body.items():
        _apply_setting(sandbox, name, value)
    return JSONResponse(_settings_json(sandbox))


async def expire_attachments(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    count = len(sandbox.attachments)
    sandbox.attachments.clear()
    return JSONResponse({"expired": count})


async def calls(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    if request.method == "DELETE":
        sandbox.calls.clear()
        return Response(status_code=204)
    return JSONResponse({"items": [c.json() for c in sandbox.calls.items]})


async def stats(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    return JSONResponse(sandbox.calls.stats())


async def outgoing(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    via = request.query_params.get("via")
    items = [e.json() for e in sandbox.mail.outgoing if via is None or e.via == via]
    return JSONResponse({"items": items})


async def reset(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    sandbox.reset()
    return Response(status_code=204)


async def health(sandbox: Sandbox, request: Request, body: dict[str, Any]) -> Response:
    return JSONResponse(
        {
            "status": "ok",
            "base_url": sandbox.base_url,
            "smtp_port": sandbox.smtp_port,
            "client_id": sandbox.oauth.client_id,
            "project": sandbox.push.project,
            "clock": _clock_json(sandbox),
        }
    )


def routes() -> list[Route]:
    p = "/_sandbox"
    a = f"{p}/accounts/{{email}}"
    table: list[tuple[str, Endpoint, list[str]]] = [
        (f"{p}/health", health, ["GET"]),
        (f"{p}/reset", reset, ["POST"]),
        (f"{p}/accounts", create_account, ["POST"]),
        (f"{p}/accounts", list_accounts, ["GET"]),
        (a, get_account, ["GET"]),
        (a, update_account, ["PATCH"]),
        (f"{a}/grant", grant, ["POST"]),
        (f"{a}/revoke", revoke_account, ["POST"]),
        (f"{a}/password-change", password_change, ["POST"]),
        (f"{a}/reply", reply, ["POST"]),
        (f"{a}/send", send_new, ["POST"]),
        (f"{a}/messages", list_messages, ["GET"]),
        (f"{a}/messages", insert_message, ["POST"]),
        (f"{a}/messages/{{id}}", get_message, ["GET"]),
        (f"{a}/messages/{{id}}", delete_message, ["DELETE"]),
        (f"{a}/messages/{{id}}/labels", modify_labels, ["POST"]),
        (f"{a}/messages/{{id}}/touch", touch_message, ["POST"]),
        (f"{a}/expire-history", expire_history, ["POST"]),
        (f"{p}/tokens/revoke", revoke_token, ["POST"]),
        (f"{p}/clock", clock, ["GET", "POST"]),
        (f"{p}/faults", add_fault, ["POST"]),
        (f"{p}/faults", list_faults, ["GET"]),
        (f"{p}/faults", clear_faults, ["DELETE"]),
        (f"{p}/push", push_settings, ["GET", "PUT"]),
        (f"{p}/push/notifications", push_notifications, ["GET"]),
        (f"{p}/push/faults", push_fault, ["POST"]),
        (f"{p}/push/token", push_token, ["POST"]),
        (f"{p}/topics", topics, ["GET", "PUT"]),
        (f"{p}/keys", keys_state, ["GET"]),
        (f"{p}/keys/rotate", rotate_key, ["POST"]),
        (f"{p}/keys/activate", activate_key, ["POST"]),
        (f"{p}/keys/retire", retire_key, ["POST"]),
        (f"{p}/consent", consent, ["GET", "PUT"]),
        (f"{p}/settings", settings, ["GET", "PUT"]),
        (f"{p}/attachments/expire", expire_attachments, ["POST"]),
        (f"{p}/calls", calls, ["GET", "DELETE"]),
        (f"{p}/stats", stats, ["GET"]),
        (f"{p}/outgoing", outgoing, ["GET"]),
    ]
    return [Route(path, _endpoint(handler), methods=methods) for path, handler, methods in table]

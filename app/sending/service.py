"""Sending, phase one: turn a request into a `queued` message row (no network here).

A send runs in two phases so that the row is durable before anything leaves:

1. `queue_message` (this module, flush-only like every service) validates, renders,
   picks the route and the threading headers, and adds the `queued` row.
2. The router commits, then `app.sending.delivery.deliver_message` does the network
   work as a job with its own short units of work, and the row ends `sent` or `failed`.

The row alone holds everything delivery needs (addresses, bodies, Message-ID,
In-Reply-To, References), so the reconciler can finish a send after a crash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.db import utcnow
from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.mail.addresses import MailInputError, parse_address
from app.mail.compose import build_message
from app.mail.conversation import build_references, make_message_id, reply_subject
from app.mail.html_text import html_to_text
from app.mail.sanitize import sanitize_html
from app.mailboxes.models import Mailbox, MailboxStatus
from app.mailboxes.repository import MailboxRepository
from app.pagination import decode_cursor
from app.sending.repository import SendingRepository
from app.sending.schemas import SendRequest
from app.templates import service as templates
from app.threads.models import Direction, Message, MessageStatus, SentVia, Thread

__all__ = ["Queued", "list_outbox", "queue_message", "request_fingerprint"]

# Used only when no From address is known at all; the send then fails for want of a
# sender, but its row still needs a well-formed Message-ID, and the request's own
# parts still need checking against some valid From.
_FALLBACK_ID_DOMAIN = "leadmail.invalid"
_PLACEHOLDER_FROM = "sender@example.com"


@dataclass(frozen=True, slots=True)
class Queued:
    message: Message
    replayed: bool  # an Idempotency-Key retry: nothing new was queued


@dataclass(frozen=True, slots=True)
class _Content:
    subject: str
    body_text: str | None
    body_html: str | None


def request_fingerprint(principal: Principal, lead_id: str, request: SendRequest) -> str:
    """What an Idempotency-Key is bound to: the caller, the lead and the whole body."""
    canonical = json.dumps(
        {
            "org": principal.org_id,
            "user": principal.user_id,
            "lead": lead_id,
            "body": request.model_dump(mode="json"),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def queue_message(
    session: AsyncSession,
    principal: Principal,
    lead_id: str,
    request: SendRequest,
    *,
    default_from: str | None,
    idempotency_key: str | None = None,
) -> Queued:
    """Validate and add the `queued` row (flush only); `default_from` is the default
    sender's address, None when there is none."""
    repository = SendingRepository(session)
    fingerprint = request_fingerprint(principal, lead_id, request)
    if idempotency_key is not None:
        existing = await repository.get_by_idempotency_key(principal.org_id, idempotency_key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                raise Conflict("this Idempotency-Key was already used with another request")
            return Queued(existing, replayed=True)

    thread: Thread | None = None
    if request.thread_id is not None:
        thread = await repository.get_thread(principal.org_id, lead_id, request.thread_id)
        if thread is None:
            raise NotFound(f"thread {request.thread_id} not found for lead {lead_id}")
    content = await _content(session, principal, request, thread)
    mailbox, own_mailbox = await _mailboxes(session, principal, request.mailbox_id)

    use_gmail = mailbox is not None and mailbox.status == MailboxStatus.ACTIVE
    if use_gmail:
        assert mailbox is not None
        from_address: str | None = mailbox.email_address
        route = SentVia.GMAIL
    else:
        from_address = default_from
        route = SentVia.DEFAULT
    # Replies to a default-sender mail go to the rep: their Gmail address if they ever
    # linked one (that is what sync watches), else the address in their token.
    rep_address = _usable_address(
        (own_mailbox.email_address if own_mailbox else None) or principal.email
    )
    from_name = _display_name(principal.name or (own_mailbox.user_name if own_mailbox else None))

    in_reply_to: str | None = None
    references: list[str] = []
    if thread is not None:
        in_reply_to, references = await _threading(repository, thread)

    domain = from_address.rpartition("@")[2].lower() if from_address else _FALLBACK_ID_DOMAIN
    message = Message(
        org_id=principal.org_id,
        lead_id=lead_id,
        mailbox_id=mailbox.id if use_gmail and mailbox is not None else None,
        user_id=principal.user_id,
        direction=Direction.OUTBOUND,
        status=MessageStatus.QUEUED,
        sent_via=route,
        from_address=from_address,
        from_name=from_name,
        # Stored for both routes; only the default route writes it as a Reply-To header.
        reply_to=rep_address,
        to=request.to,
        cc=request.cc,
        bcc=request.bcc,
        subject=content.subject,
        body_text=content.body_text,
        body_html=content.body_html,
        rfc822_message_id=make_message_id(domain),
        in_reply_to=in_reply_to,
        references=references,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        template_id=request.template_id,
        attempts=0,
        attachments=[],
    )
    _check_composable(message)

    now = utcnow()
    if thread is None:
        thread = Thread(
            org_id=principal.org_id,
            lead_id=lead_id,
            mailbox_id=message.mailbox_id,
            subject=content.subject,
            sent_via=route,
            created_by=principal.user_id,
            message_count=0,
            created_at=now,
        )
        session.add(thread)
        await session.flush()
    thread.message_count = (thread.message_count or 0) + 1
    thread.last_message_at = now
    message.thread_id = thread.id
    message.created_at = now
    await repository.add(message)
    return Queued(message, replayed=False)


async def list_outbox(
    session: AsyncSession,
    principal: Principal,
    *,
    scope: str,
    status: str | None,
    mailbox_id: str | None,
    limit: int,
    cursor: str | None,
) -> list[Message]:
    """Up to `limit` outbound messages, newest first (pass `limit + 1` to learn if more)."""
    after = decode_cursor(cursor) if cursor else None
    return await SendingRepository(session).outbox(
        principal.org_id,
        user_id=principal.user_id if scope == "mine" else None,
        status=status,
        mailbox_id=mailbox_id,
        limit=limit,
        after=after,
    )


async def _content(
    session: AsyncSession, principal: Principal, request: SendRequest, thread: Thread | None
) -> _Content:
    if request.template_id is not None:
        template = await templates.get_template(session, principal, request.template_id)
        rendered = templates.render(template, request.variables or {})
        subject, body_text, body_html = (
            rendered.subject,
            rendered.body_text,
            rendered.body_html,
        )
    else:
        subject, body_text, body_html = request.subject or "", request.body_text, request.body_html
    if request.subject:
        subject = request.subject
    elif thread is not None:
        # A changed subject splits the conversation in Gmail (GOOGLE.md §2.3) and in
        # Outlook (§7.3), so a reply keeps the thread's, template or not.
        subject = reply_subject(thread.subject or "")
    if not subject.strip():
        raise InvalidInput("the message has an empty subject")
    if body_html:
        # What is stored is what was sent, and what the CRM later shows: both sanitised.
        body_html = sanitize_html(body_html)
        if not body_text:
            body_text = html_to_text(body_html)
    return _Content(subject=subject, body_text=body_text, body_html=body_html or None)


async def _mailboxes(
    session: AsyncSession, principal: Principal, mailbox_id: str | None
) -> tuple[Mailbox | None, Mailbox | None]:
    """The mailbox to send from (any status) and the caller's own one."""
    repository = MailboxRepository(session)
    own = await repository.get_for_user(principal.org_id, principal.user_id)
    if mailbox_id is None:
        return own, own
    chosen = await repository.get(principal.org_id, mailbox_id)
    if chosen is None:
        raise NotFound(f"mailbox {mailbox_id} not found")
    if chosen.user_id != principal.user_id:
        # Sending from a colleague's Gmail would put words in their mouth.
        raise Forbidden("you can only send from your own mailbox")
    return chosen, chosen


async def _threading(repository: SendingRepository, thread: Thread) -> tuple[str | None, list[str]]:
    """In-Reply-To and References for a reply to the thread's latest message."""
    conversation = await repository.conversation(thread.id)
    if not conversation:
        return None, []
    parent = conversation[-1]
    assert parent.rfc822_message_id is not None
    ancestors = list(parent.references or [])
    if not ancestors and not parent.in_reply_to:
        # A parent stored without its own chain (e.g. an inbound mail whose client sent
        # none): the conversation as we know it stands in for it.
        ancestors = [m.rfc822_message_id for m in conversation[:-1] if m.rfc822_message_id]
    references = build_references(
        ancestors,
        parent.rfc822_message_id,
        parent_in_reply_to=[parent.in_reply_to] if parent.in_reply_to else [],
    )
    return parent.rfc822_message_id, references


def _usable_address(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(parse_address("reply_to", value))
    except MailInputError:
        return None


def _display_name(name: str | None) -> str | None:
    # The name comes from the bearer token, not from this request: a line break in it
    # is tidied away rather than refused.
    if not name:
        return None
    return " ".join(name.split()) or None


def _check_composable(message: Message) -> None:
    """Build the MIME once now, so that anything unsendable is a 422 and not a failed row."""
    try:
        build_message(
            from_address=message.from_address or _PLACEHOLDER_FROM,
            from_name=message.from_name,
            to=message.to,
            cc=message.cc,
            bcc=message.bcc,
            subject=message.subject,
            body_text=message.body_text,
            body_html=message.body_html,
            message_id=message.rfc822_message_id or "",
            reply_to=message.reply_to,
            in_reply_to=message.in_reply_to,
            references=message.references,
        )
    except MailInputError as exc:
        raise InvalidInput(str(exc)) from exc

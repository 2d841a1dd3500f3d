"""The JSON shapes of conversations and their messages (CONTRACT.md: Thread, Message)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.threads.models import Message, Thread


class AttachmentOut(BaseModel):
    filename: str
    mime_type: str
    size: int

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> AttachmentOut:
        return cls(
            filename=str(stored.get("filename") or ""),
            mime_type=str(stored.get("mime_type") or "application/octet-stream"),
            size=int(stored.get("size") or 0),
        )


class MessageOut(BaseModel):
    """One message, sent or received. Shared by the send response, the outbox and threads."""

    id: str
    thread_id: str | None
    lead_id: str
    direction: Literal["outbound", "inbound"]
    status: Literal["queued", "sent", "failed", "received"]
    sent_via: Literal["gmail", "default"] | None
    from_address: str | None
    to: list[str]
    cc: list[str]
    subject: str
    body_text: str | None
    body_html: str | None
    reply_text: str | None
    created_at: datetime
    sent_at: datetime | None
    received_at: datetime | None
    gmail_message_id: str | None
    gmail_thread_id: str | None
    rfc822_message_id: str | None
    attachments: list[AttachmentOut]
    error: str | None
    # Beyond the contract: why a message from a thread the service did not start is on
    # the lead (MATCH_REPLIES_BY_REFERENCES): "in_reply_to" or "references".
    match_reason: str | None = None

    @classmethod
    def from_model(cls, message: Message) -> MessageOut:
        return cls(
            id=message.id,
            thread_id=message.thread_id,
            lead_id=message.lead_id,
            direction=message.direction,
            status=message.status,
            sent_via=message.sent_via,
            from_address=message.from_address,
            to=list(message.to or []),
            cc=list(message.cc or []),
            subject=message.subject or "",
            body_text=message.body_text,
            body_html=message.body_html,
            reply_text=message.reply_text,
            created_at=message.created_at,
            sent_at=message.sent_at,
            received_at=message.received_at,
            gmail_message_id=message.gmail_message_id,
            gmail_thread_id=message.gmail_thread_id,
            rfc822_message_id=message.rfc822_message_id,
            attachments=[AttachmentOut.from_stored(item) for item in message.attachments or []],
            error=message.error,
            match_reason=message.match_reason,
        )


class ThreadOut(BaseModel):
    """A conversation with a lead; `messages` oldest first."""

    id: str
    lead_id: str
    mailbox_id: str | None
    subject: str
    sent_via: Literal["gmail", "default"] | None
    gmail_thread_id: str | None
    created_at: datetime
    last_message_at: datetime
    message_count: int
    messages: list[MessageOut]

    @classmethod
    def from_model(cls, thread: Thread, messages: Sequence[Message]) -> ThreadOut:
        return cls(
            id=thread.id,
            lead_id=thread.lead_id,
            mailbox_id=thread.mailbox_id,
            subject=thread.subject or "",
            sent_via=thread.sent_via,
            gmail_thread_id=thread.gmail_thread_id,
            created_at=thread.created_at,
            last_message_at=thread.last_message_at,
            message_count=thread.message_count,
            messages=[MessageOut.from_model(message) for message in messages],
        )

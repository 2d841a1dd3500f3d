"""Conversations with a lead and their messages, in both directions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id, utcnow


class Direction:
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class MessageStatus:
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    RECEIVED = "received"


class SentVia:
    GMAIL = "gmail"
    DEFAULT = "default"


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (
        # A Gmail thread belongs to one of our threads per mailbox: ingestion keys on it.
        UniqueConstraint("mailbox_id", "gmail_thread_id"),
        Index(None, "org_id", "lead_id", "last_message_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(255))
    lead_id: Mapped[str] = mapped_column(String(255))
    mailbox_id: Mapped[str | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    gmail_thread_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text, default="")
    sent_via: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(255))
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "gmail_message_id"),
        UniqueConstraint("org_id", "idempotency_key"),
        Index(None, "thread_id", "created_at"),
        # The outbox: the caller's own, or the whole organization's, newest first.
        Index(None, "org_id", "user_id", "direction", "created_at"),
        Index(None, "org_id", "direction", "created_at"),
        Index(None, "status", "created_at"),
        Index(None, "org_id", "rfc822_message_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(255))
    thread_id: Mapped[str | None] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    lead_id: Mapped[str] = mapped_column(String(255))
    mailbox_id: Mapped[str | None] = mapped_column(ForeignKey("mailboxes.id", ondelete="SET NULL"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    direction: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    sent_via: Mapped[str | None] = mapped_column(String(16))

    from_address: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(255))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    to: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    bcc: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    reply_text: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    gmail_message_id: Mapped[str | None] = mapped_column(String(64))
    gmail_thread_id: Mapped[str | None] = mapped_column(String(64))
    rfc822_message_id: Mapped[str | None] = mapped_column(String(998))
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    references: Mapped[list[str]] = mapped_column(JSON, default=list)
    match_reason: Mapped[str | None] = mapped_column(String(64))

    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    template_id: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

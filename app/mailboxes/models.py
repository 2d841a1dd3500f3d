from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id, utcnow


class MailboxStatus:
    ACTIVE = "active"
    DISCONNECTED = "disconnected"


class Mailbox(Base):
    """A linked Gmail account: one per organization and address."""

    __tablename__ = "mailboxes"
    __table_args__ = (
        UniqueConstraint("org_id", "email_address"),
        # Pub/Sub notifications name only the address, across organizations.
        Index(None, "email_address"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    user_name: Mapped[str | None] = mapped_column(String(255))
    email_address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default=MailboxStatus.ACTIVE)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    granted_scopes: Mapped[str] = mapped_column(Text, default="")

    history_cursor: Mapped[int | None] = mapped_column(BigInteger)
    pending_history_id: Mapped[int | None] = mapped_column(BigInteger)
    sync_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sync_error: Mapped[str | None] = mapped_column(Text)
    recovered_messages: Mapped[int] = mapped_column(Integer, default=0)
    last_recovery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    watch_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    watch_renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_push_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disconnected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disconnect_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OAuthState(Base):
    """A pending consent: single use, short-lived, bound to the user who asked for it."""

    __tablename__ = "oauth_states"

    # The state token itself is never stored; its SHA-256 is the key.
    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    user_email: Mapped[str | None] = mapped_column(String(320))
    user_name: Mapped[str | None] = mapped_column(String(255))
    code_verifier: Mapped[str] = mapped_column(String(128))
    return_url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

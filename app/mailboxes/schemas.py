from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    return_url: str = Field(
        min_length=1,
        max_length=2048,
        description="Where the browser goes when linking ends; its origin must be listed "
        "in ALLOWED_RETURN_ORIGINS.",
    )


class ConnectResponse(BaseModel):
    authorization_url: str


class MailboxOut(BaseModel):
    """A linked Gmail account and its sync health; never any token."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    email_address: str
    user_id: str
    status: Literal["active", "disconnected"]
    connected_at: datetime
    disconnected_at: datetime | None
    disconnect_reason: str | None
    watch_expires_at: datetime | None
    last_push_at: datetime | None
    last_synced_at: datetime | None
    # Beyond the contract's fields, so the frontend can show why mail is late.
    sync_error: str | None = None
    recovered_messages: int = 0
    last_recovery_at: datetime | None = None

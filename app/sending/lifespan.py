"""What the sending capability adds to the app's lifespan: the default sender, checked
once at startup, and the periodic reconciliation of interrupted sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from app.config import Settings
from app.sending.delivery import Delivery, default_sender_from, delivery_for
from app.sending.reconcile import reconciler_running


@asynccontextmanager
async def sending_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # A malformed DEFAULT_SMTP_URL stops the start instead of failing every fallback.
    app.state.default_sender = default_sender_from(settings)
    if not settings.background_duties:
        yield
        return

    def current() -> Delivery | None:
        # Mailbox access is set up by another part of the lifespan; until then, wait.
        if getattr(app.state, "mailbox_access", None) is None:
            return None
        return delivery_for(app.state)

    async with reconciler_running(
        current,
        interval=settings.send_reconcile_interval_seconds,
        stale_after=timedelta(seconds=settings.send_stale_after_seconds),
    ):
        yield

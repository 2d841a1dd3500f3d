"""What the sending capability adds to the app's lifespan: the default sender, checked
once at startup, and the periodic reconciliation of interrupted sends."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from app.config import Settings
from app.sending.delivery import Delivery, default_sender_from, delivery_for
from app.sending.reconcile import reconciler_running

logger = logging.getLogger("leadmail.sending")


@asynccontextmanager
async def sending_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        app.state.default_sender = default_sender_from(settings)
    except ValueError as exc:
        # Loud, but not fatal: Gmail sends work without it; a send that needs the
        # default sender fails (stored, 502) saying none is configured.
        logger.error("sending.default_sender.misconfigured", extra={"error": str(exc)})
        app.state.default_sender = None
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

"""Wiring of the push intake and the sync engine into the service's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings
from app.google import PushTokenVerifier
from app.sync.engine import SyncEngine
from app.sync.intake import NotificationRecorder
from app.sync.webhook import PushReceiver, RememberingVerifier

logger = logging.getLogger("leadmail.sync")


@asynccontextmanager
async def sync_runtime(app: FastAPI) -> AsyncIterator[None]:
    """Sets `app.state.push_receiver` and `app.state.sync_engine` (None without
    `app.state.mailbox_access`); the engine runs in the background when
    `background_duties` is on."""
    settings: Settings = app.state.settings
    access = getattr(app.state, "mailbox_access", None)
    engine: SyncEngine | None = None
    if access is not None:
        engine = SyncEngine(
            app.state.sessionmaker,
            access,
            match_by_references=settings.match_replies_by_references,
            poll_interval=settings.sync_poll_interval_seconds,
        )
    else:
        logger.warning("sync.engine_unavailable", extra={"reason": "no mailbox access"})
    verifier = None
    if settings.pubsub_push_audience:
        verifier = RememberingVerifier(
            PushTokenVerifier(
                app.state.http,
                settings.google_certs_uri,
                settings.pubsub_push_audience,
                settings.pubsub_push_service_account,
            )
        )
    push_token = (
        settings.pubsub_push_token.get_secret_value() if settings.pubsub_push_token else None
    )
    recorder = NotificationRecorder(
        app.state.engine, on_recorded=engine.wake if engine is not None else None
    )
    app.state.push_receiver = PushReceiver(recorder, verifier, push_token)
    app.state.notification_recorder = recorder  # streaming pull records through it too
    app.state.sync_engine = engine
    if engine is not None and settings.background_duties:
        engine.start()
    try:
        yield
    finally:
        if engine is not None:
            await engine.stop()

"""Streaming pull in the service's lifespan, when ``PUBSUB_SUBSCRIPTION`` is set.

Notifications pulled from the subscription go through the same recorder as the push
webhook (``app.state.notification_recorder``, set by the sync runtime, which must be
entered first), so both transports record, count and wake the sync identically.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings
from app.google.pubsub import GmailNotification
from app.metrics import PUSHES
from app.pubsub.subscriber import Intake, PullSubscriber
from app.sync.intake import NotificationRecorder

__all__ = ["pull_runtime", "recorder_intake"]

logger = logging.getLogger("leadmail.pubsub")


def recorder_intake(recorder: NotificationRecorder) -> Intake:
    """The pull intake: returns once the notification is committed, raises if it is not."""

    async def intake(notification: GmailNotification) -> None:
        result = await recorder.record(notification.email_address, notification.history_id)
        PUSHES.labels(result.outcome.value).inc()

    return intake


@asynccontextmanager
async def pull_runtime(app: FastAPI) -> AsyncIterator[None]:
    """Sets ``app.state.pull_subscriber`` (``None`` without ``PUBSUB_SUBSCRIPTION``)."""
    settings: Settings = app.state.settings
    app.state.pull_subscriber = None
    if not settings.pubsub_subscription:
        yield
        return
    # The client library itself honours PUBSUB_EMULATOR_HOST.
    subscriber = PullSubscriber(
        settings.pubsub_subscription, recorder_intake(app.state.notification_recorder)
    )
    subscriber.start()
    app.state.pull_subscriber = subscriber
    try:
        yield
    finally:
        await subscriber.stop()

"""Gmail → a real Pub/Sub: the sandbox publishes notifications to Google's Pub/Sub emulator.

With ``--pubsub-emulator-host HOST:PORT`` (or ``PUBSUB_EMULATOR_HOST``) the sandbox stops
pushing by itself and does what Gmail does: ``watch`` checks that the topic exists in that
Pub/Sub (a missing one fails the watch with Gmail's own 404), and each notification is
published to the watch's topic with google-cloud-pubsub. Delivery (push with the
production envelope, or streaming pull), retries and acks are then the emulator's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from sandbox.errors import GoogleApiError

__all__ = ["EmulatorPublisher"]

logger = logging.getLogger("sandbox.emulator")

_TOPIC_ID = re.compile(r"^projects/[^/]+/topics/([^/]+)$")
_ADMIN_TIMEOUT = 5.0


class EmulatorPublisher:
    """Publishes Gmail notifications to the Pub/Sub emulator at ``host`` (``HOST:PORT``)."""

    def __init__(self, host: str) -> None:
        self.host = host
        # An explicit insecure channel, as google-cloud-pubsub builds for PUBSUB_EMULATOR_HOST,
        # so the host given on the command line wins over the process environment.
        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(host))
        self._client: Any = pubsub_v1.PublisherClient(transport=transport)

    def check_topic(self, topic: str) -> None:
        """What Gmail's ``watch`` does first: publish rights on an existing topic.

        The emulator has no IAM, so only existence is checked; a short blocking call, as
        ``watch`` is rare.
        """
        prefix = f"Error sending test message to Cloud PubSub {topic} : "
        try:
            self._client.get_topic(request={"topic": topic}, timeout=_ADMIN_TIMEOUT)
        except api_exceptions.NotFound:
            match = _TOPIC_ID.match(topic)
            name = match.group(1) if match else topic
            raise GoogleApiError(
                404, f"{prefix}Resource not found (resource={name}).", "notFound"
            ) from None
        except api_exceptions.GoogleAPICallError as exc:
            logger.warning("sandbox.emulator.unreachable", extra={"error": str(exc)})
            raise GoogleApiError(
                503, "The service is currently unavailable.", "backendError"
            ) from exc

    async def publish(self, topic: str, data: bytes) -> str:
        """Publish ``data`` to ``topic``; the emulator's message id."""
        future = self._client.publish(topic, data)
        message_id: str = await asyncio.wrap_future(future)
        return message_id

    def close(self) -> None:
        self._client.stop()  # flushes any batch still open
        self._client.transport.close()

"""Pub/Sub gRPC clients pointed at Google, or at an emulator on an explicit ``HOST:PORT``.

google-cloud-pubsub switches to an emulator only through the ``PUBSUB_EMULATOR_HOST``
environment variable. Mutating the environment of a running service (or of a test
process) to reach one emulator is a trap, so an explicit host gets an insecure channel
of its own here, exactly as the library would build it; without one, the library's own
rules apply (the variable, else Google with Application Default Credentials).
"""

from __future__ import annotations

import os
import re
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

__all__ = [
    "EMULATOR_HOST_ENV",
    "emulator_host_from_env",
    "publisher_client",
    "subscriber_client",
    "validate_subscription_path",
    "validate_topic_path",
]

EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"

# Google's resource-name rules: a project id, then an id that starts with a letter and
# has 3-255 letters, digits or -_.~+% (https://cloud.google.com/pubsub/docs/pubsub-basics).
_ID = r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}"
_TOPIC = re.compile(rf"^projects/[a-z0-9\-.:]+/topics/{_ID}$")
_SUBSCRIPTION = re.compile(rf"^projects/[a-z0-9\-.:]+/subscriptions/{_ID}$")


def emulator_host_from_env() -> str | None:
    return os.environ.get(EMULATOR_HOST_ENV) or None


def publisher_client(emulator_host: str | None = None) -> Any:
    """A ``pubsub_v1.PublisherClient``; typed ``Any`` because the package ships no types."""
    if emulator_host:
        channel = grpc.insecure_channel(emulator_host)
        return pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))
    return pubsub_v1.PublisherClient()


def subscriber_client(emulator_host: str | None = None) -> Any:
    """A ``pubsub_v1.SubscriberClient`` (streaming pull and subscription admin)."""
    if emulator_host:
        channel = grpc.insecure_channel(emulator_host)
        return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    return pubsub_v1.SubscriberClient()


def validate_topic_path(path: str) -> str:
    if not _TOPIC.match(path):
        raise ValueError(f"{path!r} is not a topic path like projects/<project>/topics/<topic>")
    return path


def validate_subscription_path(path: str) -> str:
    if not _SUBSCRIPTION.match(path):
        raise ValueError(
            f"{path!r} is not a subscription path like projects/<project>/subscriptions/<name>"
        )
    return path

"""A real Pub/Sub emulator for the whole run; tests that need it skip, saying why, without it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.pubsub.clients import publisher_client, subscriber_client
from tests.harness import live_service, live_settings, sandbox
from tests.pubsub.emulator import EmulatorUnavailable, run_emulator
from tests.support import unique

__all__ = ["live_service", "live_settings", "sandbox"]  # the e2e harness's fixtures


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a running Pub/Sub emulator."""
    try:
        with run_emulator() as host:
            yield host
    except EmulatorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def project() -> str:
    """A project of its own per test, so tests never see each other's topics."""
    return f"projects/{unique('proj')}"


@pytest.fixture
def publisher(pubsub_emulator: str) -> Iterator[Any]:
    client = publisher_client(pubsub_emulator)
    yield client
    client.transport.close()


@pytest.fixture
def subscriber(pubsub_emulator: str) -> Iterator[Any]:
    client = subscriber_client(pubsub_emulator)
    yield client
    client.close()

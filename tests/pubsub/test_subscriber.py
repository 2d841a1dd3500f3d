"""PullSubscriber against Google's Pub/Sub emulator: ack, nack, malformed data, stopping.

"Acked" is observed through Pub/Sub itself: with flow control at one message, the next
message is only delivered once the previous one was acked or nacked, and a nacked one
comes back at once (these subscriptions have no retry policy). So "the next message
arrived and this one never came back" can only mean it was acked.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.google.pubsub import GmailNotification
from app.pubsub.provisioning import SetupSpec, SubscriptionSpec, provision
from app.pubsub.subscriber import PullSubscriber

QUIET_SECONDS = 0.75  # long enough for an immediate redelivery to show up on loopback


class Intake:
    """Records what the service's intake would; ``fail`` decides per call whether to raise."""

    def __init__(self) -> None:
        self.seen: list[GmailNotification] = []
        self.taken: list[GmailNotification] = []
        self.fail: Callable[[GmailNotification, int], Awaitable[bool]] | None = None
        self._changed = asyncio.Event()

    async def __call__(self, notification: GmailNotification) -> None:
        self.seen.append(notification)
        attempt = sum(1 for n in self.seen if n.message_id == notification.message_id)
        self._changed.set()
        if self.fail is not None and await self.fail(notification, attempt):
            raise RuntimeError("the database is down")
        self.taken.append(notification)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def emails(self, notifications: list[GmailNotification]) -> list[str]:
        return [n.email_address for n in notifications]


def pushes(outcome: str) -> float:
    return REGISTRY.get_sample_value("leadmail_pushes_total", {"outcome": outcome}) or 0.0


def notification_bytes(email: str, history_id: int | str) -> bytes:
    return json.dumps({"emailAddress": email, "historyId": history_id}).encode()


@pytest.fixture
def topic(project: str, publisher: Any, subscriber: Any) -> str:
    spec = SetupSpec(
        topic=f"{project}/topics/gmail",
        subscription=SubscriptionSpec(name=f"{project}/subscriptions/leadmail", retry=None),
    )
    provision(spec, publisher, subscriber, emulator=True)
    return spec.topic


@pytest.fixture
def subscription(project: str, topic: str) -> str:
    return f"{project}/subscriptions/leadmail"


@pytest.fixture
def intake() -> Intake:
    return Intake()


@pytest.fixture
async def started(
    subscription: str, intake: Intake, pubsub_emulator: str
) -> AsyncIterator[PullSubscriber]:
    puller = PullSubscriber(subscription, intake, emulator_host=pubsub_emulator, max_messages=1)
    puller.start()
    yield puller
    await puller.stop()


def publish(publisher: Any, topic: str, *payloads: bytes) -> list[str]:
    """Publish in order, each after the previous one is stored; their message ids."""
    return [publisher.publish(topic, payload).result(timeout=10) for payload in payloads]


async def test_a_notification_reaches_the_intake_and_is_acked(
    started: PullSubscriber, intake: Intake, publisher: Any, topic: str
) -> None:
    before = datetime.now(UTC)
    ids = publish(
        publisher,
        topic,
        notification_bytes("rep@acme.test", "9876543210"),
        notification_bytes("other@acme.test", 2**60 + 1),
    )

    await intake.wait_for(lambda: len(intake.taken) == 2)
    await asyncio.sleep(QUIET_SECONDS)

    assert intake.emails(intake.seen) == ["rep@acme.test", "other@acme.test"]  # once each
    first, second = intake.taken
    assert (first.history_id, second.history_id) == (9876543210, 2**60 + 1)
    assert [first.message_id, second.message_id] == ids
    assert first.publish_time is not None
    assert first.publish_time.tzinfo is not None
    assert before - timedelta(seconds=5) <= first.publish_time <= datetime.now(UTC)


async def test_a_failed_intake_nacks_and_the_notification_comes_back(
    started: PullSubscriber, intake: Intake, publisher: Any, topic: str
) -> None:
    async def fail_first_attempt(_: GmailNotification, attempt: int) -> bool:
        return attempt == 1

    intake.fail = fail_first_attempt
    unavailable = pushes("unavailable")

    publish(publisher, topic, notification_bytes("rep@acme.test", 10))
    await intake.wait_for(lambda: len(intake.taken) == 1)
    await asyncio.sleep(QUIET_SECONDS)

    assert intake.emails(intake.seen) == ["rep@acme.test", "rep@acme.test"]
    assert intake.emails(intake.taken) == ["rep@acme.test"]
    assert pushes("unavailable") == unavailable + 1


async def test_an_intake_that_hangs_is_nacked_after_its_timeout(
    subscription: str, intake: Intake, pubsub_emulator: str, publisher: Any, topic: str
) -> None:
    async def hang_first_attempt(_: GmailNotification, attempt: int) -> bool:
        if attempt == 1:
            await asyncio.sleep(30)
        return False

    intake.fail = hang_first_attempt
    puller = PullSubscriber(
        subscription, intake, emulator_host=pubsub_emulator, intake_timeout_seconds=0.3
    )
    puller.start()
    try:
        publish(publisher, topic, notification_bytes("rep@acme.test", 11))
        await intake.wait_for(lambda: len(intake.taken) == 1)
    finally:
        await puller.stop()

    assert len(intake.seen) == 2


async def test_malformed_data_is_acked_and_counted_never_redelivered(
    started: PullSubscriber, intake: Intake, publisher: Any, topic: str
) -> None:
    undecodable = pushes("undecodable")

    publish(
        publisher,
        topic,
        b"not json at all",
        json.dumps({"historyId": 5}).encode(),  # no emailAddress
        notification_bytes("rep@acme.test", 12),
    )
    await intake.wait_for(lambda: len(intake.taken) == 1)
    await asyncio.sleep(QUIET_SECONDS)

    # One message in flight at a time: the good one arrives only after both bad ones
    # were settled, and an ack is the only settlement that does not bring them back.
    assert pushes("undecodable") == undecodable + 2
    assert intake.emails(intake.seen) == ["rep@acme.test"]


async def test_stop_lets_the_intake_in_flight_finish_then_closes_everything(
    subscription: str, intake: Intake, pubsub_emulator: str, publisher: Any, topic: str
) -> None:
    release = asyncio.Event()

    async def wait_for_release(_: GmailNotification, attempt: int) -> bool:
        await release.wait()
        return False

    intake.fail = wait_for_release
    threads_before = set(threading.enumerate())
    puller = PullSubscriber(subscription, intake, emulator_host=pubsub_emulator)
    puller.start()
    publish(publisher, topic, notification_bytes("rep@acme.test", 13))
    await intake.wait_for(lambda: len(intake.seen) == 1)

    stopping = asyncio.create_task(puller.stop())
    await asyncio.sleep(0.3)
    assert not stopping.done()  # waiting for the intake, whose ack must still go out
    release.set()
    await asyncio.wait_for(stopping, timeout=15)

    assert intake.emails(intake.taken) == ["rep@acme.test"]
    assert not puller.running
    publish(publisher, topic, notification_bytes("late@acme.test", 14))
    await asyncio.sleep(QUIET_SECONDS)
    assert intake.emails(intake.seen) == ["rep@acme.test"]
    await puller.stop()  # idempotent
    assert await _threads_settle(threads_before)


async def _threads_settle(before: set[threading.Thread], timeout: float = 5.0) -> bool:
    """The library's threads (stream consumer, leaser, heartbeater, ...) are all gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not [t for t in extra if not t.name.startswith("asyncio_")]:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_stream_that_fails_is_reopened(
    project: str,
    intake: Intake,
    pubsub_emulator: str,
    publisher: Any,
    subscriber: Any,
) -> None:
    topic = f"{project}/topics/gmail"
    subscription = f"{project}/subscriptions/late"
    provision(SetupSpec(topic=topic), publisher, subscriber, emulator=True)
    puller = PullSubscriber(
        subscription,
        intake,
        emulator_host=pubsub_emulator,
        min_restart_delay_seconds=0.1,
        max_restart_delay_seconds=0.2,
    )
    puller.start()  # the subscription does not exist yet: the stream fails
    try:
        await asyncio.sleep(0.5)
        assert puller.running
        provision(
            SetupSpec(topic=topic, subscription=SubscriptionSpec(name=subscription)),
            publisher,
            subscriber,
            emulator=True,
        )
        publish(publisher, topic, notification_bytes("rep@acme.test", 15))
        await intake.wait_for(lambda: len(intake.taken) == 1)
    finally:
        await puller.stop()


def test_a_subscription_path_is_checked_up_front(intake: Intake) -> None:
    with pytest.raises(ValueError, match="not a subscription path"):
        PullSubscriber("leadmail", intake)

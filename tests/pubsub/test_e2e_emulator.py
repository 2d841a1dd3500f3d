"""The whole chain with a real Pub/Sub in the middle:

    rep sends (service → sandbox Gmail) → the customer replies in the sandbox
    → the sandbox publishes Gmail's notification to the Pub/Sub emulator's topic
    → a subscription delivers it to the service (streaming pull, or push with ?token=)
    → the sync stores the reply on the lead.

The sandbox runs in its emulator mode, so it never pushes by itself: a reply can only
reach the service through Pub/Sub.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from app.config import Settings
from app.pubsub.provisioning import PushEndpoint, SetupSpec, SubscriptionSpec, provision
from sandbox.testing import RunningSandbox
from tests.harness import start_sandbox, start_service
from tests.support import unique
from tests.sync.flows import Conversation, start_conversation, wait_until

PUSH_TOKEN = "emulator-push-token"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox(pubsub_emulator: str) -> Iterator[RunningSandbox]:
    """A sandbox of this module's own that publishes to the emulator instead of pushing."""
    with start_sandbox(pubsub_emulator_host=pubsub_emulator, push_min_interval=0.0) as google:
        yield google


@pytest.fixture
def topic(sandbox: RunningSandbox) -> str:
    # Gmail only accepts topics of the OAuth client's project: the sandbox's.
    return f"projects/{sandbox.config.project}/topics/{unique('gmail')}"


@pytest.fixture
def live_settings(live_settings: Settings, topic: str) -> Settings:
    return live_settings.model_copy(
        update={
            "pubsub_topic": topic,
            "background_duties": True,
            "sync_poll_interval_seconds": 0.2,
        }
    )


def pushes(outcome: str) -> float:
    return REGISTRY.get_sample_value("leadmail_pushes_total", {"outcome": outcome}) or 0.0


async def reply_travels(talk: Conversation, sandbox: RunningSandbox) -> dict[str, Any]:
    """The customer replies; the reply as the service shows it on the lead."""
    reply = talk.reply("Thanks, sounds good.\nLena")
    messages = await talk.wait_for_messages(2, timeout=30)
    theirs = messages[1]
    assert theirs["direction"] == "inbound"
    assert theirs["from_address"] == talk.customer
    assert theirs["reply_text"] == "Thanks, sounds good.\nLena"
    assert theirs["gmail_message_id"] == reply["delivered"][0]["id"]

    async def all_published() -> list[dict[str, Any]] | None:
        # A later change (our own sync reading the reply) may still be on its way out.
        notifications = sandbox.notifications(talk.rep)
        done = notifications and all(n["state"] == "published" for n in notifications)
        return notifications if done else None

    notifications = await wait_until(all_published, timeout=10)
    assert all(not n["deliveries"] for n in notifications)  # the sandbox pushed nothing itself
    return theirs


async def test_a_reply_travels_through_a_pull_subscription(
    live_settings: Settings,
    sandbox: RunningSandbox,
    topic: str,
    publisher: Any,
    subscriber: Any,
    pubsub_emulator: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscription = f"{topic.replace('/topics/', '/subscriptions/')}-pull"
    provision(
        SetupSpec(topic=topic, subscription=SubscriptionSpec(name=subscription, retry=None)),
        publisher,
        subscriber,
        emulator=True,
    )
    # The service reaches the emulator the way production code does: the library reads it.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    settings = live_settings.model_copy(update={"pubsub_subscription": subscription})
    recorded = pushes("recorded")

    async with start_service(settings) as service:
        assert await service.run(_pulling(service.app)) == subscription
        talk = await start_conversation(service, sandbox)
        await reply_travels(talk, sandbox)
        mailbox = await talk.mailbox()

    assert mailbox["last_push_at"] is not None
    assert pushes("recorded") > recorded


async def _pulling(app: Any) -> str | None:
    subscriber = app.state.pull_subscriber
    return subscriber.subscription if subscriber is not None and subscriber.running else None


async def test_a_reply_travels_through_a_push_subscription_with_a_query_token(
    live_settings: Settings,
    sandbox: RunningSandbox,
    topic: str,
    publisher: Any,
    subscriber: Any,
) -> None:
    settings = live_settings.model_copy(update={"pubsub_push_token": SecretStr(PUSH_TOKEN)})
    base_url = _base_url(settings)
    subscription = f"{topic.replace('/topics/', '/subscriptions/')}-push"
    provision(
        SetupSpec(
            topic=topic,
            subscription=SubscriptionSpec(
                name=subscription,
                push=PushEndpoint(url=f"{base_url}/v1/webhooks/gmail?token={PUSH_TOKEN}"),
                retry=None,
            ),
        ),
        publisher,
        subscriber,
        emulator=True,
    )

    async with start_service(settings) as service:
        assert service.base_url == base_url
        talk = await start_conversation(service, sandbox)
        await reply_travels(talk, sandbox)
        mailbox = await talk.mailbox()

    assert mailbox["last_push_at"] is not None


async def test_watch_fails_like_gmail_when_the_topic_is_missing(sandbox: RunningSandbox) -> None:
    rep = f"{unique('rep')}@example.com"
    sandbox.create_account(rep)
    grant = sandbox.grant(rep, ["https://www.googleapis.com/auth/gmail.readonly"])
    missing = f"projects/{sandbox.config.project}/topics/{unique('absent')}"

    async with httpx.AsyncClient(base_url=sandbox.base_url, trust_env=False) as http:
        response = await http.post(
            "/gmail/v1/users/me/watch",
            json={"topicName": missing},
            headers={"Authorization": f"Bearer {grant['access_token']}"},
        )

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith(f"Error sending test message to Cloud PubSub {missing}")
    assert not sandbox.notifications(rep)


def _base_url(settings: Settings) -> str:
    parts = urlsplit(settings.oauth_redirect_uri)
    return f"{parts.scheme}://{parts.netloc}"

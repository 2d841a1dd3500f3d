"""Pub/Sub as the distributed queue: two service processes share one pull subscription on
one PostgreSQL database, and every reply is stored exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
from app.pubsub.provisioning import SetupSpec, SubscriptionSpec, provision
from app.threads.models import Direction, Message
from sandbox.testing import RunningSandbox
from tests.conftest import BACKEND, empty_database, run_alembic
from tests.harness import RETURN_ORIGIN, RETURN_URL, consent, start_sandbox, unique_email
from tests.pubsub.processes import ServiceProcess, run_services
from tests.support import JWT_SECRET, bearer, free_port, unique
from tests.sync.flows import wait_until

# Marked `db` by hand: it makes a database of its own, so it runs in the PostgreSQL pass.
pytestmark = [pytest.mark.e2e, pytest.mark.db]
CONVERSATIONS = 4
_PUSH_SAMPLE = re.compile(r'^leadmail_pushes_total\{outcome="([a-z_]+)"\} ([0-9.e+]+)$', re.M)


@pytest.fixture(scope="module")
def sandbox(pubsub_emulator: str) -> Iterator[RunningSandbox]:
    with start_sandbox(pubsub_emulator_host=pubsub_emulator, push_min_interval=0.0) as google:
        yield google


@pytest.fixture
def replica_database(tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: the replicas' background sync must not meet the
    half-made mailboxes other tests leave in the shared one."""
    if BACKEND != "postgres":
        pytest.skip("replicas need PostgreSQL: this runs in the PostgreSQL pass")
    with empty_database(tmp_path) as url:
        run_alembic(url, "upgrade", "head")
        yield url


def replica_env(
    sandbox: RunningSandbox,
    *,
    port: int,
    database_url: str,
    fernet_key: str,
    topic: str,
    subscription: str,
    emulator: str,
) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("PUBSUB_", "GOOGLE_", "GMAIL_"))
    }
    return {
        **inherited,
        **sandbox.env(),
        "DATABASE_URL": database_url,
        "API_JWT_SECRET": JWT_SECRET,
        "TOKEN_ENCRYPTION_KEYS": fernet_key,
        "OAUTH_REDIRECT_URI": f"http://127.0.0.1:{port}/v1/oauth/google/callback",
        "ALLOWED_RETURN_ORIGINS": RETURN_ORIGIN,
        "PUBSUB_TOPIC": topic,
        "PUBSUB_SUBSCRIPTION": subscription,
        "PUBSUB_EMULATOR_HOST": emulator,
        "BACKGROUND_DUTIES": "true",
        "SYNC_POLL_INTERVAL_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }


async def converse(
    http: httpx.AsyncClient, sandbox: RunningSandbox, links: ServiceProcess, sends: ServiceProcess
) -> dict[str, Any]:
    """Link a rep through one replica, send to a lead through the other, get a reply."""
    org, user, rep, customer = unique("org"), unique("user"), unique_email(), unique_email("lead")
    sandbox.create_account(rep)
    headers = bearer(user, org, email=rep)
    started = await http.post(
        f"{links.base_url}/v1/mailboxes/connect", json={"return_url": RETURN_URL}, headers=headers
    )
    assert started.status_code == 200, started.text
    trip = await consent(started.json()["authorization_url"])
    assert trip.result.get("status") == "connected", trip.result
    sent = await http.post(
        f"{sends.base_url}/v1/leads/{unique('lead')}/messages",
        json={"to": [customer], "subject": "Our offer", "body_text": "Hi, here it is."},
        headers=headers,
    )
    assert sent.status_code == 201, sent.text
    assert sent.json()["sent_via"] == "gmail"
    reply = sandbox.customer_reply(customer, message_id=sent.json()["rfc822_message_id"])
    return {"headers": headers, "thread_id": sent.json()["thread_id"], "reply": reply}


def pushes_taken(service: ServiceProcess) -> float:
    """Notifications this replica took from the subscription, whatever their outcome."""
    return sum(float(value) for _, value in _PUSH_SAMPLE.findall(service.metrics()))


async def test_two_replicas_share_one_subscription_and_store_each_reply_once(
    replica_database: str,
    sandbox: RunningSandbox,
    fernet_key: str,
    pubsub_emulator: str,
    publisher: Any,
    subscriber: Any,
) -> None:
    topic = sandbox.topic(unique("gmail"))
    subscription = topic.replace("/topics/", "/subscriptions/")
    provision(
        SetupSpec(topic=topic, subscription=SubscriptionSpec(name=subscription, retry=None)),
        publisher,
        subscriber,
        emulator=True,
    )
    ports = [free_port(), free_port()]
    envs = [
        (
            port,
            replica_env(
                sandbox,
                port=port,
                database_url=replica_database,
                fernet_key=fernet_key,
                topic=topic,
                subscription=subscription,
                emulator=pubsub_emulator,
            ),
        )
        for port in ports
    ]

    with run_services(envs) as (first, second):
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            talks = await asyncio.gather(
                *(
                    converse(http, sandbox, *((first, second) if i % 2 else (second, first)))
                    for i in range(CONVERSATIONS)
                )
            )

            async def all_replies_shown() -> bool:
                for talk in talks:
                    thread = await http.get(
                        f"{first.base_url}/v1/threads/{talk['thread_id']}", headers=talk["headers"]
                    )
                    assert thread.status_code == 200, thread.text
                    if thread.json()["message_count"] < 2:
                        return False
                return True

            await wait_until(all_replies_shown, timeout=60, interval=0.2)
            await asyncio.sleep(1.0)  # time for any duplicate delivery to do harm
            taken = [pushes_taken(first), pushes_taken(second)]
        for replica in (first, second):
            assert replica.stop() in {0, -signal.SIGTERM}
            log = replica.output()
            assert "pubsub.pull.started" in log, log[-4000:]
            assert "pubsub.pull.stopped" in log, log[-4000:]  # the lifespan shut it down
            assert "Traceback" not in log, log[-4000:]
            assert "Application shutdown complete." in log, log[-4000:]

    reply_ids = [talk["reply"]["delivered"][0]["id"] for talk in talks]
    engine = create_engine(replica_database)
    async with create_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(Message.gmail_message_id, func.count())
            .where(Message.gmail_message_id.in_(reply_ids))
            .group_by(Message.gmail_message_id)
        )
        copies = {gmail_id: count for gmail_id, count in rows.all()}
        inbound = await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.thread_id.in_([t["thread_id"] for t in talks]))
            .where(Message.direction == Direction.INBOUND)
        )
    await engine.dispose()
    assert copies == {reply_id: 1 for reply_id in reply_ids}
    assert inbound == CONVERSATIONS
    # Pub/Sub spreads messages over streaming-pull clients as it likes (the emulator often
    # gives a short run to one stream), so which replica took them is not asserted; that
    # both were pulling from the one subscription is.
    assert sum(taken) >= CONVERSATIONS, taken

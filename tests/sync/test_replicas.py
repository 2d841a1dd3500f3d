"""Nothing is lost across a restart, and several service processes on one database
store each reply exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.mailboxes.models import Mailbox
from app.threads.models import Message
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, start_service
from tests.support import JWT_SECRET, free_port
from tests.sync.factories import push_envelope
from tests.sync.flows import start_conversation, wait_until

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "https://leadmail.test/v1/webhooks/gmail"
UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "app.main:app",
    "--host",
    "127.0.0.1",
    "--log-level",
    "warning",
]


@pytest.fixture(autouse=True)
def prompt_pushes(sandbox: RunningSandbox) -> Iterator[None]:
    sandbox.request("PUT", "/_sandbox/push", {"min_interval": 0.0})
    yield
    sandbox.request("PUT", "/_sandbox/push", {"min_interval": 1.0})


async def pending_and_cursor(
    sessionmaker: async_sessionmaker[AsyncSession], mailbox_id: str
) -> tuple[int | None, int | None]:
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox.pending_history_id, mailbox.history_cursor


async def test_restart_between_push_and_sync_loses_nothing(
    live_service: LiveService,
    live_settings: Settings,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # The first process takes the push and stops before any sync ran (its engine is off).
    talk = await start_conversation(live_service, sandbox)
    gmail_id = talk.reply("Sent while you were restarting.")["delivered"][0]["id"]
    history_id = int(
        next(m for m in sandbox.messages(talk.rep) if m["id"] == gmail_id)["historyId"]
    )

    async def recorded() -> bool:
        pending, _ = await pending_and_cursor(sessionmaker, talk.mailbox_id)
        return (pending or 0) >= history_id

    await wait_until(recorded)
    sandbox.set_push_endpoint(None)  # no new push will come: only the stored one counts

    port = free_port()
    restarted = live_settings.model_copy(
        update={
            "background_duties": True,
            "sync_poll_interval_seconds": 0.2,
            "oauth_redirect_uri": f"http://127.0.0.1:{port}/v1/oauth/google/callback",
        }
    )
    async with start_service(restarted) as second:
        talk.service = second
        messages = await talk.wait_for_messages(2)
    assert messages[1]["gmail_message_id"] == gmail_id
    _, cursor = await pending_and_cursor(sessionmaker, talk.mailbox_id)
    assert cursor is not None and cursor >= history_id


def _process_env(settings: Settings, sandbox: RunningSandbox) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEADMAIL_")}
    env.update(sandbox.env())
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "API_JWT_SECRET": JWT_SECRET,
            "TOKEN_ENCRYPTION_KEYS": ",".join(
                key.get_secret_value() for key in settings.token_encryption_keys
            ),
            "PUBSUB_PUSH_AUDIENCE": AUDIENCE,
            "BACKGROUND_DUTIES": "true",
            "SYNC_POLL_INTERVAL_SECONDS": "0.2",
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


@asynccontextmanager
async def service_processes(env: dict[str, str], count: int) -> AsyncIterator[list[str]]:
    """`count` real `uvicorn app.main:app` processes on free ports."""
    ports = [free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [*UVICORN, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            for url, process in zip(urls, processes, strict=True):

                async def ready(url: str = url, process: subprocess.Popen[bytes] = process) -> bool:
                    assert process.poll() is None, "a service process exited"
                    try:
                        return (await http.get(f"{url}/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_until(ready, timeout=30.0, interval=0.1)
        yield urls
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_two_processes_on_one_database_store_each_reply_once(
    live_service: LiveService,
    live_settings: Settings,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    talk = await start_conversation(live_service, sandbox)
    sandbox.set_push_endpoint(None)  # this test delivers the pushes itself
    token = sandbox.push_token(audience=AUDIENCE)

    async with service_processes(_process_env(live_settings, sandbox), 2) as urls:
        replies = []
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            for index in range(6):
                gmail_id = talk.reply(f"Answer {index}.")["delivered"][0]["id"]
                history_id = int(
                    next(m for m in sandbox.messages(talk.rep) if m["id"] == gmail_id)["historyId"]
                )
                replies.append(gmail_id)
                # Each push to one process, and every other one redelivered to the other.
                targets = [urls[index % 2]] + ([urls[(index + 1) % 2]] if index % 2 else [])
                answers = await asyncio.gather(
                    *(
                        http.post(
                            f"{url}/v1/webhooks/gmail",
                            json=push_envelope(talk.rep, history_id),
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        for url in targets
                    )
                )
                assert {answer.status_code for answer in answers} == {204}

        messages = await talk.wait_for_messages(7, timeout=20.0)

    assert [m["gmail_message_id"] for m in messages[1:]] == replies
    async with sessionmaker() as session:
        copies = await session.scalar(
            select(func.count()).select_from(Message).where(Message.gmail_message_id.in_(replies))
        )
    assert copies == len(replies)

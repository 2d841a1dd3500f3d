"""A conversation between a rep (linked Gmail) and a lead, driven through the real service
and the sandbox, and helpers to wait for what sync makes visible."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sandbox.testing import RunningSandbox
from tests.harness import LiveService, link_mailbox, service_settings, start_service, unique_email
from tests.support import bearer, unique

T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class Conversation:
    service: LiveService
    sandbox: RunningSandbox
    org_id: str
    user_id: str
    rep: str
    customer: str
    lead_id: str
    mailbox_id: str
    sent: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.user_id, self.org_id, email=self.rep)

    @property
    def thread_id(self) -> str:
        return str(self.sent["thread_id"])

    @property
    def gmail_thread_id(self) -> str:
        return str(self.sent["gmail_thread_id"])

    async def thread(self, thread_id: str | None = None) -> dict[str, Any]:
        response = await self.service.http.get(
            f"/v1/threads/{thread_id or self.thread_id}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def lead_threads(self) -> list[dict[str, Any]]:
        response = await self.service.http.get(
            f"/v1/leads/{self.lead_id}/threads", headers=self.headers
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def mailbox(self) -> dict[str, Any]:
        response = await self.service.http.get(
            f"/v1/mailboxes/{self.mailbox_id}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def quiet(self, load_cursor: Callable[[], Awaitable[int | None]]) -> None:
        """Wait until every push for this mailbox has been delivered and the sync has
        reached Gmail's current history id: nothing is in flight any more."""

        async def settled() -> bool:
            pending = [
                n
                for n in self.sandbox.notifications(self.rep)
                if n["state"] in ("pending", "retrying", "held")
            ]
            current = int(self.sandbox.account(self.rep)["history_id"])
            cursor = await load_cursor()
            return not pending and cursor is not None and cursor >= current

        await wait_until(settled)

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            messages: list[dict[str, Any]] = (await self.thread())["messages"]
            assert len(messages) <= count, messages
            return messages if len(messages) == count else None

        return await wait_until(enough, timeout)

    def reply(self, text: str = "Thanks, sounds good.", **extra: Any) -> dict[str, Any]:
        """The lead answers our message in its own mail client."""
        return self.sandbox.customer_reply(
            self.customer, message_id=self.sent["rfc822_message_id"], text=text, **extra
        )

    async def send(self, **body: Any) -> dict[str, Any]:
        response = await self.service.http.post(
            f"/v1/leads/{self.lead_id}/messages",
            json={"to": [self.customer], **body},
            headers=self.headers,
        )
        assert response.status_code == 201, response.text
        sent: dict[str, Any] = response.json()
        return sent


async def start_conversation(
    service: LiveService, sandbox: RunningSandbox, *, subject: str = "Our offer"
) -> Conversation:
    """A linked rep mailbox and a first mail from the rep to a new lead, sent through
    the service (so its Gmail thread is a known thread of the lead)."""
    org_id, user_id = unique("org"), unique("user")
    rep, customer = unique_email("rep"), unique_email("lead")
    mailbox = await link_mailbox(service, sandbox, org_id=org_id, user_id=user_id, email=rep)
    conversation = Conversation(
        service, sandbox, org_id, user_id, rep, customer, unique("lead"), mailbox["id"], {}
    )
    conversation.sent = await conversation.send(subject=subject, body_text="Hi, here it is.")
    assert conversation.sent["sent_via"] == "gmail"
    return conversation


def gmail_gets(sandbox: RunningSandbox, gmail_message_id: str) -> list[dict[str, Any]]:
    """The messages.get calls the sandbox saw for one message."""
    return [
        call
        for call in sandbox.calls("gmail.users.messages.get")
        if call["path"].rstrip("/").endswith(f"/messages/{gmail_message_id}")
    ]


@asynccontextmanager
async def module_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str, **overrides: Any
) -> AsyncIterator[LiveService]:
    """One live service shared by a module's tests (each test links mailboxes of its
    own), with every change pushed at once (Gmail's one-per-second drop is off)."""
    settings = service_settings(
        sandbox, database_url=database_url, token_encryption_keys=fernet_key, **overrides
    )
    sandbox.request("PUT", "/_sandbox/push", {"min_interval": 0.0})
    try:
        async with start_service(settings, sandbox) as service:
            yield service
    finally:
        sandbox.request("PUT", "/_sandbox/push", {"min_interval": 1.0})
        sandbox.clear_faults()

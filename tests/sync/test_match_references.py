"""MATCH_REPLIES_BY_REFERENCES: a reply that Gmail files in a new thread (changed subject,
or an answer to mail sent through the default sender) joins the lead when its headers
name one of our Message-IDs; with the switch off it is never even fetched."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.threads.models import Direction, Message, MessageStatus, SentVia, Thread
from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.support import unique
from tests.sync.flows import (
    Conversation,
    gmail_gets,
    module_service,
    start_conversation,
    wait_until,
)


@pytest.fixture(autouse=True)
def clear_faults(sandbox: RunningSandbox) -> Iterator[None]:
    yield
    sandbox.clear_faults()


def metadata_gets(sandbox: RunningSandbox, gmail_message_id: str) -> list[dict[str, Any]]:
    return [
        call
        for call in gmail_gets(sandbox, gmail_message_id)
        if "format=metadata" in call.get("query", "")
    ]


def changed_subject_reply(talk: Conversation) -> dict[str, Any]:
    reply = talk.reply("Replying under a new subject.", subject="Different topic, same deal")
    delivered = reply["delivered"][0]
    assert delivered["threadId"] != talk.gmail_thread_id  # Gmail split it off
    return reply


class TestSwitchOff:
    @pytest.fixture(scope="class")
    @classmethod
    async def live_service(
        cls, sandbox: RunningSandbox, database_url: str, fernet_key: str
    ) -> AsyncIterator[LiveService]:
        async with module_service(
            sandbox,
            database_url,
            fernet_key,
            background_duties=True,
            sync_poll_interval_seconds=0.2,
        ) as service:
            yield service

    async def test_reply_in_a_new_gmail_thread_is_never_fetched(
        self, live_service: LiveService, sandbox: RunningSandbox
    ) -> None:
        talk = await start_conversation(live_service, sandbox)
        split = changed_subject_reply(talk)["delivered"][0]["id"]
        talk.reply("In the thread.")
        await talk.wait_for_messages(2)

        assert gmail_gets(sandbox, split) == []
        assert len(await talk.lead_threads()) == 1


class TestSwitchOn:
    @pytest.fixture(scope="class")
    @classmethod
    async def live_service(
        cls, sandbox: RunningSandbox, database_url: str, fernet_key: str
    ) -> AsyncIterator[LiveService]:
        async with module_service(
            sandbox,
            database_url,
            fernet_key,
            background_duties=True,
            sync_poll_interval_seconds=0.2,
            match_replies_by_references=True,
        ) as service:
            yield service

    async def test_changed_subject_reply_joins_the_lead(
        self, live_service: LiveService, sandbox: RunningSandbox
    ) -> None:
        talk = await start_conversation(live_service, sandbox)
        reply = changed_subject_reply(talk)
        split = reply["delivered"][0]

        async def two_threads() -> list[dict[str, Any]] | None:
            threads = await talk.lead_threads()
            return threads if len(threads) == 2 and threads[0]["messages"] else None

        threads = await wait_until(two_threads)
        joined = next(t for t in threads if t["id"] != talk.thread_id)
        assert joined["gmail_thread_id"] == split["threadId"]
        assert joined["mailbox_id"] == talk.mailbox_id
        assert joined["subject"] == "Different topic, same deal"
        (message,) = joined["messages"]
        assert message["direction"] == "inbound"
        assert message["gmail_message_id"] == split["id"]
        assert message["reply_text"] == "Replying under a new subject."
        assert message["match_reason"] == "in_reply_to"
        assert len(metadata_gets(sandbox, split["id"])) == 1  # headers first, then the body
        assert len(gmail_gets(sandbox, split["id"])) == 2

    async def test_answer_to_default_sender_mail_joins_that_thread(
        self,
        live_service: LiveService,
        sandbox: RunningSandbox,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        talk = await start_conversation(live_service, sandbox)
        # A mail that went out through the default sender, Reply-To the rep.
        ours = f"<{unique('default')}@leadmail.example>"
        async with sessionmaker() as session:
            thread = Thread(
                org_id=talk.org_id,
                lead_id=talk.lead_id,
                subject="Pricing",
                sent_via=SentVia.DEFAULT,
                message_count=1,
                created_at=utcnow(),
                last_message_at=utcnow(),
            )
            session.add(thread)
            await session.flush()
            session.add(
                Message(
                    org_id=talk.org_id,
                    thread_id=thread.id,
                    lead_id=talk.lead_id,
                    direction=Direction.OUTBOUND,
                    status=MessageStatus.SENT,
                    sent_via=SentVia.DEFAULT,
                    from_address="crm@leadmail.example",
                    reply_to=talk.rep,
                    to=[talk.customer],
                    subject="Pricing",
                    rfc822_message_id=ours,
                    attachments=[],
                    references=[],
                )
            )
            await session.commit()
            thread_id = thread.id
        answer = sandbox.customer_new_thread(
            talk.customer,
            [talk.rep],
            "Re: Pricing",
            "Looks fair.",
            in_reply_to=ours,
            references=ours,
        )["delivered"][0]

        async def joined() -> dict[str, Any] | None:
            body = await talk.thread(thread_id)
            return body if len(body["messages"]) == 2 else None

        body = await wait_until(joined)
        assert body["gmail_thread_id"] == answer["threadId"]
        assert body["mailbox_id"] == talk.mailbox_id
        assert body["messages"][1]["gmail_message_id"] == answer["id"]
        assert body["messages"][1]["reply_text"] == "Looks fair."
        assert body["messages"][1]["match_reason"] == "in_reply_to"
        assert body["messages"][0]["match_reason"] is None
        async with sessionmaker() as session:
            stored = await session.get(Message, body["messages"][1]["id"])
            assert stored is not None
            assert stored.match_reason == "in_reply_to"

    async def test_unrelated_new_thread_costs_one_header_read_only(
        self, live_service: LiveService, sandbox: RunningSandbox
    ) -> None:
        talk = await start_conversation(live_service, sandbox)
        other = sandbox.customer_new_thread(talk.customer, [talk.rep], "Hello", "Unrelated.")
        talk.reply("In the thread.")
        await talk.wait_for_messages(2)

        unrelated = other["delivered"][0]["id"]
        assert len(metadata_gets(sandbox, unrelated)) == 1
        assert len(gmail_gets(sandbox, unrelated)) == 1
        assert len(await talk.lead_threads()) == 1

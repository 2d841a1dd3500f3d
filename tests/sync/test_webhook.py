"""POST /v1/webhooks/gmail: authenticate, decode, record durably, 204 — per the contract."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import is_sqlite
from app.mailboxes.models import MailboxStatus
from app.main import create_app
from sandbox.testing import RunningSandbox
from tests.support import JWT_SECRET, unique
from tests.sync.factories import load_mailbox, make_mailbox, push_envelope

AUDIENCE = "https://leadmail.test/v1/webhooks/gmail"
PATH = "/v1/webhooks/gmail"


def webhook_settings(settings: Settings, sandbox: RunningSandbox) -> Settings:
    return settings.model_copy(
        update={
            "google_certs_uri": sandbox.certs_uri,
            "pubsub_push_audience": AUDIENCE,
            "pubsub_push_service_account": sandbox.config.push_service_account,
        }
    )


@pytest.fixture
def settings(settings: Settings, sandbox: RunningSandbox) -> Settings:
    return webhook_settings(settings, sandbox)


@pytest.fixture(scope="module")
async def webhook(
    database_url: str, fernet_key: str, sandbox: RunningSandbox
) -> AsyncIterator[httpx.AsyncClient]:
    """One service for the module's tests (each uses mailboxes of its own)."""
    base = Settings(
        database_url=database_url,
        api_jwt_secret=JWT_SECRET,
        token_encryption_keys=fernet_key,
        background_duties=False,
    )
    application = create_app(webhook_settings(base, sandbox))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://leadmail.test") as http:
            yield http


@pytest.fixture
def auth(sandbox: RunningSandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.push_token(audience=AUDIENCE)}"}


def pushes(outcome: str) -> float:
    return REGISTRY.get_sample_value("leadmail_pushes_total", {"outcome": outcome}) or 0.0


async def test_genuine_push_marks_the_mailbox_for_sync(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    before = pushes("recorded")

    response = await webhook.post(
        PATH, json=push_envelope(mailbox.email_address, 150), headers=auth
    )

    assert response.status_code == 204, response.text
    assert response.content == b""
    stored = await load_mailbox(sessionmaker, mailbox.id)
    assert stored.pending_history_id == 150
    assert stored.history_cursor == 100  # the sync moves the cursor, not the webhook
    assert isinstance(stored.last_push_at, datetime)
    assert pushes("recorded") == before + 1


@pytest.mark.parametrize("history_id", [150, "150", 2**53 + 7, str(2**62 + 1)])
async def test_history_id_as_number_or_string(
    webhook: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    auth: dict[str, str],
    history_id: int | str,
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    response = await webhook.post(
        PATH, json=push_envelope(mailbox.email_address, history_id), headers=auth
    )
    assert response.status_code == 204
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == int(history_id)


async def test_unwrapped_push_body_is_accepted(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    response = await webhook.post(
        PATH,
        content=json.dumps({"emailAddress": mailbox.email_address, "historyId": 180}),
        headers={**auth, "Content-Type": "application/json", "x-goog-pubsub-message-id": "42"},
    )
    assert response.status_code == 204
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 180


async def test_pending_id_only_rises_and_stale_pushes_change_nothing(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    stale_before = pushes("stale")
    for history_id in (300, 200, 300, 250):  # reordered and duplicated deliveries
        response = await webhook.post(
            PATH, json=push_envelope(mailbox.email_address, history_id), headers=auth
        )
        assert response.status_code == 204
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 300

    for history_id in (100, 50):  # at or below the cursor: nothing to do
        response = await webhook.post(
            PATH, json=push_envelope(mailbox.email_address, history_id), headers=auth
        )
        assert response.status_code == 204
    stored = await load_mailbox(sessionmaker, mailbox.id)
    assert stored.pending_history_id == 300
    assert stored.history_cursor == 100
    assert pushes("stale") == stale_before + 2


async def test_address_case_from_google_matches_the_stored_mailbox(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    response = await webhook.post(
        PATH, json=push_envelope(mailbox.email_address.upper(), 120), headers=auth
    )
    assert response.status_code == 204
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 120


async def test_one_address_linked_in_two_organizations_marks_both(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    email = f"{unique('shared')}@example.com"
    first = await make_mailbox(sessionmaker, email, cursor=100)
    second = await make_mailbox(sessionmaker, email, cursor=140)
    response = await webhook.post(PATH, json=push_envelope(email, 130), headers=auth)
    assert response.status_code == 204
    assert (await load_mailbox(sessionmaker, first.id)).pending_history_id == 130
    # Also recorded on the second (harmless: at or below its cursor means no work there).
    assert (await load_mailbox(sessionmaker, second.id)).history_cursor == 140


async def test_unknown_and_disconnected_addresses_are_acknowledged_and_counted(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    unknown_before = pushes("unknown_mailbox")
    disconnected_before = pushes("disconnected")
    gone = await make_mailbox(sessionmaker, cursor=100, status=MailboxStatus.DISCONNECTED)

    unknown = await webhook.post(
        PATH, json=push_envelope(f"{unique('nobody')}@example.com", 500), headers=auth
    )
    disconnected = await webhook.post(
        PATH, json=push_envelope(gone.email_address, 500), headers=auth
    )

    assert unknown.status_code == 204
    assert disconnected.status_code == 204
    assert (await load_mailbox(sessionmaker, gone.id)).pending_history_id is None
    assert pushes("unknown_mailbox") == unknown_before + 1
    assert pushes("disconnected") == disconnected_before + 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"message": {"messageId": "1"}}).encode(),
        json.dumps({"message": {"data": "!!!not base64!!!"}}).encode(),
        json.dumps({"message": {"data": base64.b64encode(b"plain text").decode()}}).encode(),
        json.dumps(push_envelope("x@example.com", "abc")).encode(),
        json.dumps(push_envelope("x@example.com", -5)).encode(),
        json.dumps(push_envelope("x@example.com", 2**64)).encode(),
        json.dumps({"emailAddress": "x@example.com"}).encode(),
    ],
    ids=[
        "not-json",
        "array",
        "no-data",
        "bad-base64",
        "data-not-json",
        "history-not-number",
        "negative",
        "beyond-bigint",
        "no-history",
    ],
)
async def test_undecodable_bodies_are_acknowledged_never_retried(
    webhook: httpx.AsyncClient, auth: dict[str, str], body: bytes
) -> None:
    before = pushes("undecodable")
    response = await webhook.post(
        PATH, content=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 204
    assert pushes("undecodable") == before + 1


FORGERIES: list[tuple[str, dict[str, Any], int]] = [
    ("bad-signature", {"key": "bad_signature"}, 401),
    ("unknown-key", {"key": "unknown"}, 401),
    ("wrong-issuer", {"claims": {"iss": "https://evil.example.com"}}, 401),
    ("wrong-audience", {"audience": "https://someone-else.example.com/push"}, 403),
    ("wrong-email", {"claims": {"email": "attacker@evil.iam.gserviceaccount.com"}}, 403),
    ("unverified-email", {"claims": {"email_verified": False}}, 401),
    ("expired", {"claims": {"iat": 1_700_000_000, "exp": 1_700_003_600}}, 401),
    ("issued-in-future", {"claims": {"iat": 4_000_000_000, "exp": 4_000_003_600}}, 401),
    ("no-expiry", {"remove": ["exp"]}, 401),
]


@pytest.mark.parametrize(
    ("forgery", "status"),
    [(options, status) for _, options, status in FORGERIES],
    ids=[name for name, _, _ in FORGERIES],
)
async def test_forged_tokens_are_rejected_and_nothing_changes(
    webhook: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    sandbox: RunningSandbox,
    forgery: dict[str, Any],
    status: int,
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    options = {"audience": AUDIENCE, **forgery}
    token = sandbox.push_token(**options)

    response = await webhook.post(
        PATH,
        json=push_envelope(mailbox.email_address, 999),
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    stored = await load_mailbox(sessionmaker, mailbox.id)
    assert stored.pending_history_id is None
    assert stored.last_push_at is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer not.a.jwt"}],
    ids=["no-token", "basic", "garbage"],
)
async def test_missing_or_garbled_token_is_401(
    webhook: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    headers: dict[str, str],
) -> None:
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    response = await webhook.post(
        PATH, json=push_envelope(mailbox.email_address, 999), headers=headers
    )
    assert response.status_code == 401
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id is None


async def test_concurrent_burst_is_recorded_once_at_the_highest_id(
    webhook: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], auth: dict[str, str]
) -> None:
    mailboxes = [await make_mailbox(sessionmaker, cursor=100) for _ in range(5)]
    bodies = [
        push_envelope(mailbox.email_address, 100 + step)
        for step in range(1, 41)
        for mailbox in mailboxes
    ]
    responses = await asyncio.gather(*(webhook.post(PATH, json=b, headers=auth) for b in bodies))
    assert {response.status_code for response in responses} == {204}
    for mailbox in mailboxes:
        assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 140


class TestPushTokenInQuery:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"pubsub_push_token": SecretStr("s3cret-push-token")})

    async def test_valid_query_token_accepts_without_oidc(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        mailbox = await make_mailbox(sessionmaker, cursor=100)
        response = await client.post(
            f"{PATH}?token=s3cret-push-token", json=push_envelope(mailbox.email_address, 130)
        )
        assert response.status_code == 204
        assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 130

    async def test_wrong_query_token_without_oidc_is_401(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        mailbox = await make_mailbox(sessionmaker, cursor=100)
        response = await client.post(
            f"{PATH}?token=guess", json=push_envelope(mailbox.email_address, 130)
        )
        assert response.status_code == 401
        assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id is None


async def test_unreachable_database_is_503(
    settings: Settings, auth: dict[str, str], tmp_path: Any
) -> None:
    broken = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/missing/dir/leadmail.db"}
    )
    application = create_app(broken)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://leadmail.test") as http:
            response = await http.post(PATH, json=push_envelope("a@example.com", 5), headers=auth)
    assert response.status_code == 503


@pytest.fixture
async def failing_commit(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> AsyncIterator[str]:
    """An address whose mailbox row cannot be committed: on PostgreSQL the check runs at
    COMMIT (a deferred constraint trigger), on SQLite when the row is written."""
    email = f"{unique('failing')}@example.com"
    async with sessionmaker() as session:
        if is_sqlite(database_url):
            await session.execute(
                text(
                    f"CREATE TRIGGER refuse_{email.split('@')[0].replace('-', '_')} "
                    "BEFORE UPDATE ON mailboxes "
                    f"WHEN NEW.email_address = '{email}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_commit() RETURNS trigger "
                    "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$"
                )
            )
            await session.execute(
                text(
                    "CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON mailboxes "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                    f"WHEN (NEW.email_address = '{email}') EXECUTE FUNCTION refuse_commit()"
                )
            )
        await session.commit()
    yield email
    async with sessionmaker() as session:
        if is_sqlite(database_url):
            name = email.split("@")[0].replace("-", "_")
            await session.execute(text(f"DROP TRIGGER refuse_{name}"))
        else:
            await session.execute(text("DROP TRIGGER refuse_commit ON mailboxes"))
        await session.commit()


async def test_failed_commit_is_503_and_records_nothing(
    webhook: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    auth: dict[str, str],
    failing_commit: str,
) -> None:
    mailbox = await make_mailbox(sessionmaker, failing_commit, cursor=100)
    unavailable_before = pushes("unavailable")

    response = await webhook.post(PATH, json=push_envelope(failing_commit, 700), headers=auth)

    assert response.status_code == 503
    assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id is None
    assert pushes("unavailable") == unavailable_before + 1


async def test_a_failing_push_does_not_fail_the_others_committed_with_it(
    webhook: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    auth: dict[str, str],
    failing_commit: str,
) -> None:
    broken = await make_mailbox(sessionmaker, failing_commit, cursor=100)
    healthy = [await make_mailbox(sessionmaker, cursor=100) for _ in range(6)]
    bodies = [push_envelope(failing_commit, 700)] + [
        push_envelope(mailbox.email_address, 700) for mailbox in healthy
    ]

    responses = await asyncio.gather(*(webhook.post(PATH, json=b, headers=auth) for b in bodies))

    assert [response.status_code for response in responses] == [503] + [204] * len(healthy)
    assert (await load_mailbox(sessionmaker, broken.id)).pending_history_id is None
    for mailbox in healthy:
        assert (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id == 700

"""PUBSUB_PUSH_TOKEN on the webhook: an alternative for pushers that cannot sign, which
never weakens OIDC. A request with a bearer token is verified by OIDC whatever its query
says; a request without one needs ``?token=`` to match."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from sandbox.testing import RunningSandbox
from tests.sync.factories import load_mailbox, make_mailbox, push_envelope

AUDIENCE = "https://leadmail.test/v1/webhooks/gmail"
PATH = "/v1/webhooks/gmail"
TOKEN = "s3cret-push-token"


@pytest.fixture
def settings(settings: Settings, sandbox: RunningSandbox) -> Settings:
    return settings.model_copy(
        update={
            "google_certs_uri": sandbox.certs_uri,
            "pubsub_push_audience": AUDIENCE,
            "pubsub_push_service_account": sandbox.config.push_service_account,
            "pubsub_push_token": SecretStr(TOKEN),
        }
    )


async def push(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    query: str = "",
    authorization: str | None = None,
) -> tuple[int, int | None]:
    """The status of one push for a fresh mailbox, and what it left as pending history."""
    mailbox = await make_mailbox(sessionmaker, cursor=100)
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.post(
        f"{PATH}{query}", json=push_envelope(mailbox.email_address, 130), headers=headers
    )
    return response.status_code, (await load_mailbox(sessionmaker, mailbox.id)).pending_history_id


async def test_the_query_token_alone_is_accepted(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    assert await push(client, sessionmaker, query=f"?token={TOKEN}") == (204, 130)


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=guess", f"?token={TOKEN}x", f"?token={TOKEN[:-1]}", "?tok=" + TOKEN],
)
async def test_without_bearer_anything_but_the_exact_token_is_401(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], query: str
) -> None:
    assert await push(client, sessionmaker, query=query) == (401, None)


async def test_a_valid_bearer_with_the_token_is_accepted(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    sandbox: RunningSandbox,
) -> None:
    bearer = f"Bearer {sandbox.push_token(audience=AUDIENCE)}"

    assert await push(client, sessionmaker, query=f"?token={TOKEN}", authorization=bearer) == (
        204,
        130,
    )


@pytest.mark.parametrize(
    ("defect", "status"),
    [
        ({"key": "bad_signature"}, 401),
        ({"claims": {"iat": 1_700_000_000, "exp": 1_700_003_600}}, 401),
        ({"claims": {"iss": "https://evil.example"}}, 401),
        ({"audience": "https://elsewhere.test/hook"}, 403),
        ({"claims": {"email": "someone@else.iam.gserviceaccount.com"}}, 403),
    ],
    ids=["bad-signature", "expired", "wrong-issuer", "wrong-audience", "wrong-account"],
)
async def test_a_failing_bearer_is_refused_even_with_the_right_token(
    client: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    sandbox: RunningSandbox,
    defect: dict[str, Any],
    status: int,
) -> None:
    options: dict[str, Any] = {"audience": AUDIENCE, **defect}
    bearer = f"Bearer {sandbox.push_token(**options)}"

    assert await push(client, sessionmaker, query=f"?token={TOKEN}", authorization=bearer) == (
        status,
        None,
    )


async def test_a_garbled_bearer_is_refused_even_with_the_right_token(
    client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    result = await push(
        client, sessionmaker, query=f"?token={TOKEN}", authorization="Bearer not-a-jwt"
    )

    assert result == (401, None)


class TestTokenWithoutOidc:
    """Only PUBSUB_PUSH_TOKEN configured (the emulator setup): no audience to verify."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"pubsub_push_audience": None})

    async def test_the_token_is_accepted(
        self, client: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        assert await push(client, sessionmaker, query=f"?token={TOKEN}") == (204, 130)

    async def test_a_bearer_cannot_be_verified_so_it_is_refused(
        self,
        client: httpx.AsyncClient,
        sessionmaker: async_sessionmaker[AsyncSession],
        sandbox: RunningSandbox,
    ) -> None:
        bearer = f"Bearer {sandbox.push_token(audience=AUDIENCE)}"

        result = await push(client, sessionmaker, query=f"?token={TOKEN}", authorization=bearer)

        assert result == (401, None)

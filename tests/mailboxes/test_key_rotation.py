"""The key rotation procedure for stored refresh tokens, end to end.

``rotate-keys`` re-encrypts every token in the database, so this module has a database
of its own: the rest of the session keeps using the session's one key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.__main__ import rotate_keys
from app.crypto import TokenCipher, TokenCipherError
from app.google import GmailSession, Profile
from app.mailboxes.access import UNDECRYPTABLE_REASON, MailboxAccess, MailboxDisconnected
from app.mailboxes.models import Mailbox
from sandbox.testing import RunningSandbox
from tests.conftest import empty_database, run_alembic
from tests.harness import LiveService, link_mailbox, loopback_client, unique_email
from tests.support import JWT_SECRET, unique


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with empty_database(tmp_path_factory.mktemp("rotation")) as url:
        run_alembic(url, "upgrade", "head")
        yield url


async def _profile(gmail: GmailSession) -> Profile:
    return await gmail.get_profile()


async def test_a_new_first_key_and_rotate_keys_retire_the_old_key(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    fernet_key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    email = unique_email()
    linked = await link_mailbox(
        live_service, sandbox, org_id=unique("org"), user_id=unique("user"), email=email
    )
    new_key = Fernet.generate_key().decode()

    # Step 1: the new key goes first, the old one stays so both decrypt. Step 2: rotate.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("API_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEYS", f"{new_key},{fernet_key}")
    assert await rotate_keys() == 0
    assert "re-encrypted 1 refresh token(s)" in capsys.readouterr().out

    # Step 3: the old key can go; the service still refreshes with the new one alone.
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, linked["id"])
        assert mailbox is not None and mailbox.refresh_token_encrypted is not None
        with pytest.raises(TokenCipherError):
            TokenCipher([fernet_key]).decrypt(mailbox.refresh_token_encrypted)
        new_only = live_service.settings.model_copy(update={"token_encryption_keys": [new_key]})
        async with loopback_client() as http:
            access = MailboxAccess(new_only, http, sessionmaker, TokenCipher([new_key]))
            try:
                profile = await access.call(mailbox, _profile)
            finally:
                await access.aclose()
    assert profile.email_address == email


async def test_a_token_no_configured_key_opens_disconnects_the_mailbox_with_the_reason(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    linked = await link_mailbox(
        live_service, sandbox, org_id=unique("org"), user_id=unique("user"), email=unique_email()
    )
    # The key that encrypted the token was retired without `rotate-keys`.
    other_key = Fernet.generate_key().decode()
    settings = live_service.settings.model_copy(update={"token_encryption_keys": [other_key]})
    async with sessionmaker() as session:
        mailbox = await session.get(Mailbox, linked["id"])
        assert mailbox is not None
    async with loopback_client() as http:
        access = MailboxAccess(settings, http, sessionmaker, TokenCipher([other_key]))
        try:
            with pytest.raises(MailboxDisconnected) as refused:
                await access.call(mailbox, _profile)
        finally:
            await access.aclose()
    assert refused.value.reason == UNDECRYPTABLE_REASON
    async with sessionmaker() as session:
        stored = await session.get(Mailbox, linked["id"])
        assert stored is not None
        assert (stored.status, stored.disconnect_reason) == ("disconnected", UNDECRYPTABLE_REASON)

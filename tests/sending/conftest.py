"""Sending runs end to end: the real service and the sandbox (Gmail API and SMTP relay).

The harness fixtures are imported here (see tests/harness.py for why not
``pytest_plugins``); ``live_settings`` is this package's own, with retry waits cut to
milliseconds so rate-limit and 5xx paths run fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import Settings
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, live_service, sandbox, service_settings, start_service
from tests.sending.helpers import SERVICE_OVERRIDES

__all__ = ["live_service", "sandbox"]


@pytest.fixture
def live_settings(sandbox: RunningSandbox, database_url: str, fernet_key: str) -> Settings:
    return service_settings(
        sandbox, database_url=database_url, token_encryption_keys=fernet_key, **SERVICE_OVERRIDES
    )


@pytest.fixture
async def bare_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str
) -> AsyncIterator[LiveService]:
    """A service with no default sender configured at all."""
    settings = service_settings(
        sandbox,
        database_url=database_url,
        token_encryption_keys=fernet_key,
        **{**SERVICE_OVERRIDES, "default_smtp_url": None, "default_from_address": None},
    )
    async with start_service(settings, sandbox) as service:
        yield service

"""Sending runs end to end: the real service and the sandbox (Gmail API and SMTP relay).

The sandbox is the harness's (imported here; see tests/harness.py for why not
``pytest_plugins``). The service is started once for this package rather than per
test: every test uses its own org, rep and lead and scopes sandbox faults to its own
account, so they cannot see each other, and the suite stays fast. Its settings cut
retry waits to milliseconds (helpers.SERVICE_OVERRIDES).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import Settings
from sandbox.testing import RunningSandbox
from tests.harness import LiveService, sandbox, service_settings, start_service
from tests.sending.helpers import SERVICE_OVERRIDES

__all__ = ["sandbox"]


@pytest.fixture(scope="package")
def live_settings(sandbox: RunningSandbox, database_url: str, fernet_key: str) -> Settings:
    return service_settings(
        sandbox, database_url=database_url, token_encryption_keys=fernet_key, **SERVICE_OVERRIDES
    )


@pytest.fixture(scope="package")
async def live_service(
    live_settings: Settings, sandbox: RunningSandbox
) -> AsyncIterator[LiveService]:
    async with start_service(live_settings, sandbox) as service:
        yield service


@pytest.fixture
async def bare_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str
) -> AsyncIterator[LiveService]:
    """A second service with no default sender configured at all (pushes stay aimed at
    the package's service)."""
    settings = service_settings(
        sandbox,
        database_url=database_url,
        token_encryption_keys=fernet_key,
        **{**SERVICE_OVERRIDES, "default_smtp_url": None, "default_from_address": None},
    )
    async with start_service(settings) as service:
        yield service

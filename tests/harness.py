"""The end-to-end harness: the real service and the sandbox (local Google) over loopback.

Enable it with ``pytest_plugins = ["tests.harness"]`` in the top-level conftest; until
that line is there, import the fixtures into your package's conftest instead
(``from tests.harness import live_service, live_settings, sandbox``): pytest refuses
``pytest_plugins`` in a nested conftest when the whole suite runs. Fixtures:

``sandbox`` (session)
    one running sandbox (``sandbox.testing.RunningSandbox``) with auto-consent on. It is
    shared by the whole session: use unique addresses (``unique_email()``), scope
    faults to your account, restore consent settings you change, and never move its
    clock. A module that needs a clock of its own overrides the fixture::

        @pytest.fixture(scope="module")
        def sandbox() -> Iterator[RunningSandbox]:
            with start_sandbox() as google:
                yield google

``live_settings`` (function)
    ``Settings`` pointing every Google URL at the sandbox and the OAuth redirect at the
    service's own port; background duties off. To change them, override it in your
    module: ``def live_settings(live_settings): return live_settings.model_copy(update=...)``.

``live_service`` (function)
    the service under uvicorn on a free port (a thread and event loop of its own) with
    the sandbox's pushes aimed at its ``/v1/webhooks/gmail``: a :class:`LiveService`.

Helpers: :func:`link_mailbox` runs the real consent flow and returns the mailbox JSON;
:func:`consent` follows an authorization URL through the sandbox back to the service.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from sandbox.testing import RunningSandbox
from tests.support import JWT_SECRET, bearer, free_port, unique

T = TypeVar("T")

RETURN_ORIGIN = "http://crm.leadmail.test"
RETURN_URL = f"{RETURN_ORIGIN}/settings/mailboxes"
WEBHOOK_PATH = "/v1/webhooks/gmail"
DEFAULT_FROM_ADDRESS = "crm@leadmail.example"


def loopback_client(**options: Any) -> httpx.AsyncClient:
    """An HTTP client for plain http on 127.0.0.1: no proxies from the environment and no
    CA bundle to load (that alone costs tens of milliseconds per client)."""
    return httpx.AsyncClient(timeout=30.0, trust_env=False, verify=False, **options)


def unique_email(prefix: str = "rep") -> str:
    return f"{unique(prefix)}@example.com"


@contextmanager
def start_sandbox(**overrides: Any) -> Iterator[RunningSandbox]:
    """A sandbox of its own on free ports, auto-consent on (``overrides``: SandboxConfig)."""
    running = RunningSandbox(**{"auto_consent": True, **overrides}).start()
    try:
        yield running
    finally:
        running.stop()


def service_settings(
    sandbox: RunningSandbox,
    *,
    database_url: str,
    token_encryption_keys: str,
    port: int | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for a service on ``port`` (default: a free one) that uses ``sandbox``."""
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = sandbox.env()
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_jwt_secret": JWT_SECRET,
        "token_encryption_keys": token_encryption_keys,
        "google_client_id": env["GOOGLE_CLIENT_ID"],
        "google_client_secret": env["GOOGLE_CLIENT_SECRET"],
        "google_auth_uri": env["GOOGLE_AUTH_URI"],
        "google_token_uri": env["GOOGLE_TOKEN_URI"],
        "google_revoke_uri": env["GOOGLE_REVOKE_URI"],
        "google_certs_uri": env["GOOGLE_CERTS_URI"],
        "gmail_api_base_url": env["GMAIL_API_BASE_URL"],
        "oauth_redirect_uri": f"{base_url}/v1/oauth/google/callback",
        "allowed_return_origins": [RETURN_ORIGIN],
        "pubsub_topic": env["PUBSUB_TOPIC"],
        "pubsub_push_audience": f"{base_url}{WEBHOOK_PATH}",
        "pubsub_push_service_account": env["PUBSUB_PUSH_SERVICE_ACCOUNT"],
        "default_smtp_url": f"smtp://127.0.0.1:{sandbox.smtp_port}",
        "default_from_address": DEFAULT_FROM_ADDRESS,
        "background_duties": False,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class LiveService:
    """A running service. ``app.state`` lives in the service's own event loop: run
    anything that touches it (duties, ``mailbox_access``) with :meth:`run`."""

    base_url: str
    http: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    loop: asyncio.AbstractEventLoop

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` (a coroutine) in the service's event loop."""
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(work), self.loop)
        return await asyncio.wrap_future(future)

    def headers(self, user_id: str, org_id: str, **claims: Any) -> dict[str, str]:
        return bearer(user_id, org_id, **claims)


async def _as_coroutine(work: Awaitable[T]) -> T:
    return await work


@asynccontextmanager
async def start_service(
    settings: Settings, sandbox: RunningSandbox | None = None
) -> AsyncIterator[LiveService]:
    """Serve ``create_app(settings)`` on the port of its OAuth redirect URI; with
    ``sandbox``, aim the sandbox's pushes at it while it runs."""
    port = urlsplit(settings.oauth_redirect_uri).port
    assert port is not None
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    loop = asyncio.new_event_loop()

    def serve() -> None:
        try:
            loop.run_until_complete(server.serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=serve, name=f"service-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    if sandbox is not None:
        sandbox.set_push_endpoint(f"{base_url}{WEBHOOK_PATH}", settings.pubsub_push_audience)
    try:
        async with loopback_client(base_url=base_url) as http:
            yield LiveService(base_url, http, app, settings, loop)
    finally:
        if sandbox is not None:
            sandbox.set_push_endpoint(None)
        server.should_exit = True
        await asyncio.to_thread(thread.join, 20)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox() as running:
        yield running


@pytest.fixture
def live_settings(sandbox: RunningSandbox, database_url: str, fernet_key: str) -> Settings:
    return service_settings(sandbox, database_url=database_url, token_encryption_keys=fernet_key)


@pytest.fixture
async def live_service(
    live_settings: Settings, sandbox: RunningSandbox
) -> AsyncIterator[LiveService]:
    async with start_service(live_settings, sandbox) as service:
        yield service


@dataclass
class Consent:
    """One trip through Google's consent page and back to the service's callback."""

    callback_url: str
    response: httpx.Response

    @property
    def location(self) -> str:
        return str(self.response.headers.get("location", ""))

    @property
    def result(self) -> dict[str, str]:
        """The query the service put on the return URL (status, mailbox_id, error, ...)."""
        return dict(parse_qsl(urlsplit(self.location).query))


async def consent(authorization_url: str) -> Consent:
    """Open ``authorization_url`` like a browser: the sandbox answers for the user (its
    consent switch), then the service's callback answers the redirect."""
    async with loopback_client() as browser:
        google = await browser.get(authorization_url)
        assert google.status_code == 302, f"consent page answered {google.status_code}"
        callback_url = google.headers["location"]
        return Consent(callback_url, await browser.get(callback_url))


async def link_mailbox(
    service: LiveService,
    sandbox: RunningSandbox,
    *,
    org_id: str,
    user_id: str,
    email: str,
    name: str | None = None,
) -> dict[str, Any]:
    """Link ``email`` for the user through the real flow; returns the mailbox JSON.

    The account is created in the sandbox if needed; the bearer carries ``email``, which
    the service passes to Google as ``login_hint`` and the sandbox consents as.
    """
    sandbox.create_account(email, name)
    headers = bearer(user_id, org_id, email=email)
    started = await service.http.post(
        "/v1/mailboxes/connect", json={"return_url": RETURN_URL}, headers=headers
    )
    assert started.status_code == 200, started.text
    trip = await consent(started.json()["authorization_url"])
    assert trip.response.status_code == 303, trip.response.text
    assert trip.location.startswith(RETURN_URL), trip.location
    result = trip.result
    assert result.get("status") == "connected", result
    mailbox = await service.http.get(f"/v1/mailboxes/{result['mailbox_id']}", headers=headers)
    assert mailbox.status_code == 200, mailbox.text
    linked: dict[str, Any] = mailbox.json()
    return linked

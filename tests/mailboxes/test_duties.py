"""Background duties: watch renewal by the sandbox clock, leases across replicas and
processes, backoff, safety-sync marking.

These tests move the sandbox's clock by days and judge every mailbox in the database by
it, so each test has a sandbox of its own (whose clock starts at the wall clock, as the
service's does) and the module has a database of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import utcnow
from app.duties import DutyReport, run_duties_once
from app.leases import Lease
from app.mailboxes.models import Mailbox, MailboxStatus
from sandbox.testing import RunningSandbox
from tests.conftest import ROOT, empty_database, run_alembic
from tests.harness import (
    RETURN_ORIGIN,
    LiveService,
    link_mailbox,
    loopback_client,
    service_settings,
    start_sandbox,
    start_service,
    unique_email,
)
from tests.support import JWT_SECRET, bearer, free_port, unique

Sessions = async_sessionmaker[AsyncSession]
DAY = 86400.0


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox() as google:
        yield google


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with empty_database(tmp_path_factory.mktemp("duties")) as url:
        run_alembic(url, "upgrade", "head")
        yield url


def sandbox_now(sandbox: RunningSandbox) -> datetime:
    clock = sandbox.request("GET", "/_sandbox/clock")
    return datetime.fromtimestamp(clock["now_ms"] / 1000, tz=UTC)


def advance(sandbox: RunningSandbox, seconds: float) -> datetime:
    clock = sandbox.advance_clock(seconds)
    return datetime.fromtimestamp(clock["now_ms"] / 1000, tz=UTC)


def watch_calls(sandbox: RunningSandbox, email: str) -> int:
    return len(sandbox.calls("gmail.users.watch", account=email))


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _pass(service: LiveService, now: datetime) -> DutyReport:
    return await service.run(run_duties_once(service.app, now=now))


async def _link(service: LiveService, sandbox: RunningSandbox) -> tuple[str, str]:
    email = unique_email()
    mailbox = await link_mailbox(
        service, sandbox, org_id=unique("org"), user_id=unique("user"), email=email
    )
    return str(mailbox["id"]), email


async def _row(sessions: Sessions, mailbox_id: str) -> Mailbox:
    async with sessions() as session:
        mailbox = await session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        return mailbox


async def test_watches_are_renewed_daily_by_the_sandbox_clock(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    mailbox_id, email = await _link(live_service, sandbox)
    first_expiry = (await _row(sessionmaker, mailbox_id)).watch_expires_at
    assert first_expiry is not None
    renewed = _metric("leadmail_watch_renewals_total", outcome="renewed")
    sandbox.clear_calls()

    report = await _pass(live_service, advance(sandbox, 3600))
    assert mailbox_id not in report.renewed
    assert watch_calls(sandbox, email) == 0

    now = advance(sandbox, DAY)
    report = await _pass(live_service, now)
    assert mailbox_id in report.renewed
    assert watch_calls(sandbox, email) == 1
    assert _metric("leadmail_watch_renewals_total", outcome="renewed") >= renewed + 1
    row = await _row(sessionmaker, mailbox_id)
    watch = sandbox.account(email)["watch"]
    assert watch["active"] is True
    assert row.watch_expires_at is not None and row.watch_expires_at > first_expiry
    assert abs(row.watch_expires_at.timestamp() * 1000 - int(watch["expiration"])) < 2
    assert abs((row.watch_expires_at - now) - timedelta(days=7)) < timedelta(minutes=1)
    assert row.watch_renewed_at == now
    shown = await live_service.http.get(
        f"/v1/mailboxes/{mailbox_id}", headers=bearer(row.user_id, row.org_id)
    )
    assert datetime.fromisoformat(shown.json()["watch_expires_at"]) == row.watch_expires_at

    # Renewed once: the next pass at the same moment leaves it alone.
    report = await _pass(live_service, now)
    assert mailbox_id not in report.renewed
    assert watch_calls(sandbox, email) == 1

    async with sessionmaker() as session:
        active = await session.scalar(
            select(func.count()).where(Mailbox.status == MailboxStatus.ACTIVE)
        )
    assert _metric("leadmail_mailboxes", status="active") == active


@pytest.fixture
def live_settings(live_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    overrides: dict[str, Any] = getattr(request, "param", {})
    return live_settings.model_copy(update=overrides)


@pytest.mark.parametrize("live_settings", [{"watch_renew_after_seconds": 30 * DAY}], indirect=True)
async def test_a_watch_within_a_day_of_expiry_is_renewed_at_once(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    mailbox_id, email = await _link(live_service, sandbox)
    sandbox.clear_calls()
    report = await _pass(live_service, advance(sandbox, 5 * DAY))  # two days left
    assert mailbox_id not in report.renewed
    assert watch_calls(sandbox, email) == 0

    now = advance(sandbox, DAY + 3600)  # 23 hours left
    report = await _pass(live_service, now)
    assert mailbox_id in report.renewed
    assert watch_calls(sandbox, email) == 1
    row = await _row(sessionmaker, mailbox_id)
    assert row.watch_expires_at is not None and row.watch_expires_at - now > timedelta(days=6)


async def test_a_revoked_mailbox_is_disconnected_by_its_renewal_and_left_alone(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    mailbox_id, email = await _link(live_service, sandbox)
    disconnected = _metric("leadmail_watch_renewals_total", outcome="disconnected")
    sandbox.revoke(email)

    report = await _pass(live_service, advance(sandbox, DAY + 60))

    assert mailbox_id in report.disconnected
    assert _metric("leadmail_watch_renewals_total", outcome="disconnected") == disconnected + 1
    row = await _row(sessionmaker, mailbox_id)
    assert row.status == MailboxStatus.DISCONNECTED
    assert row.disconnect_reason is not None and "invalid_grant" in row.disconnect_reason
    assert row.watch_expires_at is None
    sandbox.clear_calls()
    report = await _pass(live_service, advance(sandbox, DAY + 60))
    assert mailbox_id not in report.renewed + report.failed + report.disconnected
    assert [c for c in sandbox.calls() if c.get("account") == email] == []


async def test_a_failed_renewal_is_retried_with_backoff(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    mailbox_id, email = await _link(live_service, sandbox)
    failed = _metric("leadmail_watch_renewals_total", outcome="failed")
    sandbox.fault("gmail.users.watch", "backend_error", count=2, account=email)
    sandbox.clear_calls()
    now = advance(sandbox, DAY + 60)

    assert mailbox_id in (await _pass(live_service, now)).failed
    assert mailbox_id not in (await _pass(live_service, now + timedelta(seconds=30))).failed
    assert watch_calls(sandbox, email) == 1  # waiting a minute before the next try
    assert mailbox_id in (await _pass(live_service, now + timedelta(seconds=61))).failed
    assert mailbox_id not in (await _pass(live_service, now + timedelta(seconds=150))).failed
    assert watch_calls(sandbox, email) == 2  # then two minutes
    report = await _pass(live_service, now + timedelta(seconds=190))
    assert mailbox_id in report.renewed
    assert watch_calls(sandbox, email) == 3
    assert _metric("leadmail_watch_renewals_total", outcome="failed") == failed + 2
    row = await _row(sessionmaker, mailbox_id)
    assert row.status == MailboxStatus.ACTIVE and row.watch_expires_at is not None


async def test_a_live_lease_elsewhere_is_respected_and_a_crashed_holders_lapses(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    held_id, held_email = await _link(live_service, sandbox)
    orphan_id, orphan_email = await _link(live_service, sandbox)
    async with sessionmaker() as session:
        await session.execute(
            insert(Lease).values(
                [
                    {
                        "name": f"watch-renewal:{held_id}",
                        "holder": "another-replica",
                        "expires_at": utcnow() + timedelta(minutes=5),
                    },
                    {
                        "name": f"watch-renewal:{orphan_id}",
                        "holder": "a-replica-that-crashed",
                        "expires_at": utcnow() - timedelta(seconds=1),
                    },
                ]
            )
        )
        await session.commit()
    sandbox.clear_calls()

    report = await _pass(live_service, advance(sandbox, DAY + 60))

    assert held_id in report.leased_elsewhere and held_id not in report.renewed
    assert orphan_id in report.renewed
    assert watch_calls(sandbox, held_email) == 0
    assert watch_calls(sandbox, orphan_email) == 1
    async with sessionmaker() as session:
        leases = {lease.name: lease.holder for lease in await session.scalars(select(Lease))}
    assert leases.get(f"watch-renewal:{held_id}") == "another-replica"
    assert f"watch-renewal:{orphan_id}" not in leases  # released after the renewal


async def test_quiet_mailboxes_are_marked_for_a_safety_sync(
    live_service: LiveService, sandbox: RunningSandbox, sessionmaker: Sessions
) -> None:
    quiet, _ = await _link(live_service, sandbox)
    pushed, _ = await _link(live_service, sandbox)
    synced, _ = await _link(live_service, sandbox)
    gone, _ = await _link(live_service, sandbox)
    await live_service.http.delete(
        f"/v1/mailboxes/{gone}",
        headers=bearer(
            (await _row(sessionmaker, gone)).user_id, (await _row(sessionmaker, gone)).org_id
        ),
    )
    mine = {quiet, pushed, synced, gone}
    later = utcnow() + timedelta(seconds=live_service.settings.safety_sync_after_seconds + 100)
    async with sessionmaker() as session:
        await session.execute(
            update(Mailbox)
            .where(Mailbox.id == pushed)
            .values(last_push_at=later - timedelta(seconds=60))
        )
        await session.execute(
            update(Mailbox)
            .where(Mailbox.id == synced)
            .values(last_synced_at=later - timedelta(seconds=60))
        )
        await session.commit()

    soon = await _pass(live_service, utcnow())
    assert mine.isdisjoint(soon.sync_requested)  # all of them just linked
    report = await _pass(live_service, later)
    assert mine & set(report.sync_requested) == {quiet}
    assert (await _row(sessionmaker, quiet)).sync_requested is True
    for other in (pushed, synced, gone):
        assert (await _row(sessionmaker, other)).sync_requested is False
    again = await _pass(live_service, later)
    assert quiet not in again.sync_requested  # already waiting for its sync


@asynccontextmanager
async def _second_service(
    sandbox: RunningSandbox, database_url: str, fernet_key: str
) -> AsyncIterator[LiveService]:
    settings = service_settings(
        sandbox, database_url=database_url, token_encryption_keys=fernet_key
    )
    async with start_service(settings) as service:
        yield service


async def test_two_replicas_renew_each_watch_once(
    live_service: LiveService,
    sandbox: RunningSandbox,
    database_url: str,
    fernet_key: str,
) -> None:
    linked = [await _link(live_service, sandbox) for _ in range(4)]
    now = advance(sandbox, DAY + 60)
    sandbox.clear_calls()
    async with _second_service(sandbox, database_url, fernet_key) as other:
        first, second = await asyncio.gather(_pass(live_service, now), _pass(other, now))

    for mailbox_id, email in linked:
        assert watch_calls(sandbox, email) == 1, email
        assert (mailbox_id in first.renewed) != (mailbox_id in second.renewed)


def sandbox_secret(settings: Settings) -> str:
    secret = settings.google_client_secret
    return secret.get_secret_value() if secret is not None else ""


def _spawn(settings: Settings, fernet_key: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": settings.database_url,
        "API_JWT_SECRET": JWT_SECRET,
        "TOKEN_ENCRYPTION_KEYS": fernet_key,
        "GOOGLE_CLIENT_ID": settings.google_client_id or "",
        "GOOGLE_CLIENT_SECRET": sandbox_secret(settings),
        "GOOGLE_AUTH_URI": settings.google_auth_uri,
        "GOOGLE_TOKEN_URI": settings.google_token_uri,
        "GOOGLE_REVOKE_URI": settings.google_revoke_uri,
        "GMAIL_API_BASE_URL": settings.gmail_api_base_url,
        "OAUTH_REDIRECT_URI": settings.oauth_redirect_uri,
        "ALLOWED_RETURN_ORIGINS": RETURN_ORIGIN,
        "PUBSUB_TOPIC": settings.pubsub_topic or "",
        "BACKGROUND_DUTIES": "true",
        "DUTY_INTERVAL_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }
    port = ["--port", str(urlsplit(settings.oauth_redirect_uri).port)]
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", *port],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


async def _wait_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    async with loopback_client(base_url=base_url) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the service process exited"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base_url} did not become healthy")


async def test_two_service_processes_renew_each_watch_once(
    live_service: LiveService,
    sandbox: RunningSandbox,
    sessionmaker: Sessions,
    database_url: str,
    fernet_key: str,
    tmp_path: Path,
) -> None:
    linked = [await _link(live_service, sandbox) for _ in range(3)]
    ids = [mailbox_id for mailbox_id, _ in linked]
    last_renewed = utcnow() - timedelta(days=2)  # due for the daily renewal by wall time
    async with sessionmaker() as session:
        await session.execute(
            update(Mailbox).where(Mailbox.id.in_(ids)).values(watch_renewed_at=last_renewed)
        )
        await session.commit()
    sandbox.clear_calls()

    processes = []
    for index in range(2):
        settings = service_settings(
            sandbox, database_url=database_url, token_encryption_keys=fernet_key, port=free_port()
        )
        log = tmp_path / f"service-{index}.log"
        processes.append((_spawn(settings, fernet_key, log), settings, log))
    try:
        for process, settings, _ in processes:
            await _wait_healthy(
                f"http://127.0.0.1:{urlsplit(settings.oauth_redirect_uri).port}", process
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = [await _row(sessionmaker, mailbox_id) for mailbox_id in ids]
            if all(row.watch_renewed_at and row.watch_renewed_at > last_renewed for row in rows):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.6)  # three more passes of each process
    finally:
        for process, _, _ in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(process.wait, 20) for process, _, _ in processes]

    logs = [path.read_text() for _, _, path in processes]
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully
    assert all(code in (0, -signal.SIGTERM) for code in codes), logs
    assert all("Application shutdown complete." in text for text in logs), logs
    for _, email in linked:
        assert watch_calls(sandbox, email) == 1, (email, logs)
    renewals_logged = sum(text.count('"mailbox.watch.renewed"') for text in logs)
    assert renewals_logged == len(linked)
    for text in logs:
        assert "Traceback" not in text and "duties.pass_failed" not in text

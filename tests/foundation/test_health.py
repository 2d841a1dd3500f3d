from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import run_alembic
from tests.support import JWT_SECRET


async def test_healthz_answers_while_the_process_lives(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_on_a_migrated_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["database"] == "ok"


async def _readyz(settings: Settings) -> httpx.Response:
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/readyz")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-directory/leadmail.db",
        "postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
    ],
)
async def test_readyz_is_503_when_the_database_does_not_answer(url: str, fernet_key: str) -> None:
    settings = Settings(
        database_url=url, api_jwt_secret=JWT_SECRET, token_encryption_keys=fernet_key
    )
    response = await _readyz(settings)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "database" in response.json()["detail"]


async def test_readyz_is_503_when_migrations_are_behind(tmp_path: Path, fernet_key: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/behind.db"
    run_alembic(url, "upgrade", "head")
    run_alembic(url, "stamp", "base")
    settings = Settings(
        database_url=url, api_jwt_secret=JWT_SECRET, token_encryption_keys=fernet_key
    )
    response = await _readyz(settings)
    assert response.status_code == 503
    assert "migrations are behind" in response.json()["detail"]


async def test_metrics_label_requests_by_route_template_not_raw_path(
    client: httpx.AsyncClient,
) -> None:
    headers = {"Authorization": "Bearer nope"}
    await client.get("/v1/templates/abc123", headers=headers)
    await client.get("/v1/templates/def456", headers=headers)
    body = (await client.get("/metrics")).text
    assert 'route="/v1/templates/{template_id}"' in body
    assert "abc123" not in body
    assert "leadmail_http_request_duration_seconds_bucket" in body


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    generated = await client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32

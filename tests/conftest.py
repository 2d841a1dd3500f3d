"""Test databases: each run gets its own, on SQLite or (LEADMAIL_TEST_DB=postgres) PostgreSQL.

Tests that touch the database are marked `db` automatically, so the PostgreSQL pass of
`make test` runs exactly those.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from tests.support import JWT_SECRET

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKEND = os.environ.get("LEADMAIL_TEST_DB", "sqlite")


def pytest_report_header() -> str:
    return f"leadmail test database: {BACKEND}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    return config


def run_alembic(url: str, action: str, revision: str) -> None:
    """Alembic's env runs its own event loop, so it gets a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(getattr(command, action), alembic_config(url), revision).result()


async def _admin(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def empty_database(directory: Path) -> Iterator[str]:
    """A new, empty database on the backend under test, dropped afterwards."""
    if BACKEND == "postgres":
        server = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES)
        name = f"leadmail_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
        try:
            yield server.rsplit("/", 1)[0] + f"/{name}"
        finally:
            asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        yield f"sqlite+aiosqlite:///{directory / f'{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with empty_database(tmp_path_factory.mktemp("db")) as url:
        run_alembic(url, "upgrade", "head")
        yield url


@pytest.fixture(scope="session")
def fernet_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def settings(database_url: str, fernet_key: str) -> Settings:
    return Settings(
        database_url=database_url,
        api_jwt_secret=JWT_SECRET,
        token_encryption_keys=fernet_key,
        background_duties=False,
    )


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://leadmail.test") as http:
        yield http

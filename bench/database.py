"""A throwaway database for one benchmark run, migrated to head."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from app.db import create_engine

ROOT = Path(__file__).resolve().parent.parent


def _upgrade(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    config.attributes["configure_logger"] = False
    # Alembic's env runs an event loop of its own: give it a thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(command.upgrade, config, "head").result()


async def _admin(server_url: str, statement: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def scratch_database(server_url: str | None, directory: Path) -> AsyncIterator[str]:
    """A new database on the PostgreSQL server at `server_url` (any database URL on it),
    or a SQLite file in `directory` when `server_url` is None; dropped afterwards."""
    if server_url is None:
        url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        _upgrade(url)
        yield url
        return
    name = f"leadmail_bench_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
        _upgrade(url)
        yield url
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from app.db import create_engine
from app.models import Base
from tests.conftest import empty_database, run_alembic


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_downgrade_to_base_and_back_up(database_url: str, tmp_path: Path) -> None:
    # database_url only marks this a database test; it works on a database of its own.
    with empty_database(tmp_path) as url:
        asyncio.run(_round_trip(url))


async def _round_trip(url: str) -> None:
    run_alembic(url, "upgrade", "head")
    run_alembic(url, "downgrade", "base")
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) <= {"alembic_version"}
        run_alembic(url, "upgrade", "head")
        async with engine.connect() as connection:
            assert {"mailboxes", "threads", "messages", "templates", "oauth_states"} <= (
                await connection.run_sync(_tables)
            )
    finally:
        await engine.dispose()

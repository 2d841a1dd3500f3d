"""What every SQLite connection of the service is set up with."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.db import create_engine


async def test_sqlite_connections_are_wal_durable_patient_and_check_foreign_keys(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }
    finally:
        await engine.dispose()
    # synchronous 2 is FULL: a commit (and so a push's 204) survives a power cut.
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 30000,
        "foreign_keys": 1,
        "synchronous": 2,
    }

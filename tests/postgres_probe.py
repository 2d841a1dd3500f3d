"""Exit 0 when the PostgreSQL server for the test suite answers, 1 otherwise."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


async def probe(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


def main() -> int:
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT).replace("+asyncpg", "")
    return 0 if asyncio.run(probe(url)) else 1


if __name__ == "__main__":
    sys.exit(main())

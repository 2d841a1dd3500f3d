"""Liveness, readiness and metrics for orchestration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import problem

router = APIRouter(tags=["operations"])

REPO_ROOT = Path(__file__).resolve().parent.parent


def migration_heads() -> set[str]:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


async def database_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return {str(row[0]) for row in rows}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> Response:
    engine: AsyncEngine = request.app.state.engine
    heads: set[str] = request.app.state.migration_heads
    try:
        current = await asyncio.wait_for(database_revisions(engine), timeout=3)
    except Exception as exc:
        return problem(503, f"the database does not answer: {type(exc).__name__}")
    if current != heads:
        return problem(
            503,
            f"migrations are behind: database at {sorted(current) or 'none'}, "
            f"code at {sorted(heads)}",
        )
    return JSONResponse({"status": "ready", "database": "ok", "migrations": sorted(heads)})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

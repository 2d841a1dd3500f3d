from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page
from app.threads import service
from app.threads.schemas import ThreadOut

router = APIRouter(prefix="/v1", tags=["threads"])


@router.get("/leads/{lead_id}/threads", responses=problem_responses(401, 422))
async def list_lead_threads(
    lead_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> Page[ThreadOut]:
    return await service.list_lead_threads(session, principal, lead_id, limit, cursor)


@router.get("/threads/{thread_id}", responses=problem_responses(401, 404))
async def get_thread(thread_id: str, session: SessionDep, principal: PrincipalDep) -> ThreadOut:
    return await service.get_thread(session, principal, thread_id)

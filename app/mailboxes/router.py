from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from app.auth import PrincipalDep
from app.db import SessionDep, session_scope
from app.errors import problem_responses
from app.mailboxes import service
from app.mailboxes.access import MailboxAccess
from app.mailboxes.schemas import ConnectRequest, ConnectResponse, MailboxOut
from app.pagination import Page, page_of

router = APIRouter(tags=["mailboxes"])


def get_mailbox_access(request: Request) -> MailboxAccess:
    access: MailboxAccess = request.app.state.mailbox_access
    return access


MailboxAccessDep = Annotated[MailboxAccess, Depends(get_mailbox_access)]


@router.post("/v1/mailboxes/connect", responses=problem_responses(401, 422, 503))
async def connect_mailbox(
    body: ConnectRequest, session: SessionDep, principal: PrincipalDep, access: MailboxAccessDep
) -> ConnectResponse:
    """Start linking the caller's Gmail: open ``authorization_url`` in the browser."""
    url = await service.start_connect(session, access, principal, body.return_url)
    return ConnectResponse(authorization_url=url)


@router.get(
    "/v1/oauth/google/callback",
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "Back to the return_url"}, **problem_responses(400)},
)
async def oauth_callback(
    request: Request,
    session: SessionDep,
    access: MailboxAccessDep,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    """Google's redirect after consent (no bearer: the browser comes from Google)."""
    # The state is used up in a transaction of its own, committed before any call to
    # Google, so it stays used whatever happens next and no write lock is held meanwhile.
    async with session_scope(request.app.state.sessionmaker) as state_session:
        pending = await service.consume_state(state_session, state)
    location = await service.complete_link(session, access, pending, code=code, error=error)
    return RedirectResponse(location, status_code=303)


@router.get("/v1/mailboxes", responses=problem_responses(401, 422))
async def list_mailboxes(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[MailboxOut]:
    rows = await service.list_mailboxes(session, principal, limit + 1, cursor)
    return page_of(rows, limit, MailboxOut.model_validate)


@router.get("/v1/mailboxes/{mailbox_id}", responses=problem_responses(401, 404))
async def get_mailbox(mailbox_id: str, session: SessionDep, principal: PrincipalDep) -> MailboxOut:
    return MailboxOut.model_validate(await service.get_mailbox(session, principal, mailbox_id))


@router.delete("/v1/mailboxes/{mailbox_id}", status_code=204, responses=problem_responses(401, 404))
async def delete_mailbox(
    mailbox_id: str, session: SessionDep, principal: PrincipalDep, access: MailboxAccessDep
) -> Response:
    """Unlink: stop the watch, revoke the grant, keep the mailbox's conversations."""
    await service.disconnect_mailbox(session, access, principal, mailbox_id)
    return Response(status_code=204)

"""`POST /v1/leads/{lead_id}/messages` and `GET /v1/outbox`."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import BadGateway, problem_responses
from app.pagination import Page, page_of
from app.sending import service
from app.sending.delivery import Delivery, deliver_message, delivery_for
from app.sending.schemas import OutboxScope, OutboxStatus, SendRequest
from app.threads.models import Message, MessageStatus
from app.threads.schemas import MessageOut

router = APIRouter(tags=["sending"])
logger = logging.getLogger("leadmail.sending")


def get_delivery(request: Request) -> Delivery:
    return delivery_for(request.app.state)


DeliveryDep = Annotated[Delivery, Depends(get_delivery)]

_SEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": MessageOut,
        "description": "An Idempotency-Key retry of a send that is still in progress",
    },
    **problem_responses(401, 403, 404, 409, 422, 502),
}


@router.post("/v1/leads/{lead_id}/messages", status_code=201, responses=_SEND_RESPONSES)
async def send_message(
    lead_id: Annotated[str, Path(min_length=1, max_length=255)],
    body: SendRequest,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    delivery: DeliveryDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> MessageOut:
    default_from = delivery.default_sender.from_address if delivery.default_sender else None
    try:
        queued = await service.queue_message(
            session,
            principal,
            lead_id,
            body,
            default_from=default_from,
            idempotency_key=idempotency_key,
        )
        # The transaction edge of phase one, here rather than after the response: the
        # queued row must be durable before anything goes out, so a crash in the
        # network phase leaves a row to reconcile instead of a mail we know nothing of.
        await session.commit()
    except IntegrityError:
        if idempotency_key is None:
            raise
        # A concurrent request with the same key committed first: answer as its retry.
        await session.rollback()
        logger.info("sending.idempotency.race", extra={"org_id": principal.org_id})
        queued = await service.queue_message(
            session,
            principal,
            lead_id,
            body,
            default_from=default_from,
            idempotency_key=idempotency_key,
        )
        if not queued.replayed:
            raise
    message = queued.message
    if not queued.replayed:
        message = await deliver_message(delivery, message.id)
    return _answer(message, response)


@router.get("/v1/outbox", responses=problem_responses(401, 422))
async def list_outbox(
    session: SessionDep,
    principal: PrincipalDep,
    status: OutboxStatus | None = None,
    mailbox_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    scope: OutboxScope = "mine",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[MessageOut]:
    rows = await service.list_outbox(
        session,
        principal,
        scope=scope,
        status=status,
        mailbox_id=mailbox_id,
        limit=limit + 1,
        cursor=cursor,
    )
    return page_of(rows, limit, MessageOut.from_model)


def _answer(message: Message, response: Response) -> MessageOut:
    out = MessageOut.from_model(message)
    if message.status == MessageStatus.FAILED:
        # Stored, committed and still listed in the outbox: the body says what failed.
        raise BadGateway(
            message.error or "the message could not be sent",
            extra={"message": out.model_dump(mode="json")},
        )
    if message.status == MessageStatus.QUEUED:
        response.status_code = 202
    return out

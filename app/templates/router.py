from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth import PrincipalDep
from app.db import SessionDep
from app.errors import problem_responses
from app.pagination import Page, page_of
from app.templates import service
from app.templates.schemas import (
    RenderedOut,
    RenderRequest,
    TemplateCreate,
    TemplateOut,
    TemplateUpdate,
)

router = APIRouter(prefix="/v1/templates", tags=["templates"])


@router.post("", status_code=201, responses=problem_responses(401, 422))
async def create_template(
    body: TemplateCreate, session: SessionDep, principal: PrincipalDep
) -> TemplateOut:
    return TemplateOut.model_validate(await service.create_template(session, principal, body))


@router.get("", responses=problem_responses(401, 422))
async def list_templates(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[TemplateOut]:
    rows = await service.list_templates(session, principal, limit + 1, cursor)
    return page_of(rows, limit, TemplateOut.model_validate)


@router.get("/{template_id}", responses=problem_responses(401, 404))
async def get_template(
    template_id: str, session: SessionDep, principal: PrincipalDep
) -> TemplateOut:
    return TemplateOut.model_validate(await service.get_template(session, principal, template_id))


@router.patch("/{template_id}", responses=problem_responses(401, 404, 422))
async def update_template(
    template_id: str, body: TemplateUpdate, session: SessionDep, principal: PrincipalDep
) -> TemplateOut:
    template = await service.update_template(session, principal, template_id, body)
    return TemplateOut.model_validate(template)


@router.delete("/{template_id}", status_code=204, responses=problem_responses(401, 404))
async def delete_template(
    template_id: str, session: SessionDep, principal: PrincipalDep
) -> Response:
    await service.delete_template(session, principal, template_id)
    return Response(status_code=204)


@router.post("/{template_id}/render", responses=problem_responses(401, 404, 422))
async def render_template(
    template_id: str, body: RenderRequest, session: SessionDep, principal: PrincipalDep
) -> RenderedOut:
    template = await service.get_template(session, principal, template_id)
    rendered = service.render(template, body.variables)
    return RenderedOut(
        subject=rendered.subject, body_text=rendered.body_text, body_html=rendered.body_html
    )

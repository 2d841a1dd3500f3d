"""Templates: organization-scoped CRUD and sandboxed rendering."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.errors import InvalidInput, NotFound
from app.mail.render import (
    RenderedTemplate,
    TemplateError,
    TemplateVariableMissing,
    render_template,
    validate_template,
)
from app.pagination import decode_cursor
from app.templates.models import Template
from app.templates.repository import TemplateRepository
from app.templates.schemas import TemplateCreate, TemplateUpdate


def _check_syntax(subject: str, body_text: str | None, body_html: str | None) -> None:
    try:
        validate_template(subject, body_text, body_html)
    except TemplateError as exc:
        raise _invalid(exc) from exc


async def get_template(session: AsyncSession, principal: Principal, template_id: str) -> Template:
    template = await TemplateRepository(session).get(principal.org_id, template_id)
    if template is None:
        raise NotFound(f"template {template_id} not found")
    return template


async def list_templates(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> list[Template]:
    after = decode_cursor(cursor) if cursor else None
    return await TemplateRepository(session).list(principal.org_id, limit, after)


async def create_template(
    session: AsyncSession, principal: Principal, data: TemplateCreate
) -> Template:
    _check_syntax(data.subject, data.body_text, data.body_html)
    template = Template(
        org_id=principal.org_id,
        name=data.name,
        subject=data.subject,
        body_text=data.body_text,
        body_html=data.body_html,
        created_by=principal.user_id,
    )
    return await TemplateRepository(session).add(template)


async def update_template(
    session: AsyncSession, principal: Principal, template_id: str, data: TemplateUpdate
) -> Template:
    template = await get_template(session, principal, template_id)
    changes = data.model_dump(exclude_unset=True)
    if changes.get("subject", "") is None or changes.get("name", "") is None:
        raise InvalidInput("name and subject cannot be null")
    merged = {
        "subject": template.subject,
        "body_text": template.body_text,
        "body_html": template.body_html,
        **changes,
    }
    if not merged["body_text"] and not merged["body_html"]:
        raise InvalidInput("a template needs body_text, body_html or both")
    _check_syntax(merged["subject"], merged["body_text"], merged["body_html"])
    for field, value in changes.items():
        setattr(template, field, value)
    await session.flush()
    return template


async def delete_template(session: AsyncSession, principal: Principal, template_id: str) -> None:
    template = await get_template(session, principal, template_id)
    await TemplateRepository(session).delete(template)


def render(template: Template, variables: dict[str, Any]) -> RenderedTemplate:
    """Render in the sandbox; a missing variable or a forbidden access is a 422."""
    try:
        return render_template(template.subject, template.body_text, template.body_html, variables)
    except TemplateError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: TemplateError) -> InvalidInput:
    # The problem body names the part (and the variable) so a client can point at it.
    extra: dict[str, Any] = {"field": exc.field}
    if isinstance(exc, TemplateVariableMissing):
        extra["variable"] = exc.name
    return InvalidInput(str(exc), extra=extra)

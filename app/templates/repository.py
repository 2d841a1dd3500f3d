from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import newest_first
from app.templates.models import Template


class TemplateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, org_id: str, template_id: str) -> Template | None:
        query = select(Template).where(Template.org_id == org_id, Template.id == template_id)
        return (await self.session.scalars(query)).first()

    async def list(
        self, org_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Template]:
        query = select(Template).where(Template.org_id == org_id)
        query = newest_first(query, Template.created_at, Template.id, after, limit)
        return list(await self.session.scalars(query))

    async def add(self, template: Template) -> Template:
        self.session.add(template)
        await self.session.flush()
        return template

    async def delete(self, template: Template) -> None:
        await self.session.delete(template)
        await self.session.flush()

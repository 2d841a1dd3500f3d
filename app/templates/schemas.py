from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    subject: str = Field(min_length=1, max_length=2000)
    body_text: str | None = Field(default=None, max_length=500_000)
    body_html: str | None = Field(default=None, max_length=2_000_000)

    @model_validator(mode="after")
    def _needs_a_body(self) -> TemplateCreate:
        if not self.body_text and not self.body_html:
            raise ValueError("a template needs body_text, body_html or both")
        return self


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    subject: str | None = Field(default=None, min_length=1, max_length=2000)
    body_text: str | None = Field(default=None, max_length=500_000)
    body_html: str | None = Field(default=None, max_length=2_000_000)


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    subject: str
    body_text: str | None
    body_html: str | None
    created_at: datetime
    updated_at: datetime


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)


class RenderedOut(BaseModel):
    subject: str
    body_text: str | None
    body_html: str | None

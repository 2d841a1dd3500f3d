"""The send request. Responses are `app.threads.schemas.MessageOut`, shared with threads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.mail.addresses import parse_address, reject_header_injection

OutboxScope = Literal["mine", "org"]
OutboxStatus = Literal["queued", "sent", "failed"]

MAX_RECIPIENTS = 100


def _addresses(field: str, values: list[str]) -> list[str]:
    # Stored and sent normalised ("Name <local@domain>", IDNA domain); a bad one is a 422.
    return [str(parse_address(field, value)) for value in values]


class SendRequest(BaseModel):
    """Either `subject` + `body_text`/`body_html`, or `template_id` + `variables`.

    With a template, `subject` may still be given to override the template's subject.
    """

    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[str] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: str | None = Field(default=None, max_length=2000)
    body_text: str | None = Field(default=None, max_length=500_000)
    body_html: str | None = Field(default=None, max_length=2_000_000)
    template_id: str | None = Field(default=None, min_length=1, max_length=64)
    variables: dict[str, Any] | None = None
    mailbox_id: str | None = Field(default=None, min_length=1, max_length=64)
    thread_id: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("to")
    @classmethod
    def _to(cls, values: list[str]) -> list[str]:
        return _addresses("to", values)

    @field_validator("cc")
    @classmethod
    def _cc(cls, values: list[str]) -> list[str]:
        return _addresses("cc", values)

    @field_validator("bcc")
    @classmethod
    def _bcc(cls, values: list[str]) -> list[str]:
        return _addresses("bcc", values)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        return None if value is None else reject_header_injection("subject", value)

    @model_validator(mode="after")
    def _one_form(self) -> SendRequest:
        if self.template_id is not None:
            if self.body_text is not None or self.body_html is not None:
                raise ValueError("give template_id or body_text/body_html, not both")
            return self
        if self.variables is not None:
            raise ValueError("variables are only used with template_id")
        if not self.body_text and not self.body_html:
            raise ValueError("a message needs body_text, body_html or a template_id")
        if not self.subject and self.thread_id is None:
            raise ValueError("a new conversation needs a subject (or a template_id)")
        return self

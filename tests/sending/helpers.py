"""Small factories for the sending tests: reps, leads, sends, and what the sandbox saw."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import httpx

from sandbox.testing import RunningSandbox
from tests.harness import LiveService, link_mailbox, unique_email
from tests.support import bearer, unique

# The harness's own default From is a `.test` address, which app.mail refuses (a
# special-use domain), so these tests configure a deliverable-looking one.
DEFAULT_FROM = "crm@leadmail.example"

SERVICE_OVERRIDES: dict[str, Any] = {
    "default_from_address": DEFAULT_FROM,
    # Retry waits cut to milliseconds so rate-limit and 5xx paths run fast.
    "send_retry_base_seconds": 0.01,
    "send_retry_budget_seconds": 3.0,
    "send_max_attempts": 3,
}


@dataclass
class Rep:
    org: str
    user: str
    email: str
    name: str
    mailbox_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.user, self.org, email=self.email, name=self.name)


def new_rep(name: str = "Jürgen Müller", org: str | None = None) -> Rep:
    return Rep(org=org or unique("org"), user=unique("user"), email=unique_email("rep"), name=name)


async def linked_rep(
    service: LiveService,
    sandbox: RunningSandbox,
    name: str = "Jürgen Müller",
    org: str | None = None,
) -> Rep:
    rep = new_rep(name, org)
    mailbox = await link_mailbox(
        service, sandbox, org_id=rep.org, user_id=rep.user, email=rep.email, name=name
    )
    rep.mailbox_id = mailbox["id"]
    return rep


def customer(sandbox: RunningSandbox, name: str = "Ann Lead") -> str:
    """A lead with a sandbox mailbox, so what we send lands somewhere we can look."""
    return sandbox.create_account(unique_email("lead"), name)


async def send(
    service: LiveService,
    rep: Rep,
    lead_id: str,
    body: dict[str, Any],
    *,
    key: str | None = None,
    expect: int | None = 201,
) -> httpx.Response:
    headers = dict(rep.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await service.http.post(f"/v1/leads/{lead_id}/messages", json=body, headers=headers)
    if expect is not None:
        assert response.status_code == expect, response.text
    return response


def outgoing_for(sandbox: RunningSandbox, rfc822_id: str) -> list[dict[str, Any]]:
    """Everything the sandbox handed out (Gmail API or SMTP) with this Message-ID."""
    return [item for item in sandbox.outgoing() if item["message_id"] == rfc822_id]


def raw_of(item: dict[str, Any]) -> EmailMessage:
    raw = base64.urlsafe_b64decode(item["raw_b64"] + "=" * (-len(item["raw_b64"]) % 4))
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def sends_from(sandbox: RunningSandbox, email: str) -> list[dict[str, Any]]:
    """The `messages.send` calls the sandbox answered for one mailbox (via its outgoing log)."""
    return [
        item
        for item in sandbox.outgoing()
        if item["via"] == "gmail" and item["envelope_from"] == email
    ]


def gmail_calls(sandbox: RunningSandbox, email: str, method: str = "messages.send") -> list[int]:
    """Statuses of the Gmail calls of one kind the sandbox answered for one mailbox."""
    return [call["status"] for call in sandbox.calls(f"gmail.users.{method}", account=email)]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body

"""GET /v1/outbox: the caller's or the organization's outbound mail, filtered and paged."""

from __future__ import annotations

from typing import Any

from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sending.helpers import Rep, customer, linked_rep, new_rep, problem, send
from tests.support import unique

SEND = "gmail.users.messages.send"


async def _outbox(service: LiveService, rep: Rep, **params: Any) -> list[dict[str, Any]]:
    """Every page, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = await service.http.get("/v1/outbox", params=query, headers=rep.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        if "limit" in params:
            assert len(page["items"]) <= params["limit"]
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_outbox_filters_scopes_and_pages_newest_first(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    colleague = new_rep(org=rep.org)  # no mailbox: default sender
    lead_address = customer(sandbox)
    lead = unique("lead")

    def body(n: int) -> dict[str, Any]:
        return {"to": [lead_address], "subject": f"m{n}", "body_text": str(n)}

    mine = [(await send(live_service, rep, lead, body(n))).json()["id"] for n in range(5)]
    sandbox.fault(SEND, "failed_precondition", account=rep.email)
    failed = (await send(live_service, rep, lead, body(5), expect=502)).json()["message"]["id"]
    theirs = (await send(live_service, colleague, lead, body(6))).json()["id"]

    everything_mine = [*mine, failed][::-1]
    assert [m["id"] for m in await _outbox(live_service, rep)] == everything_mine
    assert [m["id"] for m in await _outbox(live_service, rep, limit=2)] == everything_mine
    assert [m["id"] for m in await _outbox(live_service, rep, scope="mine", limit=4)] == (
        everything_mine
    )
    org_wide = [m["id"] for m in await _outbox(live_service, rep, scope="org", limit=3)]
    assert org_wide == [theirs, *everything_mine]

    assert [m["id"] for m in await _outbox(live_service, rep, status="failed")] == [failed]
    sent = await _outbox(live_service, rep, status="sent", limit=2)
    assert [m["id"] for m in sent] == mine[::-1]
    assert {m["status"] for m in sent} == {"sent"}
    assert await _outbox(live_service, rep, status="queued") == []

    via_mailbox = await _outbox(live_service, rep, scope="org", mailbox_id=rep.mailbox_id)
    # The failed send never went through the mailbox, but it was meant to: it is listed
    # under it; the colleague's default-sender mail is not.
    assert [m["id"] for m in via_mailbox] == [failed, *mine[::-1]]
    assert await _outbox(live_service, rep, mailbox_id="0" * 32) == []

    # Another organization sees none of it.
    stranger = new_rep()
    assert await _outbox(live_service, stranger, scope="org") == []


async def test_outbox_rejects_nonsense_parameters(live_service: LiveService) -> None:
    rep = new_rep()
    for params in (
        {"status": "received"},
        {"status": "bogus"},
        {"scope": "everyone"},
        {"limit": 0},
        {"limit": 201},
        {"cursor": "not-a-cursor"},
    ):
        response = await live_service.http.get("/v1/outbox", params=params, headers=rep.headers)
        problem(response, 422)
    problem(await live_service.http.get("/v1/outbox"), 401)

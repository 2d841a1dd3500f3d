"""Gmail rate limits and 5xx on send: jittered retries within a bound, then `failed`.

The service under test waits 10 ms base backoff, at most 3 attempts, at most 3 s in all
(tests/sending/helpers.py SERVICE_OVERRIDES).
"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from sandbox.testing import RunningSandbox
from tests.harness import LiveService
from tests.sending.helpers import customer, gmail_calls, linked_rep, problem, send
from tests.support import unique

SEND = "gmail.users.messages.send"


def _sends(via: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("leadmail_sends_total", {"sent_via": via, "outcome": outcome})
        or 0.0
    )


async def test_a_rate_limit_waits_for_the_time_named_in_the_message(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    # Gmail's usual form: 403 rateLimitExceeded, "Retry after <RFC 3339>", no header.
    sandbox.fault(SEND, "rate_limit", account=rep.email, retry_after=1)
    started = time.monotonic()
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {"to": [customer(sandbox)], "subject": "s", "body_text": "b"},
        )
    ).json()
    elapsed = time.monotonic() - started
    assert sent["status"] == "sent"
    assert gmail_calls(sandbox, rep.email) == [403, 200]
    # Backoff alone would have retried after ~10 ms; the named time is ~1 s away (the
    # text has whole seconds, so it can be a little under a second from now).
    assert elapsed >= 0.5


async def test_a_429_with_retry_after_is_honoured(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    sandbox.fault(
        SEND, "rate_limit", account=rep.email, retry_after=1, status=429, retry_after_header=True
    )
    started = time.monotonic()
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {"to": [customer(sandbox)], "subject": "s", "body_text": "b"},
        )
    ).json()
    assert sent["status"] == "sent"
    assert gmail_calls(sandbox, rep.email) == [429, 200]
    assert time.monotonic() - started >= 0.9


async def test_server_errors_are_retried_after_checking_nothing_went_out(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    sandbox.fault(SEND, "backend_error", count=1, account=rep.email)
    sandbox.fault(SEND, "unavailable", count=1, account=rep.email)
    sent_before = _sends("gmail", "sent")
    sent = (
        await send(
            live_service,
            rep,
            unique("lead"),
            {"to": [customer(sandbox)], "subject": "s", "body_text": "b"},
        )
    ).json()
    assert sent["status"] == "sent"
    assert gmail_calls(sandbox, rep.email) == [500, 503, 200]
    # Before each retry the mailbox was searched for the Message-ID: a 5xx may come
    # after Gmail took the message, and sending it again would duplicate it.
    searches = sandbox.calls("gmail.users.messages.list", account=rep.email)
    assert len(searches) == 2
    assert all("rfc822msgid" in c["query"] for c in searches)
    assert _sends("gmail", "sent") == sent_before + 1


async def test_persistent_server_errors_end_failed_within_the_bound(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    sandbox.fault(SEND, "unavailable", count=10, account=rep.email)
    failed_before = _sends("gmail", "failed")
    started = time.monotonic()
    response = await send(
        live_service,
        rep,
        unique("lead"),
        {"to": [customer(sandbox)], "subject": "s", "body_text": "b"},
        expect=None,
    )
    stored = problem(response, 502)["message"]
    assert stored["status"] == "failed"
    assert "after 3 attempt(s)" in stored["error"] and "503" in stored["error"]
    assert gmail_calls(sandbox, rep.email) == [503, 503, 503]
    assert time.monotonic() - started < 3
    assert _sends("gmail", "failed") == failed_before + 1
    sandbox.clear_faults()


async def test_a_retry_time_beyond_the_bound_fails_at_once(
    live_service: LiveService, sandbox: RunningSandbox
) -> None:
    rep = await linked_rep(live_service, sandbox)
    # The daily sending limit: Gmail says to come back in an hour.
    sandbox.fault(SEND, "sending_limit", account=rep.email, retry_after=3600)
    started = time.monotonic()
    response = await send(
        live_service,
        rep,
        unique("lead"),
        {"to": [customer(sandbox)], "subject": "s", "body_text": "b"},
        expect=None,
    )
    stored = problem(response, 502)["message"]
    assert "Mail sending" in stored["error"]
    assert "retry after" in stored["error"].lower()
    assert gmail_calls(sandbox, rep.email) == [429]
    assert time.monotonic() - started < 2

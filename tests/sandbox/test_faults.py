"""Switchable Gmail faults and the per-user quota (§8 items 23, 24, 26, 27, 28)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from sandbox.testing import RunningSandbox
from tests.sandbox.conftest import unique_email
from tests.sandbox.gmail_client import raw_of, simple_mail

RETRY_AFTER = re.compile(r"^User-rate limit exceeded\.  Retry after (\S+Z)$")


class Api:
    """Raw HTTP, so status codes and headers are visible without a client's retries."""

    def __init__(self, google: RunningSandbox, scopes: list[str] | None = None) -> None:
        self.google = google
        self.email = google.create_account(unique_email("rep"))
        token = google.grant(self.email, scopes or ["gmail.modify"])["access_token"]
        self.client = httpx.Client(
            base_url=f"{google.base_url}/gmail/v1/users/me",
            headers={"Authorization": f"Bearer {token}"},
        )

    def profile(self) -> httpx.Response:
        return self.client.get("/profile")

    def send(self, subject: str = "Hi", to: str = "x@external.test") -> dict[str, Any]:
        response = self.client.post(
            "/messages/send", json={"raw": raw_of(simple_mail(self.email, to, subject))}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def get(self, gmail_id: str) -> httpx.Response:
        return self.client.get(f"/messages/{gmail_id}", params={"format": "minimal"})

    def history(self, start: str) -> httpx.Response:
        return self.client.get("/history", params={"startHistoryId": start})


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_26_rate_limit_403_without_retry_after_header_by_default(google: RunningSandbox) -> None:
    api = Api(google)
    google.fault("gmail.users.getProfile", "rate_limit", retry_after=30)
    response = api.profile()
    assert response.status_code == 403
    assert "retry-after" not in response.headers
    error = _error(response)
    assert error["errors"][0] == {
        "message": error["message"],
        "domain": "usageLimits",
        "reason": "rateLimitExceeded",
    }
    match = RETRY_AFTER.match(error["message"])
    assert match is not None
    datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    assert api.profile().status_code == 200


def test_26_rate_limit_429_with_retry_after_header_when_configured(
    google: RunningSandbox,
) -> None:
    api = Api(google)
    google.settings(retry_after_header=True)
    google.fault("*", "user_rate_limit", status=429, retry_after=7)
    response = api.profile()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert _error(response)["errors"][0]["reason"] == "userRateLimitExceeded"
    assert _error(response)["status"] == "RESOURCE_EXHAUSTED"


def test_26_concurrency_and_sending_limits(google: RunningSandbox) -> None:
    api = Api(google)
    google.fault("gmail.users.getProfile", "concurrent")
    concurrent = api.profile()
    assert (concurrent.status_code, _error(concurrent)["message"]) == (
        429,
        "Too many concurrent requests for user",
    )
    google.fault("gmail.users.messages.send", "sending_limit")
    response = api.client.post(
        "/messages/send", json={"raw": raw_of(simple_mail(api.email, "a@b.test", "x"))}
    )
    assert response.status_code == 429
    assert _error(response)["message"].endswith("(Mail sending)")


def test_26_per_user_quota_bucket_limits_until_the_stated_time(google: RunningSandbox) -> None:
    api = Api(google)
    google.request("POST", "/_sandbox/clock", {"speed": 0.001})
    google.settings(user_quota_per_minute=100, rate_limit_status=429)
    api.send()  # 100 units: the whole minute's budget
    limited = api.profile()
    assert limited.status_code == 429
    first_until = RETRY_AFTER.match(_error(limited)["message"])
    again = api.profile()  # calling early pushes the window further out
    second_until = RETRY_AFTER.match(_error(again)["message"])
    assert first_until is not None and second_until is not None
    assert second_until.group(1) > first_until.group(1)
    google.advance_clock(120)
    assert api.profile().status_code == 200
    stats = google.stats()
    assert stats["units"]["gmail.users.messages.send"] == 100
    assert stats["units_by_account"][api.email] >= 103


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [("backend_error", 500, "backendError"), ("unavailable", 503, "backendError")],
)
def test_27_backend_errors_for_the_next_n_calls(
    google: RunningSandbox, kind: str, status: int, reason: str
) -> None:
    api = Api(google)
    google.fault("gmail.users.history.list", kind, 2)
    start = api.profile().json()["historyId"]
    assert [api.history(start).status_code for _ in range(3)] == [status, status, 200]
    google.fault("gmail.users.history.list", kind, 1)
    assert _error(api.history(start))["errors"][0]["reason"] == reason


def test_27_faults_can_target_one_account(google: RunningSandbox) -> None:
    first, second = Api(google), Api(google)
    google.fault("*", "backend_error", account=first.email)
    assert second.profile().status_code == 200
    assert first.profile().status_code == 500


def test_28_failed_precondition_for_a_mailbox_without_gmail(google: RunningSandbox) -> None:
    api = Api(google)
    google.set_gmail_enabled(api.email, False)
    response = api.profile()
    assert response.status_code == 400
    assert _error(response)["errors"][0]["reason"] == "failedPrecondition"
    assert _error(response)["message"] == "Mail service not enabled"
    google.set_gmail_enabled(api.email, True)
    google.fault("gmail.users.getProfile", "failed_precondition")
    assert _error(api.profile())["message"] == "Precondition check failed."


def test_08_unauthorized_fault_forces_a_401(google: RunningSandbox) -> None:
    api = Api(google)
    google.fault("gmail.users.getProfile", "unauthorized")
    response = api.profile()
    assert response.status_code == 401
    assert _error(response)["errors"][0]["reason"] == "authError"


def test_23_message_in_history_but_get_404s_for_the_next_n_gets(google: RunningSandbox) -> None:
    api = Api(google)
    start = api.profile().json()["historyId"]
    sent = api.send()
    added = api.history(start).json()["history"]
    assert sent["id"] in [
        r["messagesAdded"][0]["message"]["id"] for r in added if "messagesAdded" in r
    ]
    google.fault("gmail.users.messages.get", "not_found", 2)
    assert [api.get(sent["id"]).status_code for _ in range(3)] == [404, 404, 200]


def test_23_history_lags_behind_the_notification(google: RunningSandbox) -> None:
    api = Api(google)
    start = api.profile().json()["historyId"]
    sent = api.send()
    current = api.profile().json()["historyId"]
    google.fault("gmail.users.history.list", "history_lag")
    lagging = api.history(start).json()
    assert int(lagging["historyId"]) < int(current)
    added = [r for r in lagging.get("history", []) if "messagesAdded" in r]
    assert all(r["messagesAdded"][0]["message"]["id"] != sent["id"] for r in added)
    caught_up = api.history(start).json()
    assert caught_up["historyId"] == current
    assert caught_up["history"][-1]["messagesAdded"][0]["message"]["id"] == sent["id"]


def test_24_message_deleted_before_get(google: RunningSandbox) -> None:
    api = Api(google)
    start = api.profile().json()["historyId"]
    sent = api.send()
    google.fault("gmail.users.messages.get", "delete_before_get")
    assert api.get(sent["id"]).status_code == 404
    history = api.history(start).json()["history"]
    assert history[-1]["messagesDeleted"][0]["message"]["id"] == sent["id"]
    assert api.get(sent["id"]).status_code == 404


def test_calls_are_logged_oldest_first_with_gmail_method(google: RunningSandbox) -> None:
    api = Api(google)
    google.clear_calls()
    api.profile()
    api.client.get("/messages/zz!")
    calls = google.calls()
    assert [c["gmail_method"] for c in calls] == [
        "gmail.users.getProfile",
        "gmail.users.messages.get",
    ]
    assert [c["status"] for c in calls] == [200, 400]
    assert calls[0] == {
        "method": "GET",
        "path": "/gmail/v1/users/me/profile",
        "query": "",
        "status": 200,
        "gmail_method": "gmail.users.getProfile",
        "account": api.email,
    }
    assert google.call_counts() == {"gmail.users.getProfile": 1, "gmail.users.messages.get": 1}

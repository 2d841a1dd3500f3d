"""The pure rules behind linking: return-URL origins, result URLs, scopes, call metrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app.errors import InvalidInput
from app.mailboxes.access import GMAIL_QUOTA_COST, record_google_call
from app.mailboxes.service import (
    GMAIL_MODIFY,
    GMAIL_READONLY,
    GMAIL_SEND,
    REQUESTED_SCOPES,
    check_return_url,
    missing_permissions,
    origin_of,
    with_query,
)

ALLOWED = ["https://crm.example.com", "http://localhost:3000"]


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.example.com/settings",
        "https://crm.example.com:443/settings?tab=mail#top",
        "https://CRM.Example.com/",
        "http://localhost:3000/callback",
    ],
)
def test_return_urls_on_an_allowed_origin_pass(url: str) -> None:
    assert check_return_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.net/settings",
        "http://crm.example.com/settings",  # scheme differs
        "https://crm.example.com:8443/settings",  # port differs
        "http://localhost:3001/",
        "http://localhost/",  # port 80, not 3000
        "https://crm.example.com.evil.net/",
        "https://evil.net/https://crm.example.com/",
        "https://crm.example.com@evil.net/",
        "https://user:pw@crm.example.com/",  # userinfo is refused even on our host
        "https://evil.net\\@crm.example.com/",
        "https://evil.net\\.crm.example.com/",
        "//crm.example.com/settings",
        "/settings",
        "javascript:alert(1)//crm.example.com",
        "data:text/html,hi",
        "https://crm.example.com:99999/",
        "https://crm.example.com\t/",
        "https:///crm.example.com/",
        "",
    ],
)
def test_any_other_return_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_return_url(url, ALLOWED)


def test_origins_compare_scheme_host_and_port_with_default_ports_filled_in() -> None:
    assert origin_of("https://a.example/x") == "https://a.example:443"
    assert origin_of("http://A.example:80") == "http://a.example:80"
    assert origin_of("ftp://a.example/") is None


def test_result_parameters_are_added_without_losing_query_or_fragment() -> None:
    url = with_query(
        "https://crm.example.com/s?tab=mail&status=stale#frag", status="connected", mailbox_id="m1"
    )
    assert url == "https://crm.example.com/s?tab=mail&status=connected&mailbox_id=m1#frag"


def test_the_minimal_scopes_are_asked_and_a_grant_must_both_read_and_send() -> None:
    assert set(REQUESTED_SCOPES) == {GMAIL_SEND, GMAIL_READONLY}
    assert missing_permissions(frozenset(REQUESTED_SCOPES)) == []
    assert missing_permissions(frozenset({GMAIL_MODIFY})) == []
    assert missing_permissions(frozenset({GMAIL_SEND})) == ["read"]
    assert missing_permissions(frozenset({GMAIL_READONLY})) == ["send"]
    assert missing_permissions(frozenset()) == ["read", "send"]


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_gmail_calls_are_counted_with_their_quota_cost() -> None:
    calls = ("leadmail_gmail_calls_total", {"method": "threads.get", "status": "200"})
    units = ("leadmail_gmail_quota_units_total", {"method": "threads.get"})
    limited = ("leadmail_gmail_calls_total", {"method": "threads.get", "status": "429"})
    before = [_sample(*calls), _sample(*units), _sample(*limited)]
    record_google_call("threads.get", 200, 0.01)
    record_google_call("threads.get", 429, 0.01)
    record_google_call("token.refresh", 200, 0.01)
    assert _sample(*calls) == before[0] + 1
    assert _sample(*limited) == before[2] + 1
    # the refused call is not charged; threads.get costs 40 under the new regime
    assert _sample(*units) == before[1] + GMAIL_QUOTA_COST["threads.get"] == before[1] + 40
    assert _sample("leadmail_gmail_calls_total", {"method": "token.refresh", "status": "200"}) == 0

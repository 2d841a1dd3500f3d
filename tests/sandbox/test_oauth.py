"""OAuth against the sandbox: consent, code exchange, refresh (google-auth), revocation.

Named after GOOGLE.md §8 items 2-7."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials

from sandbox.testing import GMAIL_READONLY, GMAIL_SEND, RunningSandbox
from tests.sandbox.conftest import unique_email

REDIRECT = "http://localhost:8000/v1/oauth/google/callback"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _auth_params(google: RunningSandbox, email: str, **extra: str) -> dict[str, str]:
    params = {
        "client_id": google.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"{GMAIL_SEND} {GMAIL_READONLY}",
        "access_type": "offline",
        "prompt": "consent",
        "state": "st-123",
        "login_hint": email,
    }
    params.update(extra)
    return params


def _redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _exchange(
    google: RunningSandbox, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return httpx.post(google.token_uri, data=form)


def _consent(google: RunningSandbox, email: str, **extra: str) -> dict[str, str]:
    google.set_consent(auto=True)
    response = httpx.get(google.auth_uri, params=_auth_params(google, email, **extra))
    return _redirect_query(response)


def test_02_auto_consent_redirects_with_code_state_and_scope(google: RunningSandbox) -> None:
    email = unique_email("rep")
    _, challenge = _pkce()
    query = _consent(google, email, code_challenge=challenge, code_challenge_method="S256")
    assert query["state"] == "st-123"
    assert query["code"].startswith("4/0A")
    assert query["scope"].split() == [GMAIL_SEND, GMAIL_READONLY]
    assert query["iss"] == "https://accounts.google.com"


def test_02_consent_page_has_allow_and_deny_and_posting_allow_redirects(
    google: RunningSandbox,
) -> None:
    email = unique_email("rep")
    page = httpx.get(google.auth_uri, params=_auth_params(google, email))
    assert page.status_code == 200
    assert 'value="allow"' in page.text and 'value="deny"' in page.text
    form = {**_auth_params(google, email), "email": email, "decision": "allow"}
    form_items = [*form.items(), ("granted_scope", GMAIL_SEND)]
    response = httpx.post(
        google.auth_uri,
        content=urlencode(form_items),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    query = _redirect_query(response)
    assert query["scope"] == GMAIL_SEND  # the user unticked readonly: granular consent


def test_02_deny_switch_redirects_access_denied(google: RunningSandbox) -> None:
    google.set_consent(auto=True, decision="deny")
    response = httpx.get(google.auth_uri, params=_auth_params(google, unique_email("rep")))
    assert _redirect_query(response) == {"error": "access_denied", "state": "st-123"}


def test_02_granular_consent_switch_grants_a_subset(google: RunningSandbox) -> None:
    google.set_consent(auto=True, scopes=[GMAIL_SEND])
    response = httpx.get(google.auth_uri, params=_auth_params(google, unique_email("rep")))
    code = _redirect_query(response)["code"]
    token = _exchange(google, code, None).json()
    assert token["scope"] == GMAIL_SEND


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"client_id": "nope"}, 401, "invalid_client"),
        ({"redirect_uri": "not-a-url"}, 400, "redirect_uri_mismatch"),
        ({"access_type": "sometimes"}, 400, "invalid_request"),
        ({"prompt": "none consent"}, 400, "invalid_request"),
        ({"code_challenge_method": "S512", "code_challenge": "x" * 43}, 400, "invalid_request"),
    ],
)
def test_02_authorization_errors_show_googles_page(
    google: RunningSandbox, change: dict[str, str], status: int, error: str
) -> None:
    google.set_consent(auto=True)
    params = _auth_params(google, unique_email("rep"), **change)
    response = httpx.get(google.auth_uri, params=params)
    assert response.status_code == status
    assert f"Error {status}: {error}" in response.text


def test_02_unsupported_response_type_is_redirected(google: RunningSandbox) -> None:
    google.set_consent(auto=True)
    params = _auth_params(google, unique_email("rep"), response_type="token")
    assert _redirect_query(httpx.get(google.auth_uri, params=params))["error"] == (
        "unsupported_response_type"
    )


def test_03_code_exchange_with_s256_pkce_is_single_use(google: RunningSandbox) -> None:
    verifier, challenge = _pkce()
    code = _consent(
        google, unique_email("rep"), code_challenge=challenge, code_challenge_method="S256"
    )["code"]
    first = _exchange(google, code, verifier)
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["refresh_token"].startswith("1//")
    assert body["scope"] == f"{GMAIL_SEND} {GMAIL_READONLY}"
    again = _exchange(google, code, verifier)
    assert again.status_code == 400
    assert again.json() == {
        "error": "invalid_grant",
        "error_description": "Code was already redeemed.",
    }


def test_03_plain_pkce_and_wrong_verifiers(google: RunningSandbox) -> None:
    verifier = secrets.token_urlsafe(48)
    query = _consent(google, unique_email("rep"), code_challenge=verifier)  # method omitted: plain
    wrong = _exchange(google, query["code"], verifier + "x")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    missing = _exchange(google, query["code"], None)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_grant"
    assert _exchange(google, query["code"], verifier).status_code == 200


def test_03_redirect_uri_mismatch_and_expired_code(google: RunningSandbox) -> None:
    code = _consent(google, unique_email("rep"))["code"]
    mismatch = _exchange(google, code, None, redirect_uri="http://localhost:9999/cb")
    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "redirect_uri_mismatch"
    google.advance_clock(google.config.code_ttl + 1)
    expired = _exchange(google, code, None)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"


def test_03_refresh_token_only_for_offline_with_consent_shown(google: RunningSandbox) -> None:
    email = unique_email("rep")
    first = _exchange(google, _consent(google, email)["code"], None).json()
    assert "refresh_token" in first
    online = _consent(google, email, access_type="online")
    assert "refresh_token" not in _exchange(google, online["code"], None).json()
    # Consented before and no prompt=consent: Google skips the screen, so no refresh token.
    params = _auth_params(google, email)
    del params["prompt"]
    skipped = _redirect_query(httpx.get(google.auth_uri, params=params))
    assert skipped["prompt"] == "none"
    assert "refresh_token" not in _exchange(google, skipped["code"], None).json()


def test_03_client_auth_by_http_basic_and_form_only(google: RunningSandbox) -> None:
    code = _consent(google, unique_email("rep"))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    response = httpx.post(
        google.token_uri, data=form, auth=(google.client_id, google.client_secret)
    )
    assert response.status_code == 200
    as_json = httpx.post(google.token_uri, json=form)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


def test_03_zero_ttl_gives_born_expired_tokens(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    google.settings(access_token_ttl=0)
    tokens = google.grant(email, ["gmail.readonly"])
    assert tokens["expires_in"] == 0
    response = httpx.get(
        f"{google.base_url}/gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert response.status_code == 401


def _creds(google: RunningSandbox, refresh_token: str, **extra: Any) -> Credentials:
    return Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=google.token_uri,
        client_id=google.client_id,
        client_secret=google.client_secret,
        **extra,
    )


def test_04_google_auth_refresh_against_sandbox(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    tokens = google.grant(email, ["gmail.send", "gmail.readonly"])
    creds = _creds(google, tokens["refresh_token"])
    creds.refresh(Request())
    assert creds.valid and creds.token.startswith("ya29.")
    assert creds.refresh_token == tokens["refresh_token"]  # not rotated by default
    profile = httpx.get(
        f"{google.base_url}/gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {creds.token}"},
    )
    assert profile.json()["emailAddress"] == email


def test_04_refresh_scope_subset_and_invalid_scope(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.send", "gmail.readonly"])["refresh_token"]
    narrowed = _creds(google, refresh, scopes=[GMAIL_SEND])
    narrowed.refresh(Request())
    widened = _creds(google, refresh, scopes=["https://mail.google.com/"])
    with pytest.raises(RefreshError) as caught:
        widened.refresh(Request())
    assert caught.value.args[1]["error"] == "invalid_scope"


def test_04_rotation_switch_returns_new_refresh_token(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.settings(rotate_refresh_tokens=True)
    creds = _creds(google, refresh)
    creds.refresh(Request())
    assert creds.refresh_token != refresh


def test_04_unknown_client_and_wrong_secret(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh}
    unknown = httpx.post(google.token_uri, data={**form, "client_id": "x", "client_secret": "y"})
    assert unknown.status_code == 401
    assert unknown.json() == {
        "error": "invalid_client",
        "error_description": "The OAuth client was not found.",
    }
    wrong = httpx.post(
        google.token_uri, data={**form, "client_id": google.client_id, "client_secret": "y"}
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "invalid_client", "error_description": "Unauthorized"}


def test_05_invalid_grant_after_revoke_raises_refresh_error(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.revoke(email)
    with pytest.raises(RefreshError) as caught:
        _creds(google, refresh).refresh(Request())
    assert caught.value.args[1] == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    assert caught.value.retryable is False


def test_05_password_change_and_idle_expiry_and_testing_mode(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    changed = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.change_password(email)
    with pytest.raises(RefreshError):
        _creds(google, changed).refresh(Request())
    idle = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.advance_clock(184 * 86400)
    with pytest.raises(RefreshError):
        _creds(google, idle).refresh(Request())
    google.settings(testing_mode=True)
    short = google.grant(email, ["gmail.readonly"])["refresh_token"]
    _creds(google, short).refresh(Request())
    google.advance_clock(8 * 86400)
    with pytest.raises(RefreshError):
        _creds(google, short).refresh(Request())


def test_05_hundred_and_first_refresh_token_evicts_the_oldest(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    oldest = google.grant(email, ["gmail.readonly"])["refresh_token"]
    for _ in range(100):
        google.grant(email, ["gmail.readonly"])
    with pytest.raises(RefreshError):
        _creds(google, oldest).refresh(Request())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        (
            {"description": "Bad Request"},
            {"error": "invalid_grant", "error_description": "Bad Request"},
        ),
        (
            {"subtype": "invalid_rapt"},
            {
                "error": "invalid_grant",
                "error_description": "reauth related error (invalid_rapt)",
                "error_subtype": "invalid_rapt",
            },
        ),
    ],
)
def test_05_invalid_grant_fault_variants(
    google: RunningSandbox, params: dict[str, str], expected: dict[str, str]
) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.fault("oauth.token", "invalid_grant", **params)
    response = httpx.post(
        google.token_uri,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": google.client_id,
            "client_secret": google.client_secret,
        },
    )
    assert response.status_code == 400
    assert response.json() == expected


def test_06_token_endpoint_503_then_success_is_retried_by_google_auth(
    google: RunningSandbox,
) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.fault("oauth.token", "unavailable", 1)
    creds = _creds(google, refresh)
    creds.refresh(Request())
    assert creds.valid
    statuses = [c["status"] for c in google.calls() if c["path"] == "/token"]
    assert statuses == [503, 200]


@pytest.mark.parametrize(("kind", "status"), [("server_error", 500), ("rate_limit", 429)])
def test_06_token_endpoint_fault_statuses(google: RunningSandbox, kind: str, status: int) -> None:
    email = google.create_account(unique_email("rep"))
    refresh = google.grant(email, ["gmail.readonly"])["refresh_token"]
    google.fault("oauth.token", kind, 1, account=email)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": google.client_id,
        "client_secret": google.client_secret,
    }
    assert httpx.post(google.token_uri, data=form).status_code == status
    assert httpx.post(google.token_uri, data=form).status_code == 200


def test_07_revocation_kills_the_whole_grant(google: RunningSandbox) -> None:
    email = google.create_account(unique_email("rep"))
    tokens = google.grant(email, ["gmail.readonly"])
    response = httpx.post(google.revoke_uri, data={"token": tokens["access_token"]})
    assert response.status_code == 200 and response.content == b""
    profile = httpx.get(
        f"{google.base_url}/gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert profile.status_code == 401
    with pytest.raises(RefreshError):
        _creds(google, tokens["refresh_token"]).refresh(Request())
    again = httpx.post(google.revoke_uri, params={"token": tokens["refresh_token"]})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_token"
    unknown = httpx.post(google.revoke_uri, data={"token": "nonsense"})
    assert unknown.status_code == 400

"""Gmail push through the sandbox's Pub/Sub push sender, received by a real HTTP server.

Named after GOOGLE.md §8 items 17-22 and 25."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import Request
from google.oauth2 import id_token

from sandbox.pubsub import USER_AGENT
from sandbox.testing import RunningSandbox
from tests.sandbox.conftest import Captured, PushReceiver, unique_email
from tests.sandbox.gmail_client import gmail_service, raw_of, simple_mail


def _data(push: Captured) -> dict[str, Any]:
    envelope = push.json()
    decoded: dict[str, Any] = json.loads(base64.b64decode(envelope["message"]["data"]))
    return decoded


def _watched(
    google: RunningSandbox, receiver: PushReceiver, **push_settings: Any
) -> tuple[str, Any]:
    google.set_push_endpoint(receiver.url, retry_backoff=0.05, **push_settings)
    email = google.create_account(unique_email("rep"), "Rita Rep")
    gmail = gmail_service(google, google.grant(email, ["gmail.modify"]))
    gmail.users().watch(userId="me", body={"topicName": google.topic()}).execute()
    return email, gmail


def _send(gmail: Any, email: str, subject: str = "Hi") -> dict[str, Any]:
    sent: dict[str, Any] = (
        gmail.users()
        .messages()
        .send(userId="me", body={"raw": raw_of(simple_mail(email, "x@external.test", subject))})
        .execute()
    )
    return sent


def _final_notifications(google: RunningSandbox, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The notification log once no delivery is still in flight."""
    deadline = time.monotonic() + timeout
    while True:
        items = google.notifications()
        if all(n["state"] not in ("pending", "retrying", "held") for n in items):
            return items
        assert time.monotonic() < deadline, items
        time.sleep(0.02)


def _verify(google: RunningSandbox, token: str, audience: str) -> dict[str, Any]:
    claims: dict[str, Any] = id_token.verify_token(
        token, Request(), audience=audience, certs_url=google.certs_uri
    )
    return claims


def test_17_watch_publishes_at_once_in_the_wrapped_envelope(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    email, gmail = _watched(google, push_receiver)
    (push,) = push_receiver.wait_for(1)
    assert push.headers["Content-Type"] == "application/json"
    assert push.headers["User-Agent"] == USER_AGENT
    envelope = push.json()
    message = envelope["message"]
    assert message["messageId"] == message["message_id"]
    assert message["publishTime"] == message["publish_time"]
    assert message["publishTime"].endswith("Z")
    assert envelope["subscription"] == "projects/sandbox-project/subscriptions/gmail-push"
    assert "attributes" not in message and "deliveryAttempt" not in envelope
    data = _data(push)
    assert data["emailAddress"] == email
    profile = gmail.users().getProfile(userId="me").execute()
    assert data["historyId"] == int(profile["historyId"])  # a JSON number by default


def test_19_push_token_verifies_with_google_auth_against_sandbox_certs(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    _watched(google, push_receiver)
    (push,) = push_receiver.wait_for(1)
    scheme, _, token = push.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = _verify(google, token, push_receiver.url)
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == push_receiver.url
    assert claims["email"] == "gmail-push@sandbox.iam.gserviceaccount.com"
    assert claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["sub"] == claims["azp"]


def test_19_certs_carry_cache_control_and_jwks_matches(google: RunningSandbox) -> None:
    import httpx

    v1 = httpx.get(google.certs_uri)
    assert "max-age=" in v1.headers["cache-control"]
    assert all(pem.startswith("-----BEGIN CERTIFICATE-----") for pem in v1.json().values())
    v3 = httpx.get(f"{google.base_url}/oauth2/v3/certs").json()
    assert {k["kid"] for k in v3["keys"]} == set(v1.json())
    assert all(k["alg"] == "RS256" and k["kty"] == "RSA" for k in v3["keys"])


def test_18_changes_push_at_most_once_per_second_and_extra_ones_are_dropped(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    google.request("POST", "/_sandbox/clock", {"speed": 0.001})  # real time hardly counts
    email, gmail = _watched(google, push_receiver)
    push_receiver.wait_for(1)
    _send(gmail, email, "dropped: same second as the watch")
    google.advance_clock(1.5)
    _send(gmail, email, "pushed")
    _send(gmail, email, "dropped again")
    pushes = push_receiver.settle()
    assert len(pushes) == 2
    profile = gmail.users().getProfile(userId="me").execute()
    assert _data(pushes[1])["historyId"] < int(profile["historyId"])
    stats = google.request("GET", "/_sandbox/push/notifications")
    assert stats["dropped"]["rate"] >= 2  # each history record is a change, some twice


def test_19_nack_is_redelivered_with_the_same_message_id(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    push_receiver.statuses = [500, 404]
    _watched(google, push_receiver)
    pushes = push_receiver.wait_for(3)
    assert len({p.json()["message"]["messageId"] for p in pushes}) == 1
    (record,) = _final_notifications(google)
    assert record["state"] == "acked"
    assert [d["status"] for d in record["deliveries"]] == [500, 404, 204]


def test_19_delivery_attempts_are_bounded(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    push_receiver.default_status = 503
    _watched(google, push_receiver, max_attempts=3)
    push_receiver.wait_for(3)
    assert len(push_receiver.settle()) == 3
    assert _final_notifications(google)[0]["state"] == "failed"


def test_19_timeout_counts_as_nack(google: RunningSandbox, push_receiver: PushReceiver) -> None:
    push_receiver.delay = 0.4
    _watched(google, push_receiver, ack_deadline=0.1, max_attempts=2)
    push_receiver.wait_for(2)
    push_receiver.delay = 0.0
    (record,) = _final_notifications(google)
    assert record["deliveries"][0]["status"] is None
    assert "Timeout" in record["deliveries"][0]["error"]


def test_19_unwrapped_mode_and_string_history_id(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    email, _ = _watched(google, push_receiver, wrapped=False, history_id_as_string=True)
    (push,) = push_receiver.wait_for(1)
    body = push.json()
    assert body["emailAddress"] == email and isinstance(body["historyId"], str)
    assert push.headers["x-goog-pubsub-message-id"]


def test_17_watch_expires_after_seven_days_unless_renewed(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    email, gmail = _watched(google, push_receiver)
    push_receiver.wait_for(1)
    google.advance_clock(7 * 86400 + 1)
    _send(gmail, email)
    assert len(push_receiver.settle()) == 1
    gmail.users().watch(userId="me", body={"topicName": google.topic()}).execute()
    google.advance_clock(2)
    _send(gmail, email)
    assert len(push_receiver.wait_for(3)) == 3  # the renewal's own push, then the change


def test_17_stop_ends_pushes(google: RunningSandbox, push_receiver: PushReceiver) -> None:
    email, gmail = _watched(google, push_receiver)
    push_receiver.wait_for(1)
    gmail.users().stop(userId="me").execute()
    google.advance_clock(2)
    _send(gmail, email)
    assert len(push_receiver.settle()) == 1


def test_17_label_filter_include(google: RunningSandbox, push_receiver: PushReceiver) -> None:
    google.set_push_endpoint(push_receiver.url)
    email = google.create_account(unique_email("rep"))
    gmail = gmail_service(google, google.grant(email, ["gmail.modify"]))
    gmail.users().watch(
        userId="me",
        body={"topicName": google.topic(), "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"},
    ).execute()
    push_receiver.wait_for(1)
    google.advance_clock(2)
    _send(gmail, email)  # SENT only: filtered out
    google.customer_new_thread(unique_email("lead"), [email], "Question", "Hello?")
    pushes = push_receiver.settle()
    assert len(pushes) == 2
    assert google.request("GET", "/_sandbox/push/notifications")["dropped"]["label_filter"] == 1


def test_20_duplicate_fault_delivers_the_same_message_twice(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    google.push_fault("duplicate")
    _watched(google, push_receiver)
    first, second = push_receiver.wait_for(2)
    assert first.json()["message"]["messageId"] == second.json()["message"]["messageId"]


def test_21_reorder_fault_delivers_the_older_notification_last(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    google.push_fault("reorder")
    email, gmail = _watched(google, push_receiver)
    google.advance_clock(2)
    _send(gmail, email)
    first, second = push_receiver.wait_for(2)
    assert _data(first)["historyId"] > _data(second)["historyId"]


def test_22_drop_fault_sends_nothing(google: RunningSandbox, push_receiver: PushReceiver) -> None:
    google.push_fault("drop")
    email, gmail = _watched(google, push_receiver)
    google.advance_clock(2)
    _send(gmail, email)
    pushes = push_receiver.settle()
    assert len(pushes) == 1
    assert google.notifications()[0]["state"] == "dropped"


def test_22_fault_scoped_to_one_mailbox_spares_the_others(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    email, gmail = _watched(google, push_receiver)
    other = google.create_account(unique_email("other"), "Otto Other")
    other_gmail = gmail_service(google, google.grant(other, ["gmail.modify"]))
    other_gmail.users().watch(userId="me", body={"topicName": google.topic()}).execute()
    google.push_fault("drop", email=email)
    google.advance_clock(2)
    _send(other_gmail, other)
    _send(gmail, email)
    push_receiver.wait_for(1)
    pushes = push_receiver.settle()
    assert "dropped" in [n["state"] for n in google.notifications(email)]
    assert all(n["state"] == "acked" for n in google.notifications(other))
    assert other in {_data(push)["emailAddress"] for push in pushes}


def test_22_delay_fault_holds_a_push_back(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    google.push_fault("delay", delay=0.5)
    email, gmail = _watched(google, push_receiver)
    google.advance_clock(2)
    _send(gmail, email)
    first, second = push_receiver.wait_for(2)
    assert _data(first)["historyId"] > _data(second)["historyId"]


@pytest.mark.parametrize(
    ("forgery", "message"),
    [
        ({"key": "unknown"}, "Certificate for key id"),
        ({"key": "bad_signature"}, "Could not verify token signature"),
        ({"claims": {"aud": "https://elsewhere.example"}}, "wrong audience"),
        ({"claims": {"exp": 1_000_000, "iat": 996_400}}, "expired"),
        ({"claims": {"iat": 4_102_444_800, "exp": 4_102_448_400}}, "too early"),
    ],
)
def test_25_forged_push_tokens_are_rejected(
    google: RunningSandbox, forgery: dict[str, Any], message: str
) -> None:
    audience = "https://service.example/v1/webhooks/gmail"
    good = google.push_token(audience=audience)
    assert _verify(google, good, audience)["aud"] == audience
    bad = google.push_token(audience=audience, **forgery)
    with pytest.raises((ValueError, auth_exceptions.GoogleAuthError)) as caught:
        _verify(google, bad, audience)
    assert message.lower() in str(caught.value).lower()


def test_25_claims_a_receiver_checks_itself_can_be_forged(google: RunningSandbox) -> None:
    audience = "https://service.example/hook"
    token = google.push_token(
        audience=audience,
        claims={"iss": "https://evil.example", "email_verified": False, "email": "x@y.test"},
    )
    claims = _verify(google, token, audience)  # signature and audience are fine...
    assert claims["iss"] == "https://evil.example"  # ...so the receiver must check these
    assert claims["email_verified"] is False


def test_25_key_rotation_publishes_new_key_then_retires_old(
    google: RunningSandbox, push_receiver: PushReceiver
) -> None:
    import httpx

    old = google.request("GET", "/_sandbox/keys")["active"]
    old_token = google.push_token(audience="aud")
    new = google.rotate_key()
    assert set(httpx.get(google.certs_uri).json()) == {old, new}
    new_token = google.push_token(audience="aud")
    assert _verify(google, old_token, "aud") and _verify(google, new_token, "aud")
    assert google.retire_key() == old
    assert set(httpx.get(google.certs_uri).json()) == {new}
    with pytest.raises(ValueError):
        _verify(google, old_token, "aud")
    _watched(google, push_receiver)
    (push,) = push_receiver.wait_for(1)
    token = push.headers["Authorization"].split()[1]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": new}

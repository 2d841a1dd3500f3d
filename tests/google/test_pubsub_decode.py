"""Decoding Gmail notifications from Pub/Sub push bodies and pull data (GOOGLE.md §4, §5.1-5.2)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.google.errors import UndecodablePush
from app.google.pubsub import decode_pubsub_data, decode_push_body


def envelope(data: str, **message: Any) -> bytes:
    body = {
        "message": {"data": data, **message},
        "subscription": "projects/p/subscriptions/gmail-push",
    }
    return json.dumps(body).encode()


def std_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


NOTIFICATION = b'{"emailAddress": "rep@example.com", "historyId": 9876543210}'


def test_wrapped_envelope_with_both_id_spellings() -> None:
    body = envelope(
        std_b64(NOTIFICATION),
        messageId="2070443601311540",
        message_id="2070443601311540",
        publishTime="2021-02-26T19:13:55.749Z",
        publish_time="2021-02-26T19:13:55.749Z",
    )
    notification = decode_push_body(body, {"content-type": "application/json"})
    assert notification.email_address == "rep@example.com"
    assert notification.history_id == 9876543210
    assert notification.message_id == "2070443601311540"
    assert notification.publish_time == datetime(2021, 2, 26, 19, 13, 55, 749000, tzinfo=UTC)


def test_snake_case_only_and_url_safe_unpadded_data() -> None:
    raw = b'{"emailAddress":"a@example.com","historyId":"1710","x":"??>>~~"}'
    data = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert set(data) & {"-", "_"}, "the sample must exercise the url-safe alphabet"
    assert len(data) % 4, "and come without its padding"
    notification = decode_push_body(
        envelope(data, message_id="42", publish_time="2026-01-01T00:00:00.1Z"), {}
    )
    assert (notification.history_id, notification.message_id) == (1710, "42")
    assert notification.publish_time == datetime(2026, 1, 1, 0, 0, 0, 100000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("history_json", "expected"),
    [
        ("1710", 1710),
        ('"1710"', 1710),
        ("18446744073709551615", 2**64 - 1),  # above 2^53: must stay exact
        ('"18446744073709551615"', 2**64 - 1),
        ("9007199254740993", 2**53 + 1),
    ],
)
def test_history_id_as_number_or_string_stays_exact(history_json: str, expected: int) -> None:
    raw = f'{{"emailAddress": "a@example.com", "historyId": {history_json}}}'.encode()
    assert decode_push_body(envelope(std_b64(raw)), {}).history_id == expected
    assert decode_pubsub_data(raw).history_id == expected


def test_unwrapped_body_takes_metadata_from_headers() -> None:
    headers = {
        "X-Goog-Pubsub-Message-Id": "777",
        "X-Goog-Pubsub-Publish-Time": "2026-03-04T05:06:07Z",
        "X-Goog-Pubsub-Subscription-Name": "projects/p/subscriptions/s",
    }
    notification = decode_push_body(NOTIFICATION, headers)
    assert notification.email_address == "rep@example.com"
    assert notification.message_id == "777"
    assert notification.publish_time == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_unwrapped_body_without_metadata() -> None:
    notification = decode_push_body(NOTIFICATION, {})
    assert notification.message_id is None and notification.publish_time is None


def test_unparsable_publish_time_does_not_drop_the_notification() -> None:
    body = envelope(std_b64(NOTIFICATION), messageId="1", publishTime="yesterday")
    assert decode_push_body(body, {}).publish_time is None


def test_pull_data_with_message_id() -> None:
    notification = decode_pubsub_data(NOTIFICATION, message_id="m-1")
    assert (notification.history_id, notification.message_id) == (9876543210, "m-1")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"subscription": "projects/p/subscriptions/s"}',
        envelope("!!!not base64!!!"),
        envelope("a"),
        envelope(""),
        json.dumps({"message": {"messageId": "1"}}).encode(),
        json.dumps({"message": {"data": 5}}).encode(),
        envelope(std_b64(b"not json")),
        envelope(std_b64(b'["emailAddress"]')),
        envelope(std_b64(b'{"historyId": 5}')),
        envelope(std_b64(b'{"emailAddress": "", "historyId": 5}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com"}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com", "historyId": true}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com", "historyId": 1.5}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com", "historyId": "12abc"}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com", "historyId": -3}')),
        envelope(std_b64(b'{"emailAddress": "a@example.com", "historyId": 0}')),
        b'{"emailAddress": "a@example.com", "historyId": null}',
    ],
)
def test_undecodable_bodies_raise_undecodable_push(body: bytes) -> None:
    with pytest.raises(UndecodablePush):
        decode_push_body(body, {})


def test_undecodable_push_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode_pubsub_data(b"{}")

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from typing import Any

import pytest

from app.mail import (
    Address,
    MailInputError,
    build_message,
    build_references,
    make_message_id,
    parse_message,
    to_bytes,
)

SENT_AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _build(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "from_address": "tom@sales.example.com",
        "from_name": "Tom Baker",
        "to": ["Anna Schmidt <anna@customer.example>"],
        "cc": [],
        "bcc": [],
        "subject": "Our offer",
        "body_text": "Hello Anna",
        "body_html": None,
        "message_id": "<m1@sales.example.com>",
        "date": SENT_AT,
    }
    fields.update(overrides)
    return to_bytes(build_message(**fields))


def test_headers_survive_a_round_trip() -> None:
    raw = _build(
        cc=["cc@customer.example"],
        reply_to="Tom <tom@gmail.example>",
        in_reply_to="<parent@customer.example>",
        references=["<root@customer.example>", "<parent@customer.example>"],
    )
    parsed = parse_message(raw)
    assert parsed.from_ == Address("tom@sales.example.com", "Tom Baker")
    assert parsed.to == (Address("anna@customer.example", "Anna Schmidt"),)
    assert parsed.cc == (Address("cc@customer.example"),)
    assert parsed.reply_to == (Address("tom@gmail.example", "Tom"),)
    assert parsed.subject == "Our offer"
    assert parsed.message_id == "<m1@sales.example.com>"
    assert parsed.in_reply_to == "<parent@customer.example>"
    assert parsed.references == ("<root@customer.example>", "<parent@customer.example>")
    assert parsed.date == SENT_AT
    assert parsed.body_text.strip() == "Hello Anna"
    assert parsed.body_html is None


def test_output_is_smtp_safe() -> None:
    raw = _build(
        subject="Grüße aus München " * 10,
        body_text="Zeile mit Umlauten äöü\n" + "x" * 2000,
        body_html="<p>" + "ü" * 3000 + "</p>",
    )
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    headers = message_from_bytes(raw, policy=policy.default)
    assert headers["MIME-Version"] == "1.0"
    assert headers["Date"] == "Mon, 05 Jan 2026 10:00:00 +0000"


def test_utf8_subject_and_display_names_are_encoded_and_decode_back() -> None:
    raw = _build(
        from_name="Jürgen Müller",
        to=["山田 太郎 <yamada@example.jp>", '"Müller, Jürgen" <j@example.de>'],
        subject="Grüße \u2013 見積もり",
    )
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in header_block
    parsed = parse_message(raw)
    assert parsed.from_ == Address("tom@sales.example.com", "Jürgen Müller")
    assert parsed.to == (
        Address("yamada@example.jp", "山田 太郎"),
        Address("j@example.de", "Müller, Jürgen"),
    )
    assert parsed.subject == "Grüße \u2013 見積もり"


def test_text_and_html_make_multipart_alternative() -> None:
    raw = _build(body_text="Hallo Jürgen", body_html="<p>Hallo <b>Jürgen</b></p>")
    message = message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all("MIME-Version" not in part for part in parts)
    parsed = parse_message(raw)
    assert parsed.body_text.strip() == "Hallo Jürgen"
    assert parsed.body_html is not None
    assert parsed.body_html.strip() == "<p>Hallo <b>Jürgen</b></p>"


def test_html_only_is_a_single_html_part() -> None:
    raw = _build(body_text=None, body_html="<p>Hallo <b>Jürgen</b></p>")
    message = message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "text/html"
    assert parse_message(raw).body_text == "Hallo Jürgen"


def test_text_only_is_a_single_text_part() -> None:
    raw = _build(body_text="Only text", body_html=None)
    message = message_from_bytes(raw, policy=policy.default)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"


def test_bcc_header_only_when_asked() -> None:
    with_bcc = _build(bcc=["hidden@example.com"], include_bcc_header=True)
    without_bcc = _build(bcc=["hidden@example.com"])
    assert b"Bcc: hidden@example.com\r\n" in with_bcc
    assert b"hidden@example.com" not in without_bcc


def test_bcc_only_recipients_are_allowed_but_no_recipient_is_not() -> None:
    raw = _build(to=[], bcc=["hidden@example.com"], include_bcc_header=True)
    assert b"\r\nTo:" not in raw
    with pytest.raises(ValueError):
        _build(to=[])


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hello\r\nBcc: victim@example.com"},
        {"subject": "Hello\nX-Evil: 1"},
        {"from_name": "Tom\r\nBcc: victim@example.com"},
        {"to": ["anna@customer.example\r\nBcc: victim@example.com"]},
        {"cc": ["Anna\n <anna@customer.example>"]},
        {"reply_to": "tom@example.com\r\n"},
        {"in_reply_to": "<a@b>\r\nBcc: victim@example.com"},
        {"references": ["<a@b>", "<c@d>\nBcc: victim@example.com"]},
        {"message_id": "<a@b>\r\nBcc: victim@example.com"},
    ],
)
def test_header_injection_is_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(MailInputError):
        _build(**overrides)


def test_invalid_addresses_are_rejected_with_their_field() -> None:
    with pytest.raises(MailInputError) as caught:
        _build(cc=["not an address"])
    assert caught.value.field == "cc"


def test_long_threading_ids_are_folded_not_encoded() -> None:
    gmail_id = "<CAFxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuv@mail.gmail.com>"
    ancestors = [make_message_id("sales.example.com") for _ in range(8)]
    references = build_references(ancestors, gmail_id)
    raw = _build(in_reply_to=gmail_id, references=references)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?" not in header_block
    assert all(len(line) <= 998 for line in header_block.split(b"\r\n"))
    assert f"In-Reply-To: {gmail_id}\r\n".encode() in header_block
    parsed = parse_message(raw)
    assert parsed.in_reply_to == gmail_id
    assert parsed.references == tuple(references)


def test_date_defaults_to_now_and_must_be_aware() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    parsed = parse_message(_build(date=None))
    assert parsed.date is not None
    assert before <= parsed.date <= datetime.now(UTC) + timedelta(seconds=1)
    berlin = timezone(timedelta(hours=1))
    assert parse_message(_build(date=SENT_AT.astimezone(berlin))).date == SENT_AT
    with pytest.raises(ValueError):
        _build(date=datetime(2026, 1, 5, 10, 0))  # naive: the point of the test

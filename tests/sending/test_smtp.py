"""The default sender against a real aiosmtpd relay: plain, STARTTLS, implicit TLS, AUTH."""

from __future__ import annotations

import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from app.mail.compose import build_message
from app.sending.smtp import DefaultSender, SmtpDeliveryError, parse_smtp_url
from tests.sending.smtp_server import Certificate, make_certificate, smtp_relay
from tests.support import free_port

FROM = "noreply@leadmail.example"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(Path(tmp_path_factory.mktemp("tls")))


def _message(**overrides: object) -> EmailMessage:
    fields: dict[str, object] = {
        "from_address": FROM,
        "from_name": "Rita Rep",
        "to": ["lead@customer.example"],
        "subject": "Hello",
        "body_text": "Hi there",
        "body_html": None,
        "message_id": "<abc@leadmail.example>",
        "reply_to": "rita@rep.example",
    }
    fields.update(overrides)
    return build_message(**fields)  # type: ignore[arg-type]


def test_parse_smtp_url_defaults_and_credentials() -> None:
    plain = parse_smtp_url("smtp://relay.example")
    assert (plain.hostname, plain.port, plain.implicit_tls, plain.username) == (
        "relay.example",
        25,
        False,
        None,
    )
    secure = parse_smtp_url("smtps://user%40corp:p%3Ass@relay.example:2465")
    assert (secure.port, secure.implicit_tls) == (2465, True)
    assert (secure.username, secure.password) == ("user@corp", "p:ss")
    assert parse_smtp_url("smtps://relay.example").port == 465
    assert "p:ss" not in repr(secure)


@pytest.mark.parametrize(
    "url", ["http://relay.example", "smtp://", "smtp://relay.example:notaport", "relay:25"]
)
def test_parse_smtp_url_rejects_nonsense(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


async def test_plain_smtp_delivers_to_every_envelope_recipient() -> None:
    with smtp_relay() as (relay, port):
        sender = DefaultSender(f"smtp://127.0.0.1:{port}", FROM)
        message = _message(bcc=["hidden@customer.example"])
        refused = await sender.send(message, ["lead@customer.example", "hidden@customer.example"])
    assert refused == {}
    [got] = relay.received
    assert got.mail_from == FROM
    assert got.rcpt_tos == ["lead@customer.example", "hidden@customer.example"]
    assert not got.tls
    parsed = message_from_bytes(got.data, policy=policy.default)
    assert parsed["Reply-To"] == "rita@rep.example"
    assert parsed["Bcc"] is None


async def test_smtp_url_upgrades_with_starttls_when_offered(certificate: Certificate) -> None:
    with smtp_relay(starttls=certificate) as (relay, port):
        sender = DefaultSender(
            f"smtp://127.0.0.1:{port}", FROM, tls_context=certificate.client_context()
        )
        await sender.send(_message(), ["lead@customer.example"])
    assert [r.tls for r in relay.received] == [True]


async def test_smtps_url_speaks_tls_from_the_first_byte(certificate: Certificate) -> None:
    with smtp_relay(implicit_tls=certificate) as (relay, port):
        sender = DefaultSender(
            f"smtps://127.0.0.1:{port}", FROM, tls_context=certificate.client_context()
        )
        await sender.send(_message(), ["lead@customer.example"])
    assert [r.tls for r in relay.received] == [True]


async def test_smtps_refuses_a_certificate_it_cannot_verify(certificate: Certificate) -> None:
    with smtp_relay(implicit_tls=certificate) as (relay, port):
        sender = DefaultSender(f"smtps://127.0.0.1:{port}", FROM)  # system trust store only
        with pytest.raises(SmtpDeliveryError):
            await sender.send(_message(), ["lead@customer.example"])
    assert relay.received == []


async def test_credentials_in_the_url_turn_on_auth(certificate: Certificate) -> None:
    with smtp_relay(starttls=certificate, credentials=("mailer", "s3cret")) as (relay, port):
        good = DefaultSender(
            f"smtp://mailer:s3cret@127.0.0.1:{port}",
            FROM,
            tls_context=certificate.client_context(),
        )
        await good.send(_message(), ["lead@customer.example"])
        bad = DefaultSender(
            f"smtp://mailer:wrong@127.0.0.1:{port}",
            FROM,
            tls_context=certificate.client_context(),
        )
        with pytest.raises(SmtpDeliveryError) as failure:
            await bad.send(_message(), ["lead@customer.example"])
    assert relay.logins == ["mailer"]
    assert [r.authenticated for r in relay.received] == [True]
    assert not failure.value.retryable


async def test_a_4xx_answer_is_retryable_and_a_5xx_is_final() -> None:
    with smtp_relay() as (relay, port):
        sender = DefaultSender(f"smtp://127.0.0.1:{port}", FROM)
        relay.data_replies = ["451 4.3.0 try again later", "554 5.7.1 rejected as spam"]
        with pytest.raises(SmtpDeliveryError) as transient:
            await sender.send(_message(), ["lead@customer.example"])
        with pytest.raises(SmtpDeliveryError) as final:
            await sender.send(_message(), ["lead@customer.example"])
    assert transient.value.retryable
    assert "451" in str(transient.value)
    assert not final.value.retryable
    assert relay.received == []


async def test_refused_recipients_are_reported_while_the_others_get_it() -> None:
    with smtp_relay() as (relay, port):
        relay.refuse_rcpts = {"gone@customer.example"}
        sender = DefaultSender(f"smtp://127.0.0.1:{port}", FROM)
        refused = await sender.send(
            _message(cc=["gone@customer.example"]),
            ["lead@customer.example", "gone@customer.example"],
        )
        with pytest.raises(SmtpDeliveryError) as everyone:
            await sender.send(_message(to=["gone@customer.example"]), ["gone@customer.example"])
    assert list(refused) == ["gone@customer.example"]
    assert refused["gone@customer.example"].startswith("550")
    assert [r.rcpt_tos for r in relay.received] == [["lead@customer.example"]]
    assert not everyone.value.retryable


async def test_an_unreachable_relay_is_retryable() -> None:
    sender = DefaultSender(f"smtp://127.0.0.1:{free_port()}", FROM, timeout=5)
    with pytest.raises(SmtpDeliveryError) as failure:
        await sender.send(_message(), ["lead@customer.example"])
    assert failure.value.retryable


@pytest.mark.parametrize(
    ("url", "start_tls"),
    [
        ("smtps://u:p@relay.example", False),
        ("smtp://relay.example:25", None),  # no password to protect: STARTTLS when offered
        ("smtp://u:p@relay.example:587", True),
        ("smtp://u:p@192.0.2.7:587", True),
        ("smtp://u:p@127.0.0.1:2525", None),  # never leaves the machine
        ("smtp://u:p@localhost:2525", None),
        ("smtp://u:p@[::1]:2525", None),
    ],
)
def test_credentials_never_go_over_the_network_without_tls(
    url: str, start_tls: bool | None
) -> None:
    assert parse_smtp_url(url).start_tls is start_tls


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # picks a route; sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_a_relay_that_hides_starttls_never_sees_the_password() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # No STARTTLS on offer, as when an attacker strips it from the EHLO answer.
    with smtp_relay(credentials=("mailer", "s3cret"), hostname=address) as (relay, port):
        sender = DefaultSender(f"smtp://mailer:s3cret@{address}:{port}", FROM)
        with pytest.raises(SmtpDeliveryError) as failure:
            await sender.send(_message(), ["lead@customer.example"])
    assert "STARTTLS" in str(failure.value) and not failure.value.retryable
    assert relay.logins == []

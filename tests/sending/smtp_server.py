"""A real aiosmtpd relay on loopback for the default-sender tests, with TLS and AUTH options."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated: bool


@dataclass
class Relay:
    """What the relay saw, and how it should answer."""

    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    # Answers to give to the next DATA commands instead of 250, one per message.
    data_replies: list[str] = field(default_factory=list)
    refuse_rcpts: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.lower() in self.refuse_rcpts:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=content,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 2.0.0 accepted"


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leadmail test relay")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "relay.pem"
    key_file = directory / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


class _Authenticator:
    def __init__(self, relay: Relay, user: str, password: str) -> None:
        self.relay, self.user, self.password = relay, user, password

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if data.login.decode() == self.user and data.password.decode() == self.password:
            self.relay.logins.append(self.user)
            return AuthResult(success=True)
        # handled=False makes aiosmtpd answer 535 itself; the default would leave the
        # client waiting for a reply that never comes.
        return AuthResult(success=False, handled=False)


@contextmanager
def smtp_relay(
    *,
    implicit_tls: Certificate | None = None,
    starttls: Certificate | None = None,
    credentials: tuple[str, str] | None = None,
    hostname: str = "127.0.0.1",
) -> Iterator[tuple[Relay, int]]:
    """Run a relay on a free port (loopback unless told); yields (what it saw, its port)."""
    relay = Relay()
    port = free_port()
    kwargs: dict[str, Any] = {"decode_data": False}
    if starttls is not None:
        kwargs["tls_context"] = starttls.server_context()
    if credentials is not None:
        kwargs["authenticator"] = _Authenticator(relay, *credentials)
        kwargs["auth_required"] = True
        # With STARTTLS on offer, AUTH only after the upgrade (what real relays do).
        kwargs["auth_require_tls"] = starttls is not None
    controller = Controller(
        relay,
        hostname=hostname,
        port=port,
        ssl_context=implicit_tls.server_context() if implicit_tls is not None else None,
        **kwargs,
    )
    controller.start()
    try:
        yield relay, port
    finally:
        controller.stop()

"""The default (system) sender: one SMTP relay named by `DEFAULT_SMTP_URL`.

`smtp://host[:port]` talks plain SMTP and upgrades with STARTTLS when the server offers
it; `smtps://host[:port]` is TLS from the first byte (implicit TLS, RFC 8314).
`user:pass@` in the URL turns on AUTH, and then, unless the relay is on loopback,
STARTTLS is required: a relay that does not offer it (or an attacker who strips the
offer) never sees the password. Without a port, 25 and 465.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

__all__ = ["DefaultSender", "SmtpDeliveryError", "SmtpTarget", "parse_smtp_url"]

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


class SmtpDeliveryError(Exception):
    """The relay did not take the message; `retryable` when a later try may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    hostname: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None

    @property
    def start_tls(self) -> bool | None:
        """aiosmtplib's `start_tls`: False for implicit TLS; True (required) when a
        password would otherwise cross the network in clear; None: when offered."""
        if self.implicit_tls:
            return False
        if self.username is not None and not _is_loopback(self.hostname):
            return True
        return None

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        auth = f"{self.username}:***@" if self.username else ""
        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"SmtpTarget({scheme}://{auth}{self.hostname}:{self.port})"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp[s]://[user[:pass]@]host[:port]`; percent-escapes in user and password decoded."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("DEFAULT_SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("DEFAULT_SMTP_URL names no host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ValueError("DEFAULT_SMTP_URL has an invalid port") from exc
    return SmtpTarget(
        hostname=parts.hostname,
        port=port,
        implicit_tls=scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class DefaultSender:
    """Hands finished messages to the relay. `tls_context` overrides the system trust
    store (a private CA, or a test's self-signed certificate)."""

    def __init__(
        self,
        url: str,
        from_address: str,
        *,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = parse_smtp_url(url)
        self.from_address = from_address
        self._timeout = timeout
        self._tls_context = tls_context

    async def send(self, message: EmailMessage, recipients: Sequence[str]) -> dict[str, str]:
        """Deliver `message` to `recipients` (the envelope, Bcc included).

        Returns the recipients the relay refused while accepting the others, as
        address → reply; raises :class:`SmtpDeliveryError` when nothing was accepted.
        """
        target = self.target
        try:
            refused, _ = await aiosmtplib.send(
                message,
                sender=self.from_address,
                recipients=list(recipients),
                hostname=target.hostname,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.implicit_tls,
                start_tls=target.start_tls,
                tls_context=self._tls_context,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            details = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise SmtpDeliveryError(
                f"every recipient was refused: {details}", retryable=False
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx is "try again later" in SMTP; 5xx is final.
            raise SmtpDeliveryError(
                f"the relay answered {exc.code} {exc.message}", retryable=400 <= exc.code < 500
            ) from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError) as exc:
            raise SmtpDeliveryError(f"cannot reach the relay: {exc}", retryable=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            if target.start_tls and "STARTTLS extension not supported" in str(exc):
                raise SmtpDeliveryError(
                    "the relay does not offer STARTTLS, and the credentials in "
                    "DEFAULT_SMTP_URL are never sent in clear (use smtps:// or a TLS relay)",
                    retryable=False,
                ) from exc
            # A drop after DATA may still have delivered: not retried, to avoid duplicates.
            raise SmtpDeliveryError(
                f"SMTP failed: {type(exc).__name__}: {exc}", retryable=False
            ) from exc
        return {address: f"{reply.code} {reply.message}" for address, reply in refused.items()}

"""An SMTP server (aiosmtpd) on the sandbox's event loop: the default sender's relay."""

from __future__ import annotations

import asyncio
import hmac
import socket
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sandbox.state import Sandbox


class _Relay:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        async with self._sandbox.lock:
            self._sandbox.mail.deliver(
                raw, envelope.mail_from or "", list(envelope.rcpt_tos), via="smtp"
            )
        return "250 2.0.0 OK queued by sandbox"


class _Authenticator:
    """Any credentials pass unless a user and password were configured."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self._user = user
        self._password = password

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if self._user is None:
            return AuthResult(success=True)
        login = auth_data.login.decode("utf-8", errors="replace")
        password = auth_data.password.decode("utf-8", errors="replace")
        ok = hmac.compare_digest(login, self._user) and hmac.compare_digest(
            password, self._password or ""
        )
        # handled=False: aiosmtpd answers 535 itself; handled=True would leave the client waiting.
        return AuthResult(success=ok, handled=False)


async def start_smtp(sandbox: Sandbox, sock: socket.socket) -> asyncio.Server:
    config = sandbox.config
    relay = _Relay(sandbox)
    authenticator = _Authenticator(config.smtp_user, config.smtp_password)

    def factory() -> SMTP:
        return SMTP(
            relay,
            hostname="sandbox.smtp.local",
            auth_require_tls=False,
            auth_required=config.smtp_user is not None,
            authenticator=authenticator,
            decode_data=False,
            data_size_limit=36_700_160,
        )

    return await asyncio.get_running_loop().create_server(factory, sock=sock)

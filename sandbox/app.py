"""The ASGI application: Google's paths, the control API, the request log and the SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import control, gmail, oauth_http
from sandbox.calls import CallRecord
from sandbox.smtp import start_smtp
from sandbox.state import Sandbox


class RequestLog:
    """Logs every request outside /_sandbox/ when its status line is sent, so a client that has
    its response can already read the log entry."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self._app = app
        self._sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_sandbox"):
            await self._app(scope, receive, send)
            return

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: dict[str, Any] = scope.get("state") or {}
                self._sandbox.calls.add(
                    CallRecord(
                        method=scope["method"],
                        path=path,
                        query=scope.get("query_string", b"").decode("latin-1"),
                        status=int(message["status"]),
                        gmail_method=state.get("gmail_method"),
                        account=state.get("account"),
                    )
                )
            await send(message)

        await self._app(scope, receive, logging_send)


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose protocol
    # says TCP, and without it every keep-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def create_app(sandbox: Sandbox, smtp_socket: socket.socket | None = None) -> ASGIApp:
    """The sandbox as an ASGI app; with `smtp_socket` it also serves SMTP on the same loop."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        smtp_server: asyncio.Server | None = None
        if smtp_socket is not None:
            smtp_server = await start_smtp(sandbox, smtp_socket)
            sandbox.smtp_port = smtp_socket.getsockname()[1]
        try:
            yield
        finally:
            if smtp_server is not None:
                smtp_server.close()
                # Open SMTP sessions would keep wait_closed() waiting; do not hang on them.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(smtp_server.wait_closed(), 1.0)
            await sandbox.push.aclose()

    app = Starlette(
        routes=[*oauth_http.routes(), *gmail.routes(), *control.routes()],
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return RequestLog(app, sandbox)
